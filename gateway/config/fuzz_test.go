package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that no input panics or hangs, that a config comes back
// exactly when there is no error, that every problem found in a file has a
// position in it, and that a file that parses parses the same again.
// Seeds beyond these are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add(Example)
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("devices:\n  - id: a\n    fake: {<<: {url: u}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without an error")
			}
			_ = c.Summary()
			again, err := Parse("f.yaml", data)
			if err != nil || again.Summary() != c.Summary() {
				t.Fatalf("second parse differs: %v", err)
			}
			return
		}
		if c != nil {
			t.Fatal("config returned with an error")
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
		}
		for _, e := range es {
			if e.File != "f.yaml" || e.Line < 1 || e.Col < 1 || e.Msg == "" {
				t.Fatalf("error without a position or message: %+v", e)
			}
		}
	})
}

// A mapping that merges itself is an error at each alias that does it, not
// an expansion without end.
func TestMergeCycle(t *testing.T) {
	for _, src := range []string{
		"gateway: &g {id: gw-1, <<: [*g, *g, *g]}\n",
		"gateway: &g {id: gw-1, <<: &h {<<: [*g, *h]}}\n",
	} {
		_, err := Parse("f.yaml", []byte(src))
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("%q: err = %v", src, err)
		}
		cycles := 0
		for _, e := range es {
			if strings.Contains(e.Msg, "refers back to the mapping that holds it") {
				cycles++
				if e.Line != 1 || e.Col < 20 {
					t.Errorf("%q: %v", src, e)
				}
			}
		}
		if cycles == 0 {
			t.Errorf("%q: no cycle reported: %v", src, err)
		}
	}
}

// A source merged many times, by mappings merged many times, is expanded
// once per decoder. A document whose merges would expand past
// MaxExpandedNodes if each were expanded afresh (20 devices each merging
// the one before three times: 3^19) is refused at once, before decoding.
func TestMergeFanOut(t *testing.T) {
	if _, err := Parse("f.yaml", []byte(mergeFanOut(20))); err == nil || !strings.Contains(err.Error(), "expand to more than") {
		t.Fatalf("20-deep fan-out: err = %v", err)
	}
	src := mergeFanOut(11)
	c, err := Parse("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Devices) != 11 {
		t.Fatalf("%d devices", len(c.Devices))
	}
	for i, d := range c.Devices {
		if a := d.Adapter.(*fakeConfig); a.URL != "tcp://a" || a.Interval != 2*time.Second {
			t.Errorf("devices[%d] = %+v", i, a)
		}
	}
}

func mergeFanOut(n int) string {
	var b strings.Builder
	b.WriteString("gateway: {id: gw-1}\ndevices:\n  - id: d0\n    fake: &l0 {url: tcp://a, interval: 2s}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - id: d%d\n    fake: &l%d {<<: [*l%d, *l%d, *l%d]}\n", i, i, i-1, i-1, i-1)
	}
	return b.String()
}

// Aliases that expand without end (the "billion laughs" document: nine
// lists of nine, eleven deep) are refused before they are decoded, and
// the index, should it ever see them, stops at maxIndexed paths. It is a
// test rather than a seed because each try indexes maxIndexed paths: its
// mutants would slow the fuzzer to a crawl.
func TestAliasBomb(t *testing.T) {
	laughs := func(levels int) []byte {
		var b strings.Builder
		fmt.Fprintf(&b, "gateway: {id: g}\nhub:\n  clients: *a%d\n", levels)
		b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x]\n")
		for i := 1; i <= levels; i++ {
			p := fmt.Sprintf("*a%d", i-1)
			fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, strings.Repeat(p+", ", 8)+p)
		}
		return []byte(b.String())
	}
	if _, err := Parse("f.yaml", laughs(11)); err == nil || !strings.Contains(err.Error(), "expand to more than") {
		t.Fatalf("eleven deep: err = %v", err)
	}
	// Five deep stays under MaxExpandedNodes but has more paths than the
	// index keeps.
	d := newDecoder("f.yaml")
	if d.parse(laughs(4)) == nil || len(d.errs) > 0 {
		t.Fatalf("parse: %v", d.errs)
	}
	if n := len(d.idx.m); n != maxIndexed {
		t.Fatalf("%d paths indexed, want the bound %d", n, maxIndexed)
	}
	var es Errors
	if _, err := Parse("f.yaml", laughs(4)); !errors.As(err, &es) || !strings.Contains(err.Error(), "hub.clients[0]: want a mapping, got a list") {
		t.Fatalf("err = %v", err)
	}
}
