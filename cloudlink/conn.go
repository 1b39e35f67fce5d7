package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/outpost-iot/outpost/cloudlink/internal/wire"
)

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
	user, pass, expires, err := s.d.Credentials(time.Now())
	if err != nil {
		return result{err: err}
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	c2d := make(chan paho.Message, 64)
	po := paho.NewClientOptions().
		AddBroker(s.brokerURL()).
		SetClientID(s.d.ClientID()).
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
	var dialed wire.Dialer
	po.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
		return dialed.Dial(ctx, s.addr, s.tls, po.ConnectTimeout, po.WriteTimeout)
	})
	// Every connection is a fresh client and the session resends what was
	// not acknowledged itself: paho's own store would only cost a map entry
	// per publish.
	po.SetStore(wire.NopStore{})
	c := paho.NewClient(po)
	tw := s.newTwinLink(cctx, c)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go c.Disconnect(0)
		dialed.Close()
		return result{err: ctx.Err()}
	}
	if err := tok.Error(); err != nil {
		dialed.Close()
		return result{err: fmt.Errorf("cloudlink: connect %s: %w", s.opt.URL, err)}
	}
	up := time.Now()
	defer func() {
		c.Disconnect(100)
		dialed.Close()
	}()

	if s.opt.Inbox != nil {
		st := c.Subscribe(s.d.C2DFilter(), 1, nil)
		select {
		case <-st.Done():
		case <-cctx.Done():
		}
		err := st.Error()
		if err == nil && cctx.Err() == nil {
			if rc := st.(*paho.SubscribeToken).Result()[s.d.C2DFilter()]; rc > 1 {
				err = fmt.Errorf("refused (SUBACK %#x)", rc)
			}
		}
		if err == nil {
			err = context.Cause(cctx)
		}
		if err != nil {
			return result{connected: true, lasted: time.Since(up), err: fmt.Errorf("cloudlink: subscribe %s: %w", s.d.C2DFilter(), err)}
		}
	}

	s.connected(downSince)
	if !expires.IsZero() {
		renew := time.Until(expires) - s.opt.RenewBefore
		t := time.AfterFunc(max(renew, 0), func() { cancel(errRenew) })
		defer t.Stop()
	}

	f := newForwarder(s, c)
	parts := []func() error{
		func() error { return f.run(cctx, cancel) },
		func() error { return s.intake(cctx, cancel, c2d) },
	}
	if tw != nil {
		parts = append(parts, func() error { return tw.run(cctx) })
	}
	done := make(chan error, len(parts))
	for _, run := range parts {
		go func() { done <- run() }()
	}
	// Any part's error ends the connection (the first cause stands); a
	// part that ends without one (a twin loop with no twin) leaves the
	// others running.
	for range parts {
		if err := <-done; err != nil {
			cancel(err)
		}
	}
	tw.wait()
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
		s.log.Info("upstream link up", "url", s.opt.URL, "client_id", s.d.ClientID())
		return
	}
	s.log.Info("upstream link recovered", "down_for", now.Sub(downSince).Round(time.Millisecond), "held", held)
}

// depth is the outbox depth when the queue can tell (*store.Queue's
// Depth), else 0.
func (s *Session) depth() int {
	if q, ok := s.q.(interface{ Depth() int }); ok {
		return q.Depth()
	}
	return 0
}
