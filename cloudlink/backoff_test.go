package cloudlink

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestBackoffSchedule runs Session.Run against a scripted upstream in a
// synctest bubble (fake clock) and checks the waits between attempts: full
// jitter over a ceiling doubling from 0.5 s to 60 s, a reset only after a
// connection that lasted StableAfter, and the 10 s floor after a drop that
// looks like throttling.
func TestBackoffSchedule(t *testing.T) {
	type step struct {
		up        time.Duration // 0: the attempt fails; else the connection lasts this long
		throttled bool
		jitter    float64       // the random draw for the wait after this attempt
		wait      time.Duration // the expected wait after it
	}
	steps := []step{
		{jitter: 0.999, wait: 499500 * time.Microsecond}, // ceiling 0.5 s
		{jitter: 0.5, wait: 500 * time.Millisecond},      // 1 s
		{jitter: 0.999, wait: 1998 * time.Millisecond},   // 2 s
		{jitter: 0, wait: 0},                             // 4 s, drawn 0: full jitter
		{jitter: 0.25, wait: 2 * time.Second},            // 8 s
		{jitter: 0.5, wait: 8 * time.Second},             // 16 s
		{jitter: 0.5, wait: 16 * time.Second},            // 32 s
		{jitter: 0.5, wait: 30 * time.Second},            // 60 s (capped)
		{jitter: 0.5, wait: 30 * time.Second},            // still 60 s
		// Up, but not for StableAfter (30 s): no reset.
		{up: 10 * time.Second, jitter: 0.5, wait: 30 * time.Second},
		// Up for longer than StableAfter: the ceiling starts again at 0.5 s.
		{up: 31 * time.Second, jitter: 0.5, wait: 250 * time.Millisecond},
		{jitter: 0.5, wait: 500 * time.Millisecond}, // 1 s
		// Dropped right after a burst: at least 10 s until the next reset.
		{up: time.Second, throttled: true, jitter: 0.1, wait: 10 * time.Second}, // ceiling 2 s: 0.2 s, floored
		{jitter: 0.99, wait: 10 * time.Second},                                  // ceiling 4 s: 3.96 s, floored to 10 s
		// A stable connection clears the throttled floor too.
		{up: time.Minute, jitter: 0.5, wait: 250 * time.Millisecond},
	}
	synctest.Test(t, func(t *testing.T) {
		s, err := New(Options{Config: Config{URL: "mqtt://127.0.0.1:1", ClientID: "gw-backoff", Protocol: ProtocolAzure, Host: "h", DeviceID: "gw-backoff", SharedAccessKey: "c2VjcmV0"}}, newMemQueue())
		if err != nil {
			t.Fatal(err)
		}
		var attempts []time.Time
		i := 0
		s.rng = func() float64 { return steps[i-1].jitter }
		ctx, cancel := context.WithCancel(context.Background())
		s.serveFn = func(ctx context.Context, _ time.Time) result {
			attempts = append(attempts, time.Now())
			if i == len(steps) {
				cancel()
				<-ctx.Done()
				return result{err: ctx.Err()}
			}
			st := steps[i]
			i++
			if st.up == 0 {
				return result{err: errors.New("refused")}
			}
			time.Sleep(st.up)
			return result{connected: true, lasted: st.up, throttled: st.throttled, err: errors.New("lost")}
		}
		if err := s.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if len(attempts) != len(steps)+1 {
			t.Fatalf("%d attempts, want %d", len(attempts), len(steps)+1)
		}
		for k, st := range steps {
			got := attempts[k+1].Sub(attempts[k]) - st.up
			if got != st.wait {
				t.Errorf("wait after attempt %d (up %v, jitter %v) = %v, want %v", k+1, st.up, st.jitter, got, st.wait)
			}
		}
		if got := s.Status().Outages; got != 4 {
			t.Errorf("outages = %d, want 4 (connections lost after being up)", got)
		}
	})
}
