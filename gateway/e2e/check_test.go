package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// `outpost check` prints every problem as FILE:LINE:COL and exits 1; a
// valid file prints a one-line summary and exits 0.
func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`gateway:
  id: "gw 1"
  data_dir: /tmp/outpost
hub:
  lisen: 127.0.0.1:1883
store:
  when_full: explode
`), 0o600)
	out, err := exec.Command(bin, "check", "-c", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("check on a bad file: err %v, want exit 1\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 errors, got %d:\n%s", len(lines), out)
	}
	for i, wantLine := range []string{"2", "5", "7"} {
		m := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `:(\d+):(\d+): \S`).FindStringSubmatch(lines[i])
		if m == nil || m[1] != wantLine {
			t.Errorf("error %d = %q, want %s:%s:COL: ...", i+1, lines[i], bad, wantLine)
		}
	}
	for _, want := range []string{"lisen", "explode", "gw 1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not name %q:\n%s", want, out)
		}
	}

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("gateway:\n  id: gw-1\n  data_dir: /tmp/outpost\ncloud:\n  protocol: none\n"), 0o600)
	out, err = exec.Command(bin, "check", "-c", good).CombinedOutput()
	if err != nil {
		t.Fatalf("check on a good file: %v\n%s", err, out)
	}
	if n := strings.Count(strings.TrimSpace(string(out)), "\n"); n != 0 || !strings.Contains(string(out), "gw-1") {
		t.Errorf("want one summary line naming gw-1, got:\n%s", out)
	}
}

// Every command answers --help with exit 0.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, c := range []string{"run", "check", "demo", "status", "queue", "modbus", "serial", "bench", "passwd", "version"} {
		out, err := exec.Command(bin, c, "--help").CombinedOutput()
		if err != nil {
			t.Errorf("outpost %s --help: %v\n%s", c, err, out)
		}
		if !strings.Contains(string(out), "Usage") && !strings.Contains(string(out), "usage") {
			t.Errorf("outpost %s --help prints no usage:\n%s", c, out)
		}
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "outpost ") {
		t.Errorf("outpost version = %q, %v", out, err)
	}
}

// outpost passwd prints a bcrypt hash that hub.clients accepts.
func TestPasswd(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(bin, "passwd", "--cost", "4")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil || !regexp.MustCompile(`^\$2[aby]\$04\$.{53}\n$`).Match(out) {
		t.Fatalf("passwd = %q, %v", out, err)
	}
}
