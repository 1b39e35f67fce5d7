package modbus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/outpost-iot/outpost/adapters/modbus/codec"
)

// benchPoints is 100 points over the slave's tables: 60 holding registers
// (int16 and float32) and 30 coils scattered with gaps, and 10 inputs.
func benchPoints(url string) *Config {
	r := rand.New(rand.NewPCG(1, 2))
	c := NewConfig()
	c.URL, c.Interval, c.Timeout, c.MaxGap = url, time.Hour, time.Second, 4
	pick := func(n, max int) []int { return slices.Sorted(slices.Values(r.Perm(max)[:n])) }
	next := 0
	for i, a := range pick(60, 180) {
		if a < next {
			a = next
		}
		typ := []string{"int16", "float32"}[r.IntN(2)]
		c.Points = append(c.Points, Point{Name: fmt.Sprintf("h%d", i), Address: a, Type: typ})
		ty, _ := codec.ParseType(typ)
		next = a + ty.Words()
	}
	for i, a := range pick(30, 100) {
		c.Points = append(c.Points, Point{Name: fmt.Sprintf("c%d", i), Table: "coil", Address: a})
	}
	for i := range 10 {
		c.Points = append(c.Points, Point{Name: fmt.Sprintf("i%d", i), Table: "input", Address: i})
	}
	return c
}

// wireTime is the least time the requests take on a line: every byte of
// request and reply at the line's character time, and the 3.5-character
// silence before each frame. The slave's own turnaround is not counted.
func wireTime(s busSpec, reqs []request) time.Duration {
	var total time.Duration
	for _, r := range reqs {
		reply := 5 + 2*r.count
		if r.table.bits() {
			reply = 5 + (r.count+7)/8
		}
		total += time.Duration(8+reply)*s.charTime() + 2*s.frameGap()
	}
	return total
}

// BenchmarkPoll100At19200 polls 100 points through a relay that paces
// bytes at 19200 baud, and reports the poll time against the wire-time
// bound: x-wire = (time per poll) / (wire time of its frames). "adapter"
// is this package's transport; "goburrow" sends the same requests with
// goburrow's own RTU transport, whose fixed pre-read sleep is
// 1.5 characters per byte of request and reply plus 3.5 characters.
func BenchmarkPoll100At19200(b *testing.B) {
	bus := startBus485Paced(b, 19200, true, 1)
	cfg := benchPoints("rtu://" + bus.Master + "?baud=19200")
	d, err := New("bench", cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	reqs := d.planFor(d.cfg.points)
	wire := wireTime(d.cfg.bus, reqs)
	b.Logf("100 points -> %d requests; wire time %v", len(reqs), wire)

	b.Run("adapter", func(b *testing.B) {
		bus, err := acquire(d.cfg.bus, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Release()
		ctx := context.Background()
		for b.Loop() {
			res := d.poll(ctx, bus, d.cfg.points)
			if len(res.errs) > 0 || len(res.values) != 100 {
				b.Fatalf("poll: %d values, errors %v", len(res.values), res.errs)
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(wire), "x-wire")
		b.ReportMetric(float64(wire)/1e6, "wire-ms")
	})

	b.Run("goburrow", func(b *testing.B) {
		h := modbus.NewRTUClientHandler(bus.Master)
		h.BaudRate, h.DataBits, h.Parity, h.StopBits, h.SlaveId, h.Timeout = 19200, 8, "N", 1, 1, time.Second
		h.IdleTimeout = 0
		if err := h.Connect(); err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		c := modbus.NewClient(h)
		for b.Loop() {
			for _, r := range reqs {
				if _, err := read(c, r.table, r.start, r.count); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(wire), "x-wire")
	})
}
