package cloudlink

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// TestStreamHoldsNoSlotsWhileWaiting is the regression test for a stall seen
// under CPU load: the live stream took the whole in-flight window, then
// waited in LeaseFrom for fresh data that never came, and the backlog waited
// for a slot forever (connected, nothing sent). A stream must hold no slot
// while it waits for records.
func TestStreamHoldsNoSlotsWhileWaiting(t *testing.T) {
	s, err := New(Options{Config: Config{URL: "mqtt://127.0.0.1:1", ClientID: "gw-slots", MaxInflight: 4}}, newMemQueue())
	if err != nil {
		t.Fatal(err)
	}
	f := newForwarder(s, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- f.stream(ctx, func(ctx context.Context, n int) ([]*msg.Record, error) {
			if n < 1 {
				t.Errorf("stream asked for %d records", n)
			}
			held <- len(f.slots)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	}()
	select {
	case n := <-held:
		if n != 0 {
			t.Errorf("stream holds %d of %d in-flight slots while it waits for records", n, cap(f.slots))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream never asked for records")
	}
	// The backlog (or anyone) can take the whole window meanwhile.
	for range cap(f.slots) {
		select {
		case f.slots <- struct{}{}:
		default:
			t.Fatal("in-flight window not free while the stream waits")
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("stream: %v", err)
	}
}
