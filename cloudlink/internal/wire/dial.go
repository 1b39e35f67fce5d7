package wire

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Dialer dials the one connection a paho client uses, so that its owner
// can close the socket for sure (Close) before it dials again.
type Dialer struct {
	mu     sync.Mutex
	c      net.Conn // the socket
	b      *BufConn // what paho got
	closed bool
}

// Dial connects to addr, over TLS when tc is set, within timeout or until
// ctx is done; writeTimeout bounds each write on the connection.
func (n *Dialer) Dial(ctx context.Context, addr string, tc *tls.Config, timeout, writeTimeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &net.Dialer{}
	var c net.Conn
	var err error
	if tc != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	n.c, n.b = c, NewBufConn(c, writeTimeout)
	return n.b, nil
}

// NopStore is a paho.Store that keeps nothing.
type NopStore struct{}

func (NopStore) Open()                             {}
func (NopStore) Put(string, packets.ControlPacket) {}
func (NopStore) Get(string) packets.ControlPacket  { return nil }
func (NopStore) All() []string                     { return nil }
func (NopStore) Del(string)                        {}
func (NopStore) Close()                            {}
func (NopStore) Reset()                            {}

// Close closes the dialed connection (if any) and any dialed later.
func (n *Dialer) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	if n.c != nil {
		n.c.Close() // first: a write stuck on a stalled link fails now
		n.b.Close() // stops the flusher
	}
}
