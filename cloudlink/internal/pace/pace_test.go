package pace

import (
	"testing"
	"time"
)

// TestPacer pins the replay pacer's token bucket on a fake clock: it starts
// with a second's worth of tokens (at least one, at most the burst), refills
// at the rate up to the burst, says how long until the next token when it
// has none, and takes back what a lease did not use.
func TestPacer(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return clock }
	type step struct {
		advance  time.Duration
		want     int
		got      int
		wait     time.Duration
		giveBack int
	}
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"unlimited", 0, 12, []step{{want: 1000, got: 1000}, {want: 5, got: 5}}},
		{"starts with the burst", 1000, 12, []step{
			{want: 100, got: 12},
			{want: 100, got: 0, wait: time.Millisecond},
			{advance: 5 * time.Millisecond, want: 100, got: 5},
			{advance: time.Second, want: 100, got: 12}, // refilled up to the burst only
		}},
		{"starts with a second's worth", 5, 48, []step{
			{want: 48, got: 5},
			{want: 1, got: 0, wait: 200 * time.Millisecond},
			{advance: 100 * time.Millisecond, want: 1, got: 0, wait: 100 * time.Millisecond},
			{advance: 100 * time.Millisecond, want: 3, got: 1},
		}},
		{"starts with one token at least", 0.5, 10, []step{
			{want: 10, got: 1},
			{want: 1, got: 0, wait: 2 * time.Second},
		}},
		{"gives back what a lease did not use", 100, 16, []step{
			{want: 16, got: 16, giveBack: 10},
			{want: 16, got: 10, giveBack: 10},
			{want: 16, got: 10},
			{want: 1, got: 0, wait: 10 * time.Millisecond},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewAt(tc.rate, tc.burst, now)
			for i, s := range tc.steps {
				clock = clock.Add(s.advance)
				got, wait := p.Take(s.want)
				if d := wait - s.wait; got != s.got || d > time.Microsecond || d < -time.Microsecond {
					t.Fatalf("step %d: take(%d) = %d, %v; want %d, %v", i, s.want, got, wait, s.got, s.wait)
				}
				if s.giveBack > 0 {
					p.GiveBack(s.giveBack)
				}
			}
		})
	}
}
