package cloudlink

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// fill appends n records spread over devices and returns what a collector
// must see.
func fill(q *memQueue, n int, devices ...string) (map[string][]uint64, map[uint64]string) {
	want, payloads := map[string][]uint64{}, map[uint64]string{}
	for i := range n {
		dev := devices[i%len(devices)]
		p := fmt.Sprintf(`{"n":%d,"dev":%q}`, i, dev)
		seq := q.Append(dev, []byte(p), msg.Prop{Key: msg.PropContentType, Value: msg.ContentTypeJSON})
		want[dev] = append(want[dev], seq)
		payloads[seq] = p
	}
	return want, payloads
}

// runSession starts s.Run and returns a stop function that cancels it and
// checks it returned nil.
func runSession(t *testing.T, s Link) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return 15s after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitDrained(t *testing.T, q *memQueue, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := q.waitEmpty(ctx); err != nil {
		buf := make([]byte, 1<<20)
		t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		t.Fatalf("queue not drained: %v", err)
	}
}

func TestMosquittoPlain(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	q := newMemQueue()
	want, payloads := fill(q, 3000, "meter-1", "leaf-a", "thermo-1")
	s, err := New(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-plain", MaxInflight: 32}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, s)
	waitDrained(t, q, 20*time.Second)
	col.waitUnique(3000, 10*time.Second)
	// More records while connected go straight through.
	seq := q.Append("leaf-a", []byte("late"))
	want["leaf-a"] = append(want["leaf-a"], seq)
	payloads[seq] = "late"
	col.waitUnique(3001, 10*time.Second)
	// The subscriber can see it before the session has its PUBACK.
	waitDrained(t, q, 10*time.Second)
	stop()
	if dups := col.verify(want, payloads, true); dups != 0 {
		t.Errorf("%d duplicates without any outage", dups)
	}
	st := s.Status()
	if st.Forwarded != 3001 || st.Outages != 0 || st.InFlight != 0 {
		t.Errorf("status = %+v", st)
	}
	got, _ := col.snapshot()
	if ct, _ := got[0].props.Get(msg.PropContentType); ct != msg.ContentTypeJSON {
		t.Errorf("first delivery lost its $.ct: %q", got[0].topic)
	}
}
