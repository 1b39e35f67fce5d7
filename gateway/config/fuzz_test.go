package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input panics, and that every problem found in
// a file has a position in it.
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
			if e.File != "f.yaml" || e.Line < 1 || e.Col < 1 {
				t.Fatalf("error without a position: %+v", e)
			}
		}
	})
}
