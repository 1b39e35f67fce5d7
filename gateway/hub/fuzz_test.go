package hub

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// The packet fuzz input is one byte of mode, then a byte stream. Mode bit
// 0 picks MQTT 5 (else 3.1.1) for the CONNECT the stream follows; with
// bit 1 set the stream is sent as it is, CONNECT included, so the login
// itself is fuzzed.
const (
	modeV5  = 1
	modeRaw = 2
)

// fuzzClients are the fuzz hub's clients: two leaves with a password, a
// dashboard that reads every device, an operator that sends commands, and
// an Azure IoT SDK style device that logs in with a SAS token.
var fuzzClients = []Client{
	{ID: "leaf-1", PasswordHash: testHash, Priority: msg.High},
	{ID: "leaf-2", PasswordHash: testHash},
	{ID: "dash", PasswordHash: testHash, ReadAll: true},
	{ID: "op", PasswordHash: testHash, Operator: true},
	{ID: "az-1", SASKey: sasKey1},
}

// sasConnect5 is az-1's MQTT 5 CONNECT with a SAS token valid until 2100.
func sasConnect5(tb testing.TB) []byte {
	k, err := iothub.DecodeKey(sasKey1)
	if err != nil {
		tb.Fatal(err)
	}
	tok := iothub.Sign(iothub.DeviceResource("hub.example", "az-1"), k, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), "")
	return mqttwire.Connect(5, 60, "az-1", sasUser("hub.example", "az-1"), tok)
}

// hubPacketSeeds are the packet seeds written in code; the corpus in
// testdata/fuzz/FuzzHubPackets adds more. Both fuzz in-process
// (FuzzHubPackets) and replay against a live hub (TestHubPacketsReplay).
func hubPacketSeeds(tb testing.TB) [][]byte {
	sub := func(filter string, opts byte) []byte {
		return mqttwire.Packet(0x82, append([]byte{0, 1}, append(mqttwire.String(filter), opts)...))
	}
	sub5 := func(filter string) []byte {
		return mqttwire.Packet(0x82, append([]byte{0, 1, 0}, append(mqttwire.String(filter), 1)...))
	}
	raw := func(parts ...[]byte) []byte { return append([]byte{modeRaw}, bytes.Join(parts, nil)...) }
	return [][]byte{
		append([]byte{1}, truncatedSubscribe5...),
		append([]byte{1}, publish5("devices/leaf-2/messages/events/a=1", 1, []byte("x"))...),
		append([]byte{0}, publish4("devices/leaf-2/messages/events/", 1, []byte("x"))...),
		append([]byte{0}, sub("devices/leaf-2/messages/devicebound/#", 1)...),
		append([]byte{1}, mqttwire.Packet(0x34, append(mqttwire.String("devices/leaf-2/messages/events/"), 0, 9, 0))...), // QoS 2
		append([]byte{1}, mqttwire.Packet(0x30, append(mqttwire.String("devices/leaf-2/messages/events/"), 0x02, 0x23, 0x00))...),
		append([]byte{0}, 0xC0, 0), // PINGREQ
		append([]byte{1}, 0xE0, 1, 0x8E),
		{1, 0x82, 0xFF, 0xFF, 0xFF, 0x7F},
		// $.mid and outpost-seq in the bag, two messages, then a refused topic.
		append([]byte{0}, bytes.Join([][]byte{
			publish4("devices/leaf-2/messages/events/%24.mid=m-1&a=%2F1&outpost-seq=9", 2, []byte("{}")),
			publish4("devices/leaf-2/messages/events/%24.ct=application%2Fjson&%24.mid=m-2", 3, nil),
			publish4("devices/leaf-1/messages/events/", 4, []byte("not mine")),
		}, nil)...),
		// Another device's C2D, then a wildcard reaching past its own.
		append([]byte{1}, append(sub5("devices/leaf-1/messages/devicebound/#"), sub5("devices/+/messages/devicebound/#")...)...),
		// A topic alias set, then used with an empty topic.
		append([]byte{1}, bytes.Join([][]byte{
			mqttwire.Packet(0x32, append(mqttwire.String("devices/leaf-2/messages/events/"), 0, 5, 3, 0x23, 0, 1, 'a')),
			mqttwire.Packet(0x32, append(mqttwire.String(""), 0, 6, 3, 0x23, 0, 1, 'b')),
		}, nil)...),
		// A second CONNECT is a protocol violation.
		append([]byte{0}, connect4("leaf-2", "leaf-2", testPassword)...),
		// Logins: SAS token, dashboard reading every device, operator command, wrong password.
		raw(sasConnect5(tb), publish5("devices/az-1/messages/events/%24.mid=az", 1, []byte("sas"))),
		raw(connect4("dash", "dash", testPassword), sub("devices/+/messages/events/#", 1), publish4("devices/dash/messages/events/", 1, nil)),
		raw(connect5("op", "op", testPassword), publish5("devices/leaf-1/messages/devicebound/%24.mid=c-1", 7, []byte(`{"on":true}`))),
		raw(connect4("leaf-1", "leaf-1", "wrong"), publish4("devices/leaf-1/messages/events/", 1, nil)),
		raw(connect4("nobody", "nobody", testPassword)),
	}
}

var (
	fuzzOnce     sync.Once
	fuzzHub      *Hub
	fuzzStore    *fakeStore
	fuzzCommands atomic.Int64 // commands the operator got accepted
)

// startFuzzHub starts the in-process fuzz hub once per test binary; it
// listens on a loopback port only because Start insists on an address:
// the fuzz connections are net.Pipes handed to its listener.
func startFuzzHub(tb testing.TB) *Hub {
	fuzzOnce.Do(func() {
		fuzzStore = &fakeStore{}
		h, err := New(Options{
			Config: Config{Listen: "127.0.0.1:0", Clients: fuzzClients},
			Commands: func(context.Context, string, msg.Props, []byte) error {
				fuzzCommands.Add(1)
				return nil
			},
			Logger: testLogger(tb),
		}, fuzzStore)
		if err == nil {
			err = h.Start()
		}
		if err != nil {
			tb.Fatal(err)
		}
		fuzzHub = h
	})
	if fuzzHub == nil {
		tb.Fatal("fuzz hub failed to start")
	}
	return fuzzHub
}

// connResult is what one fuzzed connection did.
type connResult struct {
	out      []byte // every byte the hub wrote back
	stored   int    // records the store took meanwhile
	commands int64  // commands accepted meanwhile
}

// memConn is the hub's end of an in-memory connection: reads serve the
// client's bytes, and once they are used up signal drained (mochi reads
// one connection's packets in sequence, so every complete packet has then
// been handled) and block until Close; writes are kept.
type memConn struct {
	mu      sync.Mutex
	in      []byte
	out     bytes.Buffer
	drained chan struct{}
	closed  chan struct{}
	drain   sync.Once
	close   sync.Once
}

func newMemConn(in []byte) *memConn {
	return &memConn{in: in, drained: make(chan struct{}), closed: make(chan struct{})}
}

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.in) > 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	c.drain.Do(func() { close(c.drained) })
	<-c.closed
	return 0, io.EOF
}

func (c *memConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.close.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) output() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

var memAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

func (c *memConn) LocalAddr() net.Addr              { return memAddr }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// runConn hands an in-memory connection carrying stream to the hub's
// listener exactly as an accepted TCP connection is handed over (panic
// recovery, the write deadline wrapper, mochi's EstablishConnection). Once
// the hub has read all of stream (or closed the connection), the client
// goes away. runConn returns once the hub has finished with the
// connection, or fails tb if that takes more than 10 s: a wedged
// connection is a finding.
func runConn(tb testing.TB, h *Hub, stream []byte) connResult {
	before, cmds := len(fuzzStore.records()), fuzzCommands.Load()
	c := newMemConn(stream)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.plain.serveConn(c, h.srv.Load().EstablishConnection)
	}()
	wedged := time.NewTimer(10 * time.Second)
	defer wedged.Stop()
	select {
	case <-c.drained:
	case <-c.closed:
	case <-wedged.C:
		tb.Fatalf("the hub did not read a connection's bytes within 10 s; stream %x", stream)
	}
	c.Close()
	select {
	case <-done:
	case <-wedged.C:
		tb.Fatalf("the hub did not finish a connection within 10 s of the client closing it; stream %x", stream)
	}
	return connResult{out: c.output(), stored: len(fuzzStore.records()) - before, commands: fuzzCommands.Load() - cmds}
}

// checkAnswers checks the rule the hub exists for: no success PUBACK for
// a message that was not stored (or, for the operator, accepted as a
// command). It counts PUBACKs that signal success (MQTT 3.1.1 has no
// reason code; in MQTT 5 a code below 0x80) in what the hub wrote.
func checkAnswers(tb testing.TB, stream []byte, r connResult) {
	rd := bufio.NewReader(bytes.NewReader(r.out))
	ok := 0
	for {
		first, body, err := mqttwire.ReadPacket(rd)
		if err != nil {
			break
		}
		if first>>4 == packets.Puback && (len(body) < 3 || body[2] < 0x80) {
			ok++
		}
	}
	if int64(ok) > int64(r.stored)+r.commands {
		tb.Fatalf("%d success PUBACKs, %d records stored, %d commands accepted; stream %x", ok, r.stored, r.commands, stream)
	}
}

// checkIdle checks that nothing of the connection is left in the hub: no
// client counted as connected, no connection remembered for panic
// recovery, no SAS expiry timer, no clean-session client registered.
func checkIdle(tb testing.TB, h *Hub, stream []byte) {
	srv := h.srv.Load()
	n := 0
	h.conns.Range(func(any, any) bool { n++; return true })
	if c := atomic.LoadInt64(&srv.Info.ClientsConnected); c != 0 || n != 0 || h.sas.pending() != 0 {
		tb.Fatalf("after the connection ended: %d clients connected, %d connections remembered, %d SAS timers; stream %x",
			c, n, h.sas.pending(), stream)
	}
	for _, cl := range srv.Clients.GetAll() {
		clean := cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0 ||
			cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean
		if !cl.Net.Inline && clean {
			tb.Fatalf("clean-session client %q still registered after its connection ended; stream %x", cl.ID, stream)
		}
	}
}

// FuzzHubPackets feeds a byte stream, after a valid CONNECT or as the
// whole connection (see modeRaw), to the hub in-process, through the same
// listener code as a TCP connection. It checks: no panic escapes the
// per-connection recovery; the hub finishes with every connection once the
// client closes it (no wedge); nothing of a connection is left behind; and
// no success PUBACK goes out for a message that was not stored. Every
// 1,000 inputs, and at the end of TestHubPacketsReplay, a well-behaved
// client still gets its PUBACK.
func FuzzHubPackets(f *testing.F) {
	for _, s := range hubPacketSeeds(f) {
		f.Add(s)
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		h := startFuzzHub(t)
		if len(data) == 0 {
			return
		}
		stream := data[1:]
		if data[0]&modeRaw == 0 {
			hello := connect4("leaf-2", "leaf-2", testPassword)
			if data[0]&modeV5 != 0 {
				hello = connect5("leaf-2", "leaf-2", testPassword)
			}
			stream = append(hello, stream...)
		}
		r := runConn(t, h, stream)
		checkAnswers(t, stream, r)
		checkIdle(t, h, stream)
		if n.Add(1)%1000 == 0 {
			goodClientInProcess(t, h)
		}
	})
}

// goodClientInProcess checks that leaf-1 still logs in and gets its
// message stored and acknowledged.
func goodClientInProcess(tb testing.TB, h *Hub) {
	r := runConn(tb, h, append(connect4("leaf-1", "leaf-1", testPassword), publish4("devices/leaf-1/messages/events/", 7, []byte("ok"))...))
	if !bytes.HasPrefix(r.out, []byte{0x20, 2, 0, 0}) {
		tb.Fatalf("good client: no CONNACK in %x", r.out)
	}
}

// TestHubPacketsReplay replays the packet seeds and the committed corpus
// against a live hub over TCP, one connection at a time, as leaves would
// send them; after each, the hub has let the connection go and a
// well-behaved client still gets its message stored and acknowledged.
func TestHubPacketsReplay(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, func(o *Options) {
		o.Clients = fuzzClients
		o.Commands = func(context.Context, string, msg.Props, []byte) error { return nil }
		o.ConnectRate, o.ConnectBurst = 1e6, 1<<20
	})
	inputs := hubPacketSeeds(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzHubPackets", "*"))
	for _, name := range files {
		inputs = append(inputs, readCorpusBytes(t, name))
	}
	if len(files) == 0 {
		t.Fatal("no corpus in testdata/fuzz/FuzzHubPackets")
	}
	for i, data := range inputs {
		if len(data) == 0 {
			continue
		}
		stream := data[1:]
		if data[0]&modeRaw == 0 {
			hello := connect4("leaf-2", "leaf-2", testPassword)
			if data[0]&modeV5 != 0 {
				hello = connect5("leaf-2", "leaf-2", testPassword)
			}
			stream = append(hello, stream...)
		}
		c, err := net.Dial("tcp", h.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(stream)
		// Read what comes back until the hub closes or falls silent.
		buf := make([]byte, 4096)
		for {
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()
		waitFor(t, "input "+strconv.Itoa(i)+" to be let go", func() bool {
			return h.Stats().Connected == 0 && h.sas.pending() == 0
		})
	}
	g, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Write(append(connect4("leaf-1", "leaf-1", testPassword), publish4("devices/leaf-1/messages/events/", 7, []byte("ok"))...)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []byte{0x20, 0x40} {
		typ, body, err := readPacketErr(g, 5*time.Second)
		if err != nil || typ != want {
			t.Fatalf("good client after the replay: got %#x %x (%v), want %#x", typ, body, err, want)
		}
	}
}

// readCorpusBytes reads a one-value []byte file in Go's fuzz corpus format.
func readCorpusBytes(tb testing.TB, name string) []byte {
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
		tb.Fatalf("%s: not a one-[]byte corpus file", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}

// A client that goes away between its login and the CONNACK (a TCP reset
// right after CONNECT) leaves nothing behind: no registered clean-session
// client, no SAS expiry timer holding it until the token expires. mochi
// skips OnDisconnect on that path; FuzzHubPackets found it.
func TestConnectionGoneBeforeConnack(t *testing.T) {
	h := startHub(t, &fakeStore{}, func(o *Options) { o.Clients = fuzzClients })
	for _, hello := range [][]byte{sasConnect5(t), connect4("leaf-2", "leaf-2", testPassword)} {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.plain.serveConn(server, h.srv.Load().EstablishConnection)
		}()
		if _, err := client.Write(hello); err != nil {
			t.Fatal(err)
		}
		client.Close() // before reading the CONNACK
		<-done
		if n := h.sas.pending(); n != 0 {
			t.Errorf("%d SAS expiry timers left", n)
		}
		for _, cl := range h.srv.Load().Clients.GetAll() {
			if !cl.Net.Inline {
				t.Errorf("client %q still registered", cl.ID)
			}
		}
	}
}
