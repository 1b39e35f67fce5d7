package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

func failPayloads(err error, payloads ...string) func(*msg.Record) error {
	return func(r *msg.Record) error {
		for _, p := range payloads {
			if string(r.Payload) == p {
				return err
			}
		}
		return nil
	}
}

func TestPubacksInReceiveOrderMQTT5(t *testing.T) {
	st := &shuffleStore{max: 20 * time.Millisecond}
	st.setFail(failPayloads(fullErr, "m30", "m60"))
	h := startHub(t, st, nil)
	c := rawConnect5(t, h.Addr(), "leaf-1")
	var all []byte
	for i := 1; i <= 100; i++ {
		all = append(all, publish5("devices/leaf-1/messages/events/", uint16(i), fmt.Appendf(nil, "m%d", i))...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		typ, body := readPacket(t, c)
		if typ != 0x40 || len(body) < 2 {
			t.Fatalf("packet %d: %#x %x, want PUBACK", i, typ, body)
		}
		pid := int(body[0])<<8 | int(body[1])
		code := byte(0)
		if len(body) > 2 {
			code = body[2]
		}
		want := byte(0)
		if i == 30 || i == 60 {
			want = 0x97
		}
		if pid != i || code != want {
			t.Fatalf("PUBACK #%d: id %d reason %#x, want id %d reason %#x", i, pid, code, i, want)
		}
	}
	if n := len(st.records()); n != 98 {
		t.Fatalf("%d records stored, want 98", n)
	}
}

func TestRefusal311AcksEarlierThenDisconnects(t *testing.T) {
	st := &shuffleStore{max: 10 * time.Millisecond}
	st.setFail(failPayloads(errors.New("disk error"), "m50"))
	h := startHub(t, st, nil)
	c := rawConnect4(t, h.Addr(), "leaf-1")
	var all []byte
	for i := 1; i <= 100; i++ {
		all = append(all, publish4("devices/leaf-1/messages/events/", uint16(i), fmt.Appendf(nil, "m%d", i))...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 49; i++ {
		typ, body := readPacket(t, c)
		if typ != 0x40 || !bytes.Equal(body, []byte{0, byte(i)}) {
			t.Fatalf("packet %d: %#x %x, want PUBACK %d", i, typ, body, i)
		}
	}
	typ, body, err := readPacketErr(c, 10*time.Second)
	if err == nil {
		t.Fatalf("after the refused message got %#x %x, want the connection closed", typ, body)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after refusal: %v, want EOF", err)
	}
}

// gateStore holds every submission until released and records how many
// were outstanding at most.
type gateStore struct {
	mu       sync.Mutex
	waiting  []func(error)
	maxOut   int
	released int
}

func (g *gateStore) Submit(recs []*msg.Record, done func(error)) {
	g.mu.Lock()
	g.waiting = append(g.waiting, done)
	g.maxOut = max(g.maxOut, len(g.waiting))
	g.mu.Unlock()
}

func (g *gateStore) outstanding() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiting)
}

func (g *gateStore) releaseAll() {
	g.mu.Lock()
	w := g.waiting
	g.waiting = nil
	g.released += len(w)
	g.mu.Unlock()
	for _, d := range w {
		d(nil)
	}
}

func TestMaxInflightStopsReading(t *testing.T) {
	g := &gateStore{}
	h := startHub(t, g, func(o *Options) { o.MaxInflight = 4 })
	c := rawConnect5(t, h.Addr(), "leaf-1")
	var all []byte
	for i := 1; i <= 10; i++ {
		all = append(all, publish5("devices/leaf-1/messages/events/", uint16(i), []byte("x"))...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "4 submissions", func() bool { return g.outstanding() == 4 })
	// No event says "the hub is not reading": give it time to misbehave.
	time.Sleep(200 * time.Millisecond)
	if n := g.outstanding(); n != 4 {
		t.Fatalf("%d submissions outstanding with MaxInflight 4", n)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the store now syncs every 5 ms
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				g.releaseAll()
			}
		}
	}()
	for got := 0; got < 10; {
		typ, body := readPacket(t, c)
		if typ != 0x40 || int(body[1]) != got+1 {
			t.Fatalf("got %#x %x, want PUBACK %d", typ, body, got+1)
		}
		got++
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxOut > 4 {
		t.Fatalf("max outstanding %d", g.maxOut)
	}
}
