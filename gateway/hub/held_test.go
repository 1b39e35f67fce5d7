package hub

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// A SUBSCRIBE with 10,000 filters is answered with 10,000 codes (the ACL
// refuses them) and costs nobody else their connection.
func TestSubscribeTenThousandFilters(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	other := rawConnect4(t, h.Addr(), "leaf-2")
	c := rawConnect4(t, h.Addr(), "leaf-1")
	const n = 10000
	body := []byte{0, 9}
	for i := range n {
		body = mqttwire.AppendString(body, fmt.Sprintf("x/%d", i))
		body = append(body, 1)
	}
	if _, err := c.Write(mqttwire.Packet(0x82, body)); err != nil {
		t.Fatal(err)
	}
	typ, ack := readPacket(t, c)
	if typ>>4 != 9 || len(ack) != 2+n {
		t.Fatalf("got %#x with %d bytes, want SUBACK with %d codes", typ, len(ack), n)
	}
	for i, code := range ack[2:] {
		if code != 0x80 {
			t.Fatalf("filter %d: code %#x, want 0x80 (refused)", i, code)
		}
	}
	if _, err := other.Write([]byte{0xC0, 0}); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readPacket(t, other); typ != 0xD0 {
		t.Fatalf("the other client got %#x, want PINGRESP", typ)
	}
}

// 50 connections with the same client id take the session over from each
// other while publishing: every message that got a PUBACK is stored.
func TestTakeoverStormLosesNothing(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, func(o *Options) { o.ConnectRate, o.ConnectBurst = 1e6, 1e6 })
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			c, err := net.Dial("tcp", h.Addr())
			if err != nil {
				return
			}
			defer c.Close()
			if _, err := c.Write(connect4("leaf-1", "leaf-1", testPassword)); err != nil {
				return
			}
			if typ, _, err := readPacketErr(c, 5*time.Second); err != nil || typ>>4 != 2 {
				return
			}
			for i := range 20 {
				p := fmt.Sprintf("w%d-%d", w, i)
				if _, err := c.Write(publish4("devices/leaf-1/messages/events/", uint16(i+1), []byte(p))); err != nil {
					return
				}
				typ, _, err := readPacketErr(c, 5*time.Second)
				if err != nil {
					return // taken over
				}
				if typ>>4 == 4 {
					mu.Lock()
					acked[p] = true
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	stored := map[string]bool{}
	for _, r := range st.records() {
		stored[string(r.Payload)] = true
	}
	lost := 0
	for p := range acked {
		if !stored[p] {
			lost++
		}
	}
	t.Logf("%d messages acknowledged, %d stored", len(acked), len(stored))
	if lost > 0 || len(acked) == 0 {
		t.Fatalf("%d of %d acknowledged messages lost", lost, len(acked))
	}
}

// 1,000 commands queued for a leaf that reads and acknowledges slowly are
// all delivered and each completed exactly once.
func TestThousandCommandsToSlowLeaf(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	const n = 1000
	var mu sync.Mutex
	doneCount := map[string]int{}
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: id}}, []byte(id), func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				doneCount[id]++
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	var gmu sync.Mutex
	c := mustPaho(t, h.Addr(), "leaf-1", func(o *paho.ClientOptions) { o.SetOrderMatters(true) })
	tok := c.Subscribe("devices/leaf-1/messages/devicebound/#", 1, func(_ paho.Client, m paho.Message) {
		time.Sleep(time.Millisecond) // a slow leaf: paho acks after the handler
		gmu.Lock()
		got[string(m.Payload())]++
		gmu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	waitFor(t, "1,000 commands completed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(doneCount) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for id, k := range doneCount {
		if k != 1 {
			t.Errorf("command %s completed %d times", id, k)
		}
	}
	gmu.Lock()
	defer gmu.Unlock()
	if len(got) != n {
		t.Errorf("the leaf got %d distinct commands, want %d", len(got), n)
	}
}
