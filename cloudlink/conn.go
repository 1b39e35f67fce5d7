package cloudlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// dialect is what differs between a generic broker and IoT Hub.
type dialect interface {
	clientID() string
	// credentials returns the username and password for a connection made
	// now, and when they expire (zero: never).
	credentials(now time.Time) (user, pass string, expires time.Time, err error)
	// topic is the D2C topic of rec.
	topic(rec *msg.Record) string
	// c2dTopic is the C2D subscription filter.
	c2dTopic() string
	// c2d splits a C2D topic into the target device and the property bag.
	c2d(topic string) (device string, props msg.Props, err error)
}

type mqttDialect struct{ o Options }

func (d mqttDialect) clientID() string { return d.o.ClientID }
func (d mqttDialect) credentials(time.Time) (string, string, time.Time, error) {
	return d.o.Username, d.o.password, time.Time{}, nil
}
func (d mqttDialect) topic(rec *msg.Record) string { return rec.Topic() }
func (d mqttDialect) c2dTopic() string             { return d.o.C2DTopic }
func (d mqttDialect) c2d(topic string) (string, msg.Props, error) {
	return msg.ParseDeviceboundTopic(topic)
}

// result is how one connection ended.
type result struct {
	connected bool          // the connection was established
	lasted    time.Duration // how long it was up
	throttled bool          // it dropped soon after a burst: slow down
	renew     bool          // a planned reconnect for fresh credentials
	err       error         // why it ended (never nil)
}

var errRenew = errors.New("cloudlink: credentials about to expire; reconnecting with new ones")

// serve makes one connection and forwards over it until it ends.
func (s *Session) serve(ctx context.Context, downSince time.Time) result {
	if g := s.opt.connectGate; g != nil {
		if err := g(ctx); err != nil {
			return result{err: err}
		}
	}
	user, pass, expires, err := s.d.credentials(time.Now())
	if err != nil {
		return result{err: err}
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	c2d := make(chan paho.Message, 64)
	po := paho.NewClientOptions().
		AddBroker(s.brokerURL()).
		SetClientID(s.d.clientID()).
		SetUsername(user).
		SetPassword(pass).
		SetCleanSession(s.opt.CleanSession).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(s.opt.Keepalive).
		SetPingTimeout(max(s.opt.Keepalive/2, time.Second)).
		SetConnectTimeout(max(2*s.opt.Keepalive, 10*time.Second)).
		// Bounds a network write, and how long Publish blocks when the
		// connection died under it.
		SetWriteTimeout(min(max(s.opt.Keepalive, 2*time.Second), 10*time.Second)).
		SetProtocolVersion(4).
		// Inbound C2D is acknowledged by us, after Inbox, in receive order:
		// OrderMatters keeps paho's handler calls in receive order and the
		// handler only hands the message to our own goroutine.
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetMessageChannelDepth(64).
		// Installed before CONNECT, so C2D queued at the broker and pushed
		// right after CONNACK is never auto-acknowledged and lost.
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			select {
			case c2d <- m:
			case <-cctx.Done():
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			cancel(fmt.Errorf("cloudlink: connection lost: %w", err))
		})
	// The session dials itself, so that it can close the socket for sure
	// before it dials again: paho's Disconnect returns after its quiesce
	// time even when the connection is not closed yet, and two overlapping
	// connections of one client id make the broker (or IoT Hub) drop one.
	var dialed netConn
	po.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
		return dialed.dial(ctx, s.addr, s.tls, po.ConnectTimeout, po.WriteTimeout)
	})
	// Every connection is a fresh client and the session resends what was
	// not acknowledged itself: paho's own store would only cost a map entry
	// per publish.
	po.SetStore(nopStore{})
	c := paho.NewClient(po)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go c.Disconnect(0)
		dialed.close()
		return result{err: ctx.Err()}
	}
	if err := tok.Error(); err != nil {
		dialed.close()
		return result{err: fmt.Errorf("cloudlink: connect %s: %w", s.opt.URL, err)}
	}
	up := time.Now()
	defer func() {
		c.Disconnect(100)
		dialed.close()
	}()

	if s.opt.Inbox != nil {
		st := c.Subscribe(s.d.c2dTopic(), 1, nil)
		select {
		case <-st.Done():
		case <-cctx.Done():
		}
		err := st.Error()
		if err == nil && cctx.Err() == nil {
			if rc := st.(*paho.SubscribeToken).Result()[s.d.c2dTopic()]; rc > 1 {
				err = fmt.Errorf("refused (SUBACK %#x)", rc)
			}
		}
		if err == nil {
			err = context.Cause(cctx)
		}
		if err != nil {
			return result{connected: true, lasted: time.Since(up), err: fmt.Errorf("cloudlink: subscribe %s: %w", s.d.c2dTopic(), err)}
		}
	}

	s.connected(downSince)
	if !expires.IsZero() {
		renew := time.Until(expires) - s.opt.RenewBefore
		t := time.AfterFunc(max(renew, 0), func() { cancel(errRenew) })
		defer t.Stop()
	}

	f := newForwarder(s, c)
	done := make(chan error, 2)
	go func() { done <- f.run(cctx, cancel) }()
	go func() { done <- s.intake(cctx, cancel, c2d) }()
	ferr := <-done
	if ferr != nil {
		cancel(ferr)
	}
	<-done
	f.releaseAll()
	lasted := time.Since(up)
	cause := context.Cause(cctx)
	s.update(func(st *Status) { st.Connected, st.Since, st.InFlight = false, time.Now(), 0 })
	if se := f.storeErr(); se != nil {
		return result{connected: true, lasted: lasted, err: se}
	}
	if ctx.Err() != nil {
		return result{connected: true, lasted: lasted, err: ctx.Err()}
	}
	if errors.Is(cause, errRenew) {
		return result{connected: true, lasted: lasted, renew: true, err: cause}
	}
	return result{connected: true, lasted: lasted, throttled: f.burstBeforeLoss(lasted), err: cause}
}

func (s *Session) brokerURL() string {
	if s.tls != nil {
		return "ssl://" + s.addr
	}
	return "tcp://" + s.addr
}

// connected records that the link is up and logs the recovery once.
func (s *Session) connected(downSince time.Time) {
	held := s.depth()
	now := time.Now()
	s.update(func(st *Status) {
		st.Connected, st.Since, st.LastError = true, now, ""
		if !downSince.IsZero() {
			st.Held = held
		}
	})
	if downSince.IsZero() {
		s.log.Info("upstream link up", "url", s.opt.URL, "client_id", s.d.clientID())
		return
	}
	s.log.Info("upstream link recovered", "down_for", now.Sub(downSince).Round(time.Millisecond), "held", held)
}

// depth is the outbox depth when the queue can tell, else 0.
func (s *Session) depth() int {
	switch q := s.q.(type) {
	case interface{ Len() int }:
		return q.Len()
	case interface{ Stats() store.Stats }:
		return int(q.Stats().Depth)
	}
	return 0
}

// netConn is the connection a paho client dialed through the session.
type netConn struct {
	mu     sync.Mutex
	c      net.Conn // the socket
	b      *bufConn // what paho got
	closed bool
}

// dial connects to addr, over TLS when tc is set, within timeout or until
// ctx is done; writeTimeout bounds each write on the connection.
func (n *netConn) dial(ctx context.Context, addr string, tc *tls.Config, timeout, writeTimeout time.Duration) (net.Conn, error) {
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
	n.c, n.b = c, newBufConn(c, writeTimeout)
	return n.b, nil
}

// nopStore is a paho.Store that keeps nothing.
type nopStore struct{}

func (nopStore) Open()                             {}
func (nopStore) Put(string, packets.ControlPacket) {}
func (nopStore) Get(string) packets.ControlPacket  { return nil }
func (nopStore) All() []string                     { return nil }
func (nopStore) Del(string)                        {}
func (nopStore) Close()                            {}
func (nopStore) Reset()                            {}

// close closes the dialed connection (if any) and any dialed later.
func (n *netConn) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	if n.c != nil {
		n.c.Close() // first: a write stuck on a stalled link fails now
		n.b.Close() // stops the flusher
	}
}
