package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// inbox is a test Inbox: it records what it took in and can fail on demand.
type inbox struct {
	mu    sync.Mutex
	calls []string // $.mid of every call, in order
	kept  []string // $.mid of every message it accepted
	fail  map[string]int
	wake  chan struct{}
}

func newInbox() *inbox { return &inbox{fail: map[string]int{}, wake: make(chan struct{}, 1000)} }

func (ib *inbox) take(_ context.Context, device string, props msg.Props, payload []byte) error {
	mid, _ := props.Get(msg.PropMessageID)
	ib.mu.Lock()
	defer ib.mu.Unlock()
	defer func() { ib.wake <- struct{}{} }()
	ib.calls = append(ib.calls, mid)
	if ib.fail[mid] > 0 {
		ib.fail[mid]--
		return errors.New("disk on fire")
	}
	if string(payload) != `{"write":{"setpoint":`+mid[1:]+`}}` || device != "leaf-1" {
		return fmt.Errorf("unexpected C2D %s %s %q", device, mid, payload)
	}
	ib.kept = append(ib.kept, mid)
	return nil
}

func (ib *inbox) waitKept(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ib.mu.Lock()
		k := append([]string(nil), ib.kept...)
		ib.mu.Unlock()
		if len(k) >= n {
			return k
		}
		select {
		case <-ib.wake:
		case <-deadline:
			t.Fatalf("inbox kept %d of %d: %v", len(k), n, k)
		}
	}
}

// TestC2DIntake: C2D messages reach Inbox in order; a failed Inbox means no
// PUBACK, so the broker delivers the message again (and nothing before it);
// a duplicate $.mid is acknowledged without a second Inbox call.
func TestC2DIntake(t *testing.T) {
	m := peertest.StartMosquitto(t)
	q := newMemQueue()
	ib := newInbox()
	ib.fail["c5"] = 1
	s, err := New(fastRetry(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-c2d"}, Inbox: ib.take, Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	// The subscription must be in place before the cloud sends.
	m.WaitFor(t, regexpQuote("gw-c2d 1 devices/+/messages/devicebound/#"), 10*time.Second)
	cloud := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.Addr).SetClientID("cloud-sender"))
	if tok := cloud.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cloud.Disconnect(0)
	send := func(mid string) {
		topic := msg.DeviceboundTopic("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: mid}, {Key: "iothub-ack", Value: "full"}})
		if tok := cloud.Publish(topic, 1, false, `{"write":{"setpoint":`+mid[1:]+`}}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	var want []string
	for i := 1; i <= 10; i++ {
		want = append(want, fmt.Sprintf("c%d", i))
		send(want[i-1])
	}
	kept := ib.waitKept(t, 10)
	if fmt.Sprint(kept) != fmt.Sprint(want) {
		t.Errorf("inbox kept %v, want %v (in order, each once)", kept, want)
	}
	ib.mu.Lock()
	calls := append([]string(nil), ib.calls...)
	ib.mu.Unlock()
	// c1..c4 were taken in before c5 failed: never handed to Inbox again.
	count := map[string]int{}
	for _, c := range calls {
		count[c]++
	}
	for _, mid := range want[:4] {
		if count[mid] != 1 {
			t.Errorf("%s handed to Inbox %d times; it was PUBACKed before the failure", mid, count[mid])
		}
	}
	if count["c5"] != 2 {
		t.Errorf("c5 handed to Inbox %d times, want 2 (fail, then redelivered)", count["c5"])
	}
	if st := s.Status(); st.Outages < 1 {
		t.Errorf("a failed Inbox must drop the connection: %+v", st)
	}
	// The cloud sends c3 again: recognised, acknowledged, not applied twice.
	send("c3")
	send("c11")
	ib.waitKept(t, 11)
	ib.mu.Lock()
	n3 := 0
	for _, c := range ib.calls {
		if c == "c3" {
			n3++
		}
	}
	ib.mu.Unlock()
	if n3 != 1 {
		t.Errorf("duplicate c3 handed to Inbox %d times", n3)
	}
	// Status counts a message just after Inbox returned.
	// At least c3 was a duplicate; c1..c4 may be too, when their PUBACKs
	// were still queued in the client as the connection was dropped (then the
	// broker rightly delivers them again, and they are recognised).
	st := waitStatus(t, s, func(st Status) bool { return st.C2D >= 11 })
	if st.C2DDuplicates < 1 || st.C2DDuplicates > 5 || st.C2D != 11 {
		t.Errorf("status C2D=%d duplicates=%d, want 11 and 1..5", st.C2D, st.C2DDuplicates)
	}
}

// waitStatus polls s.Status until ok (or 10 s passed) and returns the last
// snapshot.
func waitStatus(t *testing.T, s *Session, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Status()
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func regexpQuote(s string) *regexp.Regexp { return regexp.MustCompile(regexp.QuoteMeta(s)) }
