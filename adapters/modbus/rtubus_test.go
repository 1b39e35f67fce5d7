package modbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/adaptertest"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// unitConfig polls holding 60..69 of unit u, which the slave fills with
// u*100+i: a reading with any other value would be a garbled or misrouted
// frame.
func unitConfig(url string, u int, interval, timeout time.Duration) *Config {
	c := NewConfig()
	c.URL, c.Unit, c.Interval, c.Timeout = url, u, interval, timeout
	for i := range 10 {
		c.Points = append(c.Points, Point{Name: fmt.Sprintf("r%d", i), Address: 60 + i})
	}
	return c
}

func checkUnit(t *testing.T, r msg.Reading, u int) bool {
	t.Helper()
	if !valuesRight(t, r, u) {
		return false
	}
	if len(r.Errors) > 0 {
		t.Errorf("unit %d: errors %v", u, r.Errors)
		return false
	}
	return true
}

// valuesRight fails t for a value that is wrong, not for one that is
// missing with an error.
func valuesRight(t *testing.T, r msg.Reading, u int) bool {
	t.Helper()
	for i := range 10 {
		name := fmt.Sprintf("r%d", i)
		if v, ok := r.Values[name]; ok && v != uint64(u*100+i) || !ok && r.Errors[name] == "" {
			t.Errorf("unit %d: %s = %v, errors %v", u, name, v, r.Errors)
			return false
		}
	}
	return true
}

// TestThreeSlavesOneBus runs three devices on one RTU line (three pymodbus
// processes behind an RS-485 relay) as fast as the bus goes: 1,000 polls,
// every one with exactly the slave's values.
func TestThreeSlavesOneBus(t *testing.T) {
	b := startBus485(t, 19200, 1, 2, 3)
	url := "rtu://" + b.Master + "?baud=19200"
	recs := map[int]*adaptertest.Recorder{}
	for _, u := range []int{1, 2, 3} {
		_, recs[u] = startDevice(t, fmt.Sprintf("slave-%d", u), unitConfig(url, u, 2*time.Millisecond, 200*time.Millisecond))
	}
	deadline := time.Now().Add(30 * time.Second)
	total := 0
	for total < 1000 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		total = 0
		for _, r := range recs {
			total += len(r.Readings())
		}
	}
	if total < 1000 {
		t.Fatalf("%d polls in 30 s", total)
	}
	for u, r := range recs {
		for _, rd := range r.Readings() {
			if !checkUnit(t, rd, u) {
				break
			}
		}
	}
	if n := b.Collisions.Load(); n > 0 {
		t.Errorf("%d replies overlapped on the line", n)
	}
	registry.mu.Lock()
	nb := len(registry.buses)
	registry.mu.Unlock()
	if nb != 1 {
		t.Errorf("%d buses open for three devices on one port, want 1", nb)
	}
	t.Logf("%d polls, all correct", total)
}

// TestDeadSlave kills one of three slaves on a line: the other two keep
// their interval, the dead one is reported down, and it recovers when its
// slave returns.
func TestDeadSlave(t *testing.T) {
	const (
		interval = 100 * time.Millisecond
		timeout  = 50 * time.Millisecond
	)
	b := startBus485(t, 19200, 1, 2, 3)
	url := "rtu://" + b.Master + "?baud=19200"
	devs := map[int]*Device{}
	recs := map[int]*adaptertest.Recorder{}
	for _, u := range []int{1, 2, 3} {
		c := unitConfig(url, u, interval, timeout)
		c.BackoffMax = 400 * time.Millisecond
		devs[u], recs[u] = startDevice(t, fmt.Sprintf("slave-%d", u), c)
	}
	for _, r := range recs {
		r.WaitN(t, 2, 5*time.Second)
	}
	b.Kill(2)
	killed := time.Now()
	waitHealth(t, devs[2], adapters.Down, 3*time.Second)
	time.Sleep(2 * time.Second)
	dead := time.Since(killed)
	for _, u := range []int{1, 3} {
		var ts []time.Time
		slow := 0
		for _, r := range recs[u].Readings() {
			if r.Time.After(killed) {
				ts = append(ts, r.Time)
				valuesRight(t, r, u)
				if len(r.Errors) > 0 {
					slow++
				}
			}
		}
		// A Python slave on a shared 2-core machine now and then misses a
		// 50 ms timeout; that is the peer, not the bus. Tolerate one in ten.
		if slow > len(ts)/10 {
			t.Errorf("unit %d: %d of %d polls failed while unit 2 was dead", u, slow, len(ts))
		}
		gaps := make([]time.Duration, 0, len(ts))
		for i := 1; i < len(ts); i++ {
			gaps = append(gaps, ts[i].Sub(ts[i-1]))
		}
		mean := (ts[len(ts)-1].Sub(ts[0])) / time.Duration(len(ts)-1)
		slices.Sort(gaps)
		median := gaps[len(gaps)/2]
		t.Logf("unit %d while unit 2 was dead: %d polls in %v, mean interval %v, median %v, max %v", u, len(ts), dead.Round(time.Millisecond), mean, median, gaps[len(gaps)-1])
		if d := mean - interval; d > interval/10 || d < -interval/10 {
			t.Errorf("unit %d: mean interval %v, want %v ±10%%", u, mean, interval)
		}
		if d := median - interval; d > interval/10 || d < -interval/10 {
			t.Errorf("unit %d: median interval %v, want %v ±10%%", u, median, interval)
		}
	}
	// The dead unit's readings say why; back-off keeps their number low.
	var failed int
	for _, r := range recs[2].Readings() {
		if r.Time.After(killed) {
			failed++
			if !strings.Contains(r.Errors["r0"], "no answer") {
				t.Errorf("dead unit's reading: %+v", r)
			}
		}
	}
	if max := int(dead/interval) / 2; failed > max {
		t.Errorf("dead unit polled %d times in %v; back-off should keep it under %d", failed, dead, max)
	}
	if st := devs[2].Stats(); st.Timeouts == 0 {
		t.Errorf("dead unit stats %+v: no timeouts counted", st)
	}
	b.Restart(2, 19200)
	waitHealth(t, devs[2], adapters.Up, 3*time.Second)
	rs := recs[2].Readings()
	checkUnit(t, rs[len(rs)-1], 2)
}

// TestGarbledFrames flips one byte of a reply at several positions: the
// poll reports the error on its points, and the next poll is clean.
func TestGarbledFrames(t *testing.T) {
	b := startBus485(t, 19200, 1)
	url := "rtu://" + b.Master + "?baud=19200"
	d, rec := startDevice(t, "garbled", unitConfig(url, 1, 20*time.Millisecond, 100*time.Millisecond))
	rec.WaitN(t, 1, 5*time.Second)
	for _, tc := range []struct {
		byte int
		want string
	}{
		{1, "slave id"},         // the unit id
		{2, "unexpected reply"}, // the function code
		{5, "crc"},              // a data byte
		{25, "crc"},             // the CRC itself
	} {
		n := len(rec.Readings())
		b.Corrupt.Store(int64(tc.byte))
		var bad msg.Reading
		deadline := time.Now().Add(3 * time.Second)
		for bad.Errors == nil && time.Now().Before(deadline) {
			for _, r := range rec.Readings()[n:] {
				if r.Errors != nil {
					bad = r
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !strings.Contains(bad.Errors["r0"], tc.want) {
			t.Errorf("byte %d flipped: reading %+v, want an error with %q", tc.byte, bad, tc.want)
		}
		// The bus goes on: the following polls are clean again.
		m := len(rec.Readings())
		for _, r := range rec.WaitN(t, m+3, 3*time.Second)[m+1:] {
			checkUnit(t, r, 1)
		}
	}
	if h, _ := d.Health(); h != adapters.Up {
		t.Errorf("health after recovery: %s", h)
	}
}

func TestScanRTU(t *testing.T) {
	// 500 ms per unit: the Python slave on a loaded 2-core machine has
	// missed 100 ms; this test is about who answers, not how fast.
	b := startBus485(t, 19200, 1, 3)
	var out, errOut strings.Builder
	code := Tool(context.Background(), []string{"scan", "rtu://" + b.Master + "?baud=19200", "--units", "1-4", "--timeout", "500ms"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("scan: exit %d: %s", code, errOut.String())
	}
	want := "unit 1: answers (holding[0] = 64302)\nunit 3: answers (holding[0] = 64302)\n2 of 4 units answer\n"
	if out.String() != want {
		t.Errorf("scan printed\n%s\nwant\n%s", out.String(), want)
	}
}
