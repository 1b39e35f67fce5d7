package wire

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// Reachable reports whether a broker seems to listen at addr (host:port):
// a TCP connect succeeds and the peer then keeps the connection open for
// hold, as a broker waiting for CONNECT does (a proxy or load balancer with
// no backend accepts and closes at once). It sends nothing: no TLS, no
// MQTT. It is the cheap check a link in back-off makes often, so that it
// reconnects soon after the path returns without full attempts at that
// rate.
func Reachable(ctx context.Context, addr string, hold time.Duration) bool {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(hold))
	var b [1]byte
	_, err = c.Read(b[:])
	// A timeout is the broker waiting for us; data (unexpected, but alive)
	// counts too. EOF or a reset is a peer that hung up.
	return err == nil || errors.Is(err, os.ErrDeadlineExceeded)
}
