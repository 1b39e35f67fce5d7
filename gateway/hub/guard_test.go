package hub

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
)

// dialFrom dials addr from the loopback source address src (127.0.0.x:
// Linux routes all of 127/8 to lo), so a test can be several hosts.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// closedWithin reports whether the hub closes c (EOF or reset, not a read
// timeout) within d, discarding anything it sends.
func closedWithin(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errors.New("still open")
		}
		return nil
	}
}

// login connects id from src with a raw MQTT 3.1.1 CONNECT and reports the
// CONNACK's return code, or an error when there is none.
func login(src, addr, id string) (byte, error) {
	c, err := dialFrom(src, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.Write(connect4(id, id, testPassword)); err != nil {
		return 0, err
	}
	typ, body, err := readPacketErr(c, 5*time.Second)
	if err != nil {
		return 0, err
	}
	if typ>>4 != 2 || len(body) < 2 {
		return 0, errors.New("not a CONNACK")
	}
	return body[1], nil
}

func TestSilentConnectionsClosedAtConnectTimeout(t *testing.T) {
	h := startHub(t, &fakeStore{}, func(o *Options) { o.ConnectTimeout = time.Second })
	silent, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	half, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	c := connect4("leaf-1", "leaf-1", testPassword)
	if _, err := half.Write(c[:len(c)/2]); err != nil {
		t.Fatal(err)
	}
	// A client that logged in keeps its connection past the timeout.
	ok := rawConnect4(t, h.Addr(), "leaf-2")
	for name, c := range map[string]net.Conn{"silent": silent, "half a CONNECT": half} {
		if err := closedWithin(c, 5*time.Second); err != nil {
			t.Errorf("%s connection: %v 5 s after a 1 s connect_timeout", name, err)
		}
	}
	if _, err := ok.Write([]byte{0xC0, 0}); err != nil { // PINGREQ
		t.Fatal(err)
	}
	if typ, _ := readPacket(t, ok); typ != 0xD0 {
		t.Fatalf("logged-in client got %#x, want PINGRESP", typ)
	}
	if n := h.guard.timedOut.Load(); n != 2 {
		t.Errorf("%d connections counted as timed out, want 2", n)
	}
}

func TestMaxConnections(t *testing.T) {
	h := startHub(t, &fakeStore{}, func(o *Options) { o.MaxConnections = 5 })
	var held []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", h.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond) // all five accepted
	extra, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := closedWithin(extra, 3*time.Second); err != nil {
		t.Fatalf("a sixth connection over max_connections 5: %v", err)
	}
	held[0].Close()
	waitFor(t, "a slot free", func() bool { return h.guard.open.Load() == 4 })
	if code, err := login("127.0.0.1", h.Addr(), "leaf-1"); err != nil || code != 0 {
		t.Fatalf("login after a slot freed: code %d, %v", code, err)
	}
	if n := h.guard.capped.Load(); n != 1 {
		t.Errorf("%d connections counted over the cap, want 1", n)
	}
}

// One host reconnecting as fast as it can must not lock out the logins of
// another host: each source address has its own bucket.
func TestConnectRatePerAddress(t *testing.T) {
	h := startHub(t, &fakeStore{}, func(o *Options) { o.ConnectRate, o.ConnectBurst = 20, 20 })
	stop := make(chan struct{})
	var attacks atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := dialFrom("127.0.0.2", h.Addr())
				if err != nil {
					continue
				}
				attacks.Add(1)
				_, _ = c.Write(mqttwire.Connect(4, 30, "leaf-2", "leaf-2", "wrong"))
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	// The attacker has drained its own bucket (however slow this machine
	// is today) before the other host logs in.
	waitFor(t, "the attacker's bucket to refuse it", func() bool { return h.guard.addrLimited.Load() > 0 })
	failed := 0
	const logins = 10
	for range logins {
		if code, err := login("127.0.0.3", h.Addr(), "leaf-1"); err != nil || code != 0 {
			failed++
		}
		time.Sleep(200 * time.Millisecond)
	}
	if failed > 0 {
		t.Errorf("%d of %d logins from 127.0.0.3 failed while 127.0.0.2 made %d connection attempts", failed, logins, attacks.Load())
	}
}

// A CONNECT announcing more than max_connect_packet is refused before its
// bytes are read, long before the connect timeout.
func TestConnectPacketCap(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	c, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(append([]byte{0x10}, mqttwire.Varint(300<<10)...)); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write(make([]byte, 4096))
	if err := closedWithin(c, 3*time.Second); err != nil {
		t.Fatalf("a CONNECT announcing 300 KiB: %v after 3 s", err)
	}
	if n := h.guard.tooLarge.Load(); n != 1 {
		t.Errorf("%d CONNECTs counted too large, want 1", n)
	}
	// One just under the cap is read as usual (and refused for its bad
	// password, not its size).
	body := mqttwire.Connect(4, 30, "leaf-1", "leaf-1", string(make([]byte, 15<<10)))
	c2, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write(body); err != nil {
		t.Fatal(err)
	}
	if typ, b := readPacket(t, c2); typ>>4 != 2 || len(b) < 2 || b[1] != 5 {
		t.Fatalf("got %#x %x, want CONNACK 5 (not authorised)", typ, b)
	}
}

// connect5Props is an MQTT 5 CONNECT with the given CONNECT properties.
func connect5Props(id, pass string, props []byte) []byte {
	b := mqttwire.String("MQTT")
	b = append(b, 5, 0xC2, 0, 60) // level 5; username, password, clean start; keep-alive 60
	b = mqttwire.AppendVarint(b, len(props))
	b = append(b, props...)
	b = mqttwire.AppendString(b, id)
	b = mqttwire.AppendString(b, id)
	b = mqttwire.AppendString(b, pass)
	return mqttwire.Packet(0x10, b)
}

func TestDuplicateConnectPropertiesRefused(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	expiry := []byte{0x11, 0, 0, 0, 60}        // session expiry interval 60
	user := []byte{0x26, 0, 1, 'k', 0, 1, 'v'} // a user property
	cases := []struct {
		name  string
		props []byte
		code  byte
	}{
		{"session expiry twice", append(append([]byte{}, expiry...), expiry...), 0x82},
		{"receive maximum twice", []byte{0x21, 0, 10, 0x21, 0, 20}, 0x82},
		{"user property twice", append(append([]byte{}, user...), user...), 0},
		{"one of each", append(append([]byte{}, expiry...), user...), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(connect5Props("leaf-1", testPassword, tc.props)); err != nil {
				t.Fatal(err)
			}
			typ, body := readPacket(t, c)
			if typ>>4 != 2 || len(body) < 2 || body[1] != tc.code {
				t.Fatalf("got %#x %x, want CONNACK %#x", typ, body, tc.code)
			}
			if tc.code != 0 {
				if err := closedWithin(c, 3*time.Second); err != nil {
					t.Fatalf("after CONNACK %#x: %v", tc.code, err)
				}
			}
		})
	}
}

func TestGuardConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.ConnectRatePerAddress = 30 // above connect_rate 20
	c.ConnectTimeout = 100 * time.Millisecond
	c.MaxConnections = 0
	c.MaxConnectPacket = 100
	err := c.Validate()
	for _, path := range []string{"connect_rate_per_address", "connect_timeout", "max_connections", "max_connect_packet"} {
		var found bool
		for _, e := range unwrapAll(err) {
			var fe *adapters.FieldError
			if errors.As(e, &fe) && fe.Path == path && strings.Contains(fe.Error(), "hub."+path) {
				found = true
			}
		}
		if !found {
			t.Errorf("no error at %s in %v", path, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
