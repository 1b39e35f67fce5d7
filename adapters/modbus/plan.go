package modbus

import (
	"cmp"
	"slices"
)

// request is one read of a contiguous range of a unit's table, with the
// points it serves (sorted by address).
type request struct {
	table  table
	start  uint16
	count  int
	points []*point
}

func (r request) end() int { return int(r.start) + r.count }

// cuts are addresses, per table, that no read may span: a cut at a means
// a request must not read both below a and at or above it. They record
// ranges the device rejected with exception 02 (illegal data address).
type cuts [numTables]map[int]bool

func (c *cuts) add(t table, addr int) {
	if c[t] == nil {
		c[t] = map[int]bool{}
	}
	c[t][addr] = true
}

// between reports a cut in (lo, hi].
func (c *cuts) between(t table, lo, hi int) bool {
	for a := range c[t] {
		if lo < a && a <= hi {
			return true
		}
	}
	return false
}

// gapLimit is how many unused items a request may bridge: maxGap
// registers, or as many bits as fit in maxGap registers for coil and
// discrete tables (bridged bits cost as little as bridged registers).
func gapLimit(t table, maxGap int) int {
	if t.bits() {
		return 16 * maxGap
	}
	return maxGap
}

// plan merges points into the fewest read requests: per table, in address
// order, a request grows while the next point starts at most maxGap items
// after its end, the request stays within the protocol limit (125
// registers, 2000 bits), and no cut lies in between. For points that do
// not overlap this greedy sweep is optimal: each request reaches as far as
// any request starting at the same point could.
func plan(points []*point, maxGap int, c *cuts) []request {
	ps := slices.Clone(points)
	slices.SortStableFunc(ps, func(a, b *point) int {
		return cmp.Or(cmp.Compare(a.table, b.table), cmp.Compare(a.addr, b.addr), cmp.Compare(a.end(), b.end()))
	})
	var out []request
	for i := 0; i < len(ps); {
		p := ps[i]
		r := request{table: p.table, start: p.addr, count: p.Words, points: []*point{p}}
		gap := gapLimit(p.table, maxGap)
		for i++; i < len(ps); i++ {
			q := ps[i]
			end := max(r.end(), q.end())
			if q.table != r.table || int(q.addr)-r.end() > gap || end-int(r.start) > r.table.limit() ||
				c != nil && c.between(r.table, int(r.start), int(q.addr)) {
				break
			}
			r.count = end - int(r.start)
			r.points = append(r.points, q)
		}
		out = append(out, r)
	}
	return out
}

// split divides a rejected request's points in two at the point boundary
// nearest the middle where the halves do not overlap. ok is false when no
// such boundary exists (a single point, or points that all overlap).
func split(r request) (lo, hi request, cut int, ok bool) {
	n := len(r.points)
	best := -1
	for k := 1; k < n; k++ {
		reach := 0
		for _, p := range r.points[:k] {
			reach = max(reach, p.end())
		}
		if reach > int(r.points[k].addr) {
			continue
		}
		if best < 0 || abs(k-n/2) < abs(best-n/2) {
			best = k
		}
	}
	if best < 0 {
		return r, r, 0, false
	}
	return span(r.table, r.points[:best]), span(r.table, r.points[best:]), int(r.points[best].addr), true
}

// span is the tightest request reading points.
func span(t table, points []*point) request {
	r := request{table: t, start: points[0].addr, points: points}
	end := 0
	for _, p := range points {
		r.start = min(r.start, p.addr)
		end = max(end, p.end())
	}
	r.count = end - int(r.start)
	return r
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
