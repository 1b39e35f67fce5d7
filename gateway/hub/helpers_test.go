package hub

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// fakeStore is an in-memory Appender: one worker commits submissions in
// order after an optional delay; fail decides an error per submission.
type fakeStore struct {
	mu    sync.Mutex
	recs  []*msg.Record
	seq   uint64
	delay time.Duration
	fail  func(*msg.Record) error
	ch    chan sub
	once  sync.Once
}

type sub struct {
	recs []*msg.Record
	done func(error)
}

func (f *fakeStore) Submit(recs []*msg.Record, done func(error)) {
	f.once.Do(func() {
		f.ch = make(chan sub, 1<<16)
		go f.run()
	})
	f.ch <- sub{recs, done}
}

func (f *fakeStore) run() {
	for s := range f.ch {
		if f.delay > 0 {
			time.Sleep(f.delay) // stands in for an fsync
		}
		var err error
		f.mu.Lock()
		for _, r := range s.recs {
			if f.fail != nil {
				if err = f.fail(r); err != nil {
					break
				}
			}
		}
		if err == nil {
			for _, r := range s.recs {
				f.seq++
				r.Seq = f.seq
				if r.ID == "" {
					r.ID = fmt.Sprintf("gw-%d", f.seq)
				}
				f.recs = append(f.recs, r)
			}
		}
		f.mu.Unlock()
		s.done(err)
	}
}

func (f *fakeStore) setFail(fn func(*msg.Record) error) {
	f.mu.Lock()
	f.fail = fn
	f.mu.Unlock()
}

func (f *fakeStore) records() []*msg.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*msg.Record(nil), f.recs...)
}

// fullErr is what a full store returns.
var fullErr = fmt.Errorf("store: queue full: %w", ErrStoreFull)

const testPassword = "s3cret"

var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("HUB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startHub starts a hub on a loopback port with leaf-1, leaf-2 and a
// dashboard (ReadAll) client, all with testPassword.
func startHub(t testing.TB, st Appender, mod func(*Options)) *Hub {
	t.Helper()
	opt := Options{
		Config: Config{Listen: "127.0.0.1:0", Clients: []Client{
			{ID: "leaf-1", PasswordHash: testHash, Priority: msg.High},
			{ID: "leaf-2", PasswordHash: testHash, Priority: msg.Normal},
			{ID: "dash", PasswordHash: testHash, ReadAll: true},
		}},
		Logger: testLogger(t),
	}
	if mod != nil {
		mod(&opt)
	}
	h, err := New(opt, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// pahoClient connects an MQTT 3.1.1 paho client (clean session unless
// persistent).
func pahoClient(t testing.TB, addr, id, password string, mod func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).SetPassword(password)
	o.SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second)
	o.SetWriteTimeout(5 * time.Second)
	if mod != nil {
		mod(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustPaho(t testing.TB, addr, id string, mod func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	c, err := pahoClient(t, addr, id, testPassword, mod)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

// --- raw MQTT packets (mqttwire), for the regression and fuzz tests ---

// connect5 is an MQTT 5 CONNECT with clean start, username and password.
func connect5(id, user, pass string) []byte { return mqttwire.Connect(5, 60, id, user, pass) }

// rawConn dials addr and sends CONNECT, returning the conn after CONNACK.
func rawConnect5(t testing.TB, addr, id string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(connect5(id, id, testPassword)); err != nil {
		t.Fatal(err)
	}
	typ, body := readPacket(t, c)
	if typ>>4 != 2 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %#x body %x", typ, body)
	}
	return c
}

// readPacket reads one packet (5 s deadline) and returns its first byte and body.
func readPacket(t testing.TB, c net.Conn) (byte, []byte) {
	t.Helper()
	typ, body, err := readPacketErr(c, 5*time.Second)
	if err != nil {
		t.Fatalf("read packet: %v", err)
	}
	return typ, body
}

func readPacketErr(c net.Conn, timeout time.Duration) (byte, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	return mqttwire.ReadPacket(c)
}

// publish5 is an MQTT 5 PUBLISH with QoS 1 and no properties.
func publish5(topic string, pid uint16, payload []byte) []byte {
	return mqttwire.Publish(5, topic, pid, payload)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ = bytes.Equal

// shuffleStore completes each submission after its own random delay, so
// completions arrive out of order (the real store keeps order; the hub must
// not depend on it).
type shuffleStore struct {
	fakeStore
	max time.Duration
}

func (s *shuffleStore) Submit(recs []*msg.Record, done func(error)) {
	d := time.Duration(rand.Int64N(int64(s.max)))
	go func() {
		time.Sleep(d)
		var err error
		s.mu.Lock()
		if s.fail != nil {
			err = s.fail(recs[0])
		}
		if err == nil {
			s.seq++
			recs[0].Seq = s.seq
			s.recs = append(s.recs, recs...)
		}
		s.mu.Unlock()
		done(err)
	}()
}

// connect4 is an MQTT 3.1.1 CONNECT with clean session, username and password.
func connect4(id, user, pass string) []byte { return mqttwire.Connect(4, 60, id, user, pass) }

func rawConnect4(t testing.TB, addr, id string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(connect4(id, id, testPassword)); err != nil {
		t.Fatal(err)
	}
	typ, body := readPacket(t, c)
	if typ>>4 != 2 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %#x body %x", typ, body)
	}
	return c
}

// publish4 is an MQTT 3.1.1 PUBLISH with QoS 1.
func publish4(topic string, pid uint16, payload []byte) []byte {
	return mqttwire.Publish(4, topic, pid, payload)
}

func regexpMust(s string) *regexp.Regexp { return regexp.MustCompile(s) }
