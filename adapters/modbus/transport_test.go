package modbus

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// TestTransports reads the fixture over ASCII and over RTU framing on a TCP
// stream (socat bridging a TCP port to the slave's pty).
func TestTransports(t *testing.T) {
	py := peertest.Python(t)
	t.Run("ascii", func(t *testing.T) {
		pp := peertest.StartPtyPair(t)
		peertest.Start(t, exec.Command(py, "testdata/slave.py", "ascii", pp.B, "9600"), ready)
		_, rec := startDevice(t, "ascii-1", fixtureConfig("ascii://"+pp.A+"?baud=9600"))
		checkFixture(t, rec.WaitN(t, 1, 5*time.Second)[0])
	})
	t.Run("rtuovertcp", func(t *testing.T) {
		socat := peertest.Need(t, "socat")
		port := peertest.FreePort(t)
		pty := filepath.Join(t.TempDir(), "tty")
		// The pty first: socat opens its second address only after the first.
		peertest.Start(t, exec.Command(socat, "-d", "-d", "pty,raw,echo=0,link="+pty,
			fmt.Sprintf("tcp-listen:%d,bind=127.0.0.1,reuseaddr", port)), regexp.MustCompile(`listening on`))
		peertest.Start(t, exec.Command(py, "testdata/slave.py", "rtu", pty, "19200"), ready)
		_, rec := startDevice(t, "rtutcp-1", fixtureConfig(fmt.Sprintf("rtuovertcp://127.0.0.1:%d", port)))
		checkFixture(t, rec.WaitN(t, 1, 5*time.Second)[0])
	})
}

// TestScheduler checks per-point intervals at a fixed rate: a late poll
// does not shift later ones, and missed ticks are skipped.
func TestScheduler(t *testing.T) {
	c := NewConfig()
	c.URL, c.Interval = "tcp://h", time.Second
	c.Points = []Point{{Name: "fast"}, {Name: "slow", Address: 1, Interval: 3 * time.Second}}
	d, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	s := newScheduler(d, t0)
	names := func(ps []*point) (n []string) {
		for _, p := range ps {
			n = append(n, p.Name)
		}
		return n
	}
	for _, step := range []struct {
		at   time.Duration
		want string
		next time.Duration
	}{
		{0, "[fast slow]", time.Second},
		{time.Second + 300*time.Millisecond, "[fast]", 2 * time.Second}, // late: the next stays on the grid
		{2 * time.Second, "[fast]", 3 * time.Second},
		{3 * time.Second, "[fast slow]", 4 * time.Second},
		{7*time.Second + 500*time.Millisecond, "[fast slow]", 8 * time.Second}, // 4..7 missed: skipped
	} {
		got := fmt.Sprint(names(s.take(t0.Add(step.at))))
		if got != step.want || s.next() != t0.Add(step.next) {
			t.Errorf("at %v: took %s, next %v; want %s, next %v", step.at, got, s.next().Sub(t0), step.want, step.next)
		}
	}
}

func TestDeadbandAndHeartbeat(t *testing.T) {
	c := NewConfig()
	c.URL = "tcp://h"
	c.Points = []Point{
		{Name: "t", Type: "int16", Scale: ptr(0.1), Deadband: 0.5, Heartbeat: time.Minute},
		{Name: "on", Table: "coil", Heartbeat: time.Hour},
		{Name: "raw", Address: 1},
	}
	d, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	r := newReporter(d.points)
	t0 := time.Unix(0, 0)
	for i, step := range []struct {
		at   time.Duration
		t    float64
		on   bool
		emit bool // Emit succeeded: commit
		want string
	}{
		{0, 20.0, false, true, "map[on:false raw:7 t:20]"},
		{time.Second, 20.4, false, true, "map[raw:7]"},                   // within the deadband
		{2 * time.Second, 20.6, false, false, "map[raw:7 t:20.6]"},       // beyond it, but Emit failed
		{3 * time.Second, 20.6, true, true, "map[on:true raw:7 t:20.6]"}, // so it is reported again
		{4 * time.Second, 20.2, true, true, "map[raw:7]"},
		{64 * time.Second, 20.3, true, true, "map[raw:7 t:20.3]"}, // heartbeat
	} {
		res := pollResult{values: map[string]any{"t": step.t, "on": step.on, "raw": uint64(7)}}
		rd, commit := r.reading("dev", t0.Add(step.at), res)
		if got := fmt.Sprint(rd.Values); got != step.want {
			t.Errorf("step %d: %s, want %s", i, got, step.want)
		}
		if step.emit {
			commit()
		}
	}
}
