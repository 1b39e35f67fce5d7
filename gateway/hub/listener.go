package hub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// handshakeTimeout bounds a TLS handshake, so a silent peer cannot hold a
// connection goroutine.
const handshakeTimeout = 10 * time.Second

// listener is a mochi listener that contains panics per connection: mochi
// decodes a client's packets in the goroutine its listener starts for the
// connection, and nothing in mochi recovers (a truncated MQTT 5 SUBSCRIBE
// panics in packets.SubscribeDecode in v2.7.9). It also applies the hub's
// connection rate limit and, for TLS, completes the handshake (with a
// deadline) before mochi reads the CONNECT.
type listener struct {
	id      string
	address string
	tls     *tls.Config
	h       *Hub
	log     *slog.Logger

	mu  sync.Mutex
	ln  net.Listener
	end atomic.Bool
	// entering counts connections handed to mochi that have not yet read
	// their first byte. mochi's attachClient does ClientsWg.Add(1) in the
	// connection's goroutine while Server.Close may already sit in
	// ClientsWg.Wait (a WaitGroup race in v2.7.9, seen by -race when a
	// client connects during Close). Close waits for entering to drain, so
	// every Add happens before that Wait.
	entering sync.WaitGroup
}

// writeTimeout bounds one write to a client. A client that takes no bytes
// for this long (its TCP window stays full) is disconnected, rather than
// holding mochi's per-client lock, and with it the PUBACKs, C2D deliveries
// and shutdown, forever. mochi v2.7.9 sets no write deadline itself (a variable for tests).
var writeTimeout = 30 * time.Second

// shutdownWriteTimeout bounds the DISCONNECT written at shutdown.
const shutdownWriteTimeout = time.Second

// hubConn is the connection mochi sees. It signals once, at its first
// Read (mochi reads the CONNECT only after its ClientsWg.Add), and puts a
// deadline on every write (mochi's keep-alive deadline is read-only here).
type hubConn struct {
	net.Conn
	once *sync.Once
	done func()
	pre  *preLogin // limits until the login succeeds

	mu       sync.Mutex
	deadline time.Time // the write deadline set last
	short    bool      // shutting down: writes get shutdownWriteTimeout
}

// unwrapConn returns the connection below the hub's wrappers (the *tls.Conn
// of a TLS client).
func unwrapConn(c net.Conn) net.Conn {
	if f, ok := c.(*hubConn); ok {
		return f.Conn
	}
	return c
}

func (c *hubConn) Read(b []byte) (int, error) {
	c.once.Do(c.done)
	n, err := c.Conn.Read(b)
	if perr := c.pre.read(c.Conn, b[:n], err); perr != nil {
		return 0, perr
	}
	return n, err
}

// Write writes under a deadline. The deadline is renewed only when less
// than half of the limit is left (or more than the limit, after shutdown
// shortened it), to keep timer updates off the hot path. A write that fails (a timeout may have sent part of a packet)
// closes the connection: the stream cannot be trusted after it.
func (c *hubConn) Write(b []byte) (int, error) {
	now := time.Now()
	c.mu.Lock()
	limit := writeTimeout
	if c.short {
		limit = shutdownWriteTimeout
	}
	if left := c.deadline.Sub(now); left < limit/2 || left > limit {
		c.deadline = now.Add(limit)
		_ = c.Conn.SetWriteDeadline(c.deadline)
	}
	c.mu.Unlock()
	n, err := c.Conn.Write(b)
	if err != nil {
		_ = c.Conn.Close()
	}
	return n, err
}

// SetDeadline sets only the read deadline. mochi calls it before every
// packet it reads, with the keep-alive expiry (or none); passing that on as
// a write deadline would replace the hub's own.
func (c *hubConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.pre.limit(t)) }

// shutdown shortens the write deadline to shutdownWriteTimeout.
func (c *hubConn) shutdown() {
	c.mu.Lock()
	c.short = true
	c.deadline = time.Now().Add(shutdownWriteTimeout)
	_ = c.Conn.SetWriteDeadline(c.deadline)
	c.mu.Unlock()
}

func newListener(id, address string, cfg *tls.Config, h *Hub) *listener {
	return &listener{id: id, address: address, tls: cfg, h: h}
}

func (l *listener) ID() string       { return l.id }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *listener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln, l.log = ln, log
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	var delay time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off like net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("hub: accept failed; will retry", "error", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if l.end.Load() {
			conn.Close()
			return
		}
		if !l.h.guard.admit(conn, &l.h.stats.rateLimited) {
			conn.Close()
			continue
		}
		if !l.h.rate.Allow() {
			l.h.guard.release()
			l.h.stats.rateLimited.Add(1)
			conn.Close()
			continue
		}
		go l.serveConn(conn, establish)
	}
}

// serveConn runs one connection and turns a panic into a closed connection.
func (l *listener) serveConn(conn net.Conn, establish listeners.EstablishFn) {
	defer l.h.guard.release()
	pre := l.h.guard.preLogin(time.Now())
	defer func() {
		if r := recover(); r != nil {
			conn.Close()
			l.h.stats.panics.Add(1)
			l.log.Error("hub: connection panicked; closed it", "remote", conn.RemoteAddr().String(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			l.h.afterPanic(conn)
		}
	}()
	if l.tls != nil {
		tc := tls.Server(conn, l.tls)
		_ = tc.SetDeadline(pre.limit(time.Now().Add(handshakeTimeout)))
		if err := tc.Handshake(); err != nil {
			l.h.stats.tlsFailures.Add(1)
			l.log.Debug("hub: tls handshake failed", "remote", conn.RemoteAddr().String(), "error", err)
			tc.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		conn = tc
	}
	l.mu.Lock()
	if l.end.Load() {
		l.mu.Unlock()
		conn.Close()
		return
	}
	l.entering.Add(1)
	l.mu.Unlock()
	once := new(sync.Once)
	defer once.Do(l.entering.Done)
	// mochi keys the client by this conn (and so does afterPanic).
	_ = conn.SetReadDeadline(pre.deadline)
	conn = &hubConn{Conn: conn, once: once, done: l.entering.Done, pre: pre}
	if err := establish(l.id, conn); err != nil {
		l.log.Debug("hub: connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
	l.h.afterEnd(conn)
}

// afterEnd tidies up after a connection that failed between login and the
// end of its CONNACK (the client went away at once): mochi v2.7.9 then
// returns without OnDisconnect, leaving a clean-session client registered
// and its SAS expiry timer running until the token expires.
func (h *Hub) afterEnd(conn net.Conn) {
	srv := h.srv.Load()
	if srv == nil {
		return
	}
	for _, cl := range srv.Clients.GetAll() {
		if cl.Net.Conn != conn || !cl.Closed() {
			continue
		}
		h.sas.forget(cl)
		expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
			(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
		if cur, ok := srv.Clients.Get(cl.ID); ok && cur == cl && expire && !cl.IsTakenOver() {
			srv.UnsubscribeClient(cl)
			srv.Clients.Delete(cl.ID)
		}
	}
}

// Close stops accepting, then disconnects this listener's clients.
func (l *listener) Close(listeners.CloseFn) {
	if l.end.Swap(true) {
		return
	}
	l.mu.Lock() // serveConn checks end and joins entering under mu
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	l.entering.Wait()
	// mochi's own closeClients (Server.closeListenerClients) is not used:
	// it lists clients with Clients.GetByListener, which takes the map's
	// read lock twice (once more in Len), and deadlocks when a client
	// disconnecting at that moment asks for the write lock in between
	// (mochi v2.7.9; it hung Close in CI). GetAll takes it once.
	//
	// An MQTT 3.1.1 server must never send DISCONNECT: those connections
	// are closed; MQTT 5 clients get DISCONNECT (server shutting down),
	// written under a short deadline so a client that reads nothing cannot
	// hold the shutdown.
	srv := l.h.srv.Load() // not h.server(): that is nil once closing
	if srv == nil {
		return
	}
	var v5 []*mqtt.Client
	for _, cl := range srv.Clients.GetAll() {
		if cl.Net.Listener != l.id || cl.Closed() {
			continue
		}
		if cl.Properties.ProtocolVersion < 5 || cl.Net.Conn == nil {
			cl.Stop(packets.ErrServerShuttingDown)
			continue
		}
		// All deadlines first: stalled clients then cost one
		// shutdownWriteTimeout together, not one each.
		if c, ok := cl.Net.Conn.(*hubConn); ok {
			c.shutdown()
		}
		v5 = append(v5, cl)
	}
	for _, cl := range v5 {
		_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
}

// tlsConfig loads the TLS listener's certificate and, when set, the CA that
// signs client certificates (verified if given; password login remains).
func (h *Hub) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(h.opt.TLS.CertFile, h.opt.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("hub: tls certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if h.opt.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(h.opt.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("hub: client ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hub: client ca %s: no certificates found", h.opt.TLS.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// StopClients ends every client's connection of a mochi server and waits
// (up to d) for their goroutines to finish. Call it before the server's
// Close when the server uses mochi's own listeners: mochi's Close lists
// the clients with Clients.GetByListener, which read-locks the client map
// twice and deadlocks against a client removing itself at that moment
// (mochi v2.7.9; the hub's own listener avoids that call). The stand-in
// clouds of the tests and the demo use it.
func StopClients(srv *mqtt.Server, d time.Duration) {
	for _, cl := range srv.Clients.GetAll() {
		if !cl.Net.Inline {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
	deadline := time.Now().Add(d)
	for atomic.LoadInt64(&srv.Info.ClientsConnected) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}
