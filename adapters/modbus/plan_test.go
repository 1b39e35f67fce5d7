package modbus

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func mustPoint(t testing.TB, p Point) *point {
	t.Helper()
	if p.Name == "" {
		p.Name = "p"
	}
	pt, errs := p.resolve("p", 0, 1)
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	return pt
}

// scattered returns n non-overlapping points of mixed widths spread over
// holding and input registers and coils, the same every run.
func scattered(t testing.TB, n int) []*point {
	r := rand.New(rand.NewPCG(6, 6))
	types := []string{"uint16", "int16", "float32", "int32", "float64", "uint64"}
	next := map[string]int{"holding": 0, "input": 0, "coil": 0}
	var ps []*point
	for i := range n {
		table := []string{"holding", "holding", "input", "coil"}[r.IntN(4)]
		p := Point{Name: fmt.Sprintf("p%03d", i), Table: table}
		if table != "coil" {
			p.Type = types[r.IntN(len(types))]
		}
		// Mostly small gaps, some bigger than max_gap, a few far jumps.
		gap := r.IntN(6)
		switch r.IntN(10) {
		case 0:
			gap = 9 + r.IntN(20)
		case 1:
			gap = 100 + r.IntN(300)
		}
		if table == "coil" {
			gap *= 20
		}
		p.Address = next[table] + gap
		pt := mustPoint(t, p)
		next[table] = pt.end()
		ps = append(ps, pt)
	}
	return ps
}

// minRequests is an independent answer: a dynamic program over the points
// of each table (in address order) for the fewest requests where each
// request holds a run of points with gaps <= maxGap and spans <= the limit.
func minRequests(ps []*point, maxGap int) int {
	total := 0
	for tb := range numTables {
		var run []*point
		for _, p := range ps {
			if p.table == tb {
				run = append(run, p)
			}
		}
		// points are generated in address order per table
		best := make([]int, len(run)+1) // best[i]: requests for run[:i]
		for i := 1; i <= len(run); i++ {
			best[i] = 1 << 30
			for j := i - 1; j >= 0; j-- { // run[j:i] as one request
				if j < i-1 && int(run[j+1].addr)-run[j].end() > gapLimit(tb, maxGap) {
					break
				}
				if run[i-1].end()-int(run[j].addr) > tb.limit() {
					break
				}
				best[i] = min(best[i], best[j]+1)
			}
		}
		total += best[len(run)]
	}
	return total
}

func TestPlan100Scattered(t *testing.T) {
	ps := scattered(t, 100)
	reqs := plan(ps, 8, nil)
	if want := minRequests(ps, 8); len(reqs) != want {
		t.Errorf("%d requests, the minimum is %d", len(reqs), want)
	}
	seen := map[string]int{}
	var golden strings.Builder
	for _, r := range reqs {
		if r.count > r.table.limit() {
			t.Errorf("request %s %d+%d over the limit", r.table, r.start, r.count)
		}
		for _, p := range r.points {
			seen[p.Name]++
			if p.table != r.table || p.addr < r.start || p.end() > r.end() {
				t.Errorf("%s (%s %d..%d) outside its request %s %d+%d", p.Name, p.table, p.addr, p.end(), r.table, r.start, r.count)
			}
		}
		fmt.Fprintf(&golden, "%s %d+%d: %d points\n", r.table, r.start, r.count, len(r.points))
	}
	for _, p := range ps {
		if seen[p.Name] != 1 {
			t.Errorf("%s is in %d requests", p.Name, seen[p.Name])
		}
	}
	checkGolden(t, "testdata/plan100.golden", golden.String())

	// max_gap 0 merges only adjacent points; it still must be minimal.
	if got, want := len(plan(ps, 0, nil)), minRequests(ps, 0); got != want {
		t.Errorf("max_gap 0: %d requests, minimum %d", got, want)
	}
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("differs from %s (run with -update after checking):\n%s", path, got)
	}
}

func TestPlanLimitsAndCuts(t *testing.T) {
	var ps []*point
	for i := range 70 { // 70 float32 = 140 registers: two requests
		ps = append(ps, mustPoint(t, Point{Name: fmt.Sprint(i), Address: 2 * i, Type: "float32"}))
	}
	reqs := plan(ps, 8, nil)
	if len(reqs) != 2 || reqs[0].count != 124 || reqs[1].start != 124 || reqs[1].count != 16 {
		t.Errorf("140 registers: %+v", describe(reqs))
	}
	var c cuts
	c.add(tableHolding, 40)
	reqs = plan(ps, 8, &c)
	if len(reqs) != 2 || reqs[0].end() != 40 || reqs[1].start != 40 || reqs[1].count != 100 {
		t.Errorf("with a cut at 40: %v", describe(reqs))
	}
	// split divides at the middle point boundary; overlapping points stay together.
	lo, hi, cut, ok := split(plan(ps[:4], 8, nil)[0])
	if !ok || cut != 4 || lo.count != 4 || hi.start != 4 || hi.count != 4 {
		t.Errorf("split: %v %v %d %v", describe([]request{lo}), describe([]request{hi}), cut, ok)
	}
	b0 := mustPoint(t, Point{Name: "b0", Address: 5, Type: "bool", Bit: ptr(0)})
	b1 := mustPoint(t, Point{Name: "b1", Address: 5, Type: "bool", Bit: ptr(1)})
	if _, _, _, ok := split(plan([]*point{b0, b1}, 8, nil)[0]); ok {
		t.Error("split two bits of one register")
	}
}

func describe(rs []request) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "[%s %d+%d %dp] ", r.table, r.start, r.count, len(r.points))
	}
	return b.String()
}
