package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseWithin parses src and fails the test when Parse has not returned
// after d (the parser bombs below ran for minutes, or out of memory).
func parseWithin(t *testing.T, src string, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Parse("bomb.yaml", []byte(src))
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("Parse of a %d-byte file did not return within %v", len(src), d)
		return nil
	}
}

const okHead = "gateway: {id: gw-1}\n"

func TestParserBombsRefused(t *testing.T) {
	var mergeBomb strings.Builder
	mergeBomb.WriteString(okHead + "x-0: &a0 {k: v}\n")
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&mergeBomb, "x-%d: &a%d {<<: [", i, i)
		for j := range 10 {
			if j > 0 {
				mergeBomb.WriteString(", ")
			}
			fmt.Fprintf(&mergeBomb, "*a%d", i-1)
		}
		mergeBomb.WriteString("]}\n")
	}
	var laughs strings.Builder
	laughs.WriteString(okHead + "commands: {ttl: 1h}\nx-0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&laughs, "x-%d: &l%d [", i, i)
		for j := range 10 {
			if j > 0 {
				laughs.WriteString(", ")
			}
			fmt.Fprintf(&laughs, "*l%d", i-1)
		}
		laughs.WriteString("]\n")
	}
	cases := []struct {
		name, src, want string
	}{
		{"flow nesting 40 KB", okHead + "devices: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n", "nested deeper than"},
		{"block nesting", okHead + blockNest(300), "nested deeper than"},
		{"sequence nesting on one line", okHead + "devices:\n" + strings.Repeat("- ", 500) + "x\n", "nested deeper than"},
		{"merge-key bomb", mergeBomb.String(), "expand to more than"},
		{"billion laughs", laughs.String(), "expand to more than"},
		{"over 1 MiB", okHead + "# " + strings.Repeat("x", MaxFileBytes) + "\n", "larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := parseWithin(t, tc.src, 20*time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse of %d bytes: %v, want an error with %q", len(tc.src), err, tc.want)
			}
		})
	}
}

// blockNest is n nested block mappings, each indented one more space.
func blockNest(n int) string {
	var b strings.Builder
	b.WriteString("devices:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%sk%d:\n", strings.Repeat(" ", i), i)
	}
	return b.String()
}

// A real config's nesting, anchors and merge keys stay well inside the
// limits.
func TestLimitsLeaveRealConfigs(t *testing.T) {
	src := okHead + `hub:
  clients:
    - &leaf {id: leaf-1, password_hash: "$2a$10$SFEetvJTni7.DP0arh0hTOdm.K/CH8LuZCoBNGAVLGzGG8KIT9WSS", priority: high}
    - {<<: *leaf, id: leaf-2}
    - {<<: *leaf, id: leaf-3}
`
	if _, err := Parse("ok.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"testdata/full.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkLimits(f, data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// Load reads no more than MaxFileBytes of a file, however large.
func TestLoadRefusesHugeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil { // sparse: 1 GiB of zeros
		t.Fatal(err)
	}
	f.Close()
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Load of a 1 GiB file: %v", err)
	}
}
