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
// once: 20 devices each merging the one before three times would be 3^19
// expansions otherwise.
func TestMergeFanOut(t *testing.T) {
	src := mergeFanOut(20)
	c, err := Parse("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Devices) != 20 {
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
// lists of nine, eleven deep) are indexed up to maxIndexed paths and no
// further. It is a test rather than a seed because each try indexes
// maxIndexed paths: its mutants would slow the fuzzer to a crawl.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("gateway: {id: g}\nhub:\n  clients: *a11\n")
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 12; i++ {
		p := fmt.Sprintf("*a%d", i-1)
		fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, strings.Repeat(p+", ", 8)+p)
	}
	d := newDecoder("f.yaml")
	if d.parse([]byte(b.String())) == nil || len(d.errs) > 0 {
		t.Fatalf("parse: %v", d.errs)
	}
	if n := len(d.idx.m); n > maxIndexed {
		t.Fatalf("%d paths indexed, max %d", n, maxIndexed)
	}
	var es Errors
	if _, err := Parse("f.yaml", []byte(b.String())); !errors.As(err, &es) || !strings.Contains(err.Error(), "hub.clients[0]: want a mapping, got a list") {
		t.Fatalf("err = %v", err)
	}
}
