package config

import (
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// index maps key paths ("devices[1].modbus.points[2].type") to where the
// key and its value are written. It covers every node in the file whatever
// type it decodes into, so an adapter's FieldError path can be placed too.
type index struct {
	m map[string]loc
}

type loc struct {
	key pos // the key (for a list element: the element)
	val pos // the value
}

// maxIndexed bounds the index when aliases repeat large subtrees.
const maxIndexed = 1 << 16

func (x *index) build(d *decoder, path string, key ast.Node, n ast.Node, depth int) {
	if depth > 100 || len(x.m) >= maxIndexed {
		return
	}
	v := d.resolveQuiet(n)
	l := loc{key: posOf(n), val: posOf(v)}
	if key != nil {
		l.key = posOf(key)
		if _, null := v.(*ast.NullNode); null {
			l.val = l.key // "id:" or "-" with nothing after it: point there
		}
	}
	if _, seen := x.m[path]; !seen {
		x.m[path] = l
	}
	switch v := v.(type) {
	case *ast.MappingNode:
		for _, mv := range d.quietDecoder().entries(path, v, 0) {
			x.build(d, join(path, keyString(mv.Key)), mv.Key, mv.Value, depth+1)
		}
	case *ast.SequenceNode:
		for i, item := range v.Values {
			var dash ast.Node
			if _, null := item.(*ast.NullNode); null && i < len(v.Entries) {
				dash = v.Entries[i] // "-" with nothing after it: point at the dash
			}
			x.build(d, elem(path, i), dash, item, depth+1)
		}
	}
}

// resolveQuiet is resolve without reporting.
func (d *decoder) resolveQuiet(n ast.Node) ast.Node {
	return d.quietDecoder().resolve("", n)
}

// quietDecoder returns a decoder that shares d's anchors and keeps its
// problems to itself (the index reports nothing). It is made once per d,
// so merge sources are expanded once for the whole index.
func (d *decoder) quietDecoder() *decoder {
	if d.quiet == nil {
		d.quiet = &decoder{anchors: d.anchors, failed: map[string]bool{}}
	}
	return d.quiet
}

// lookup returns the position of path's value (or, with key, of its key).
// A path that is not in the file falls back to its nearest ancestor's key:
// a missing key is reported at the mapping that should hold it.
func (x *index) lookup(path string, key bool) pos {
	if x == nil {
		return pos{}
	}
	if l, ok := x.m[path]; ok {
		if key {
			return l.key
		}
		return l.val
	}
	for path != "" {
		path = parentPath(path)
		if l, ok := x.m[path]; ok {
			return l.key
		}
	}
	return pos{1, 1}
}

// has reports whether path is written in the file.
func (x *index) has(path string) bool {
	if x == nil {
		return false
	}
	_, ok := x.m[path]
	return ok
}

// parentPath strips the last ".key" or "[i]" from path.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// suggest returns the known name closest to k when it is close enough to
// be a typo, or "".
func suggest(k string, known []string) string {
	best, bestD := "", 3
	if len(k) <= 4 {
		bestD = 2
	}
	for _, c := range known {
		if strings.EqualFold(c, k) || strings.ReplaceAll(c, "_", "") == strings.ReplaceAll(strings.ToLower(k), "-", "") {
			return c
		}
		if dist := editDistance(strings.ToLower(k), c); dist < bestD {
			best, bestD = c, dist
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of neighbours ("fkae") cost 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
