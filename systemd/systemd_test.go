package systemd

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// root builds a minimal image root for `systemd-analyze --root`: the host's
// stock units (for sysinit.target and friends), outpost.service under
// /etc/systemd/system, and an executable stub for every absolute command in
// the unit's Exec*= lines, so "is not executable" checks the paths, not
// whether this machine has the gateway installed. Skips (fails under CI)
// without systemd-analyze.
func root(t *testing.T, unit []byte) string {
	t.Helper()
	peertest.Need(t, "systemd-analyze")
	r := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib/systemd/system", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib"} { // merged /usr, as on Debian 12
		if err := os.Symlink("usr/"+l, filepath.Join(r, l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, src := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if out, err := exec.Command("cp", "-a", src+"/.", filepath.Join(r, "usr/lib/systemd/system")).CombinedOutput(); err == nil {
			break
		} else if src == "/lib/systemd/system" {
			t.Fatalf("copy stock units: %v %s", err, out)
		}
	}
	for _, cmd := range execPaths(unit) {
		p := filepath.Join(r, cmd)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r, "etc/systemd/system/outpost.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// execPaths returns the absolute program paths of the unit's Exec*= lines.
func execPaths(unit []byte) []string {
	var ps []string
	re := regexp.MustCompile(`^Exec[A-Za-z]+=[-@:+!]*(/\S+)`)
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			ps = append(ps, m[1])
		}
	}
	return ps
}

// verify runs `systemd-analyze verify` and returns its combined output and
// whether it exited 0. systemd 252 exits 0 on unknown keys and bad values
// and only prints warnings, so callers treat any output as a failure.
func verify(t *testing.T, r string) (string, bool) {
	t.Helper()
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+r, "outpost.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

func TestUnitVerifies(t *testing.T) {
	if out, ok := verify(t, root(t, Unit)); !ok || out != "" {
		t.Fatalf("systemd-analyze verify outpost.service: ok=%v\n%s", ok, out)
	}
}

// The verify check must catch what systemd only warns about.
func TestVerifyCatchesMistakes(t *testing.T) {
	cases := []struct {
		name, old, new string
	}{
		{"unknown key", "Type=notify", "Typ=notify"},
		{"bad restart", "Restart=always", "Restart=sometimes"},
		{"bad watchdog", "WatchdogSec=30s", "WatchdogSec=soon"},
		{"bad protect", "ProtectSystem=strict", "ProtectSystem=bogus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !bytes.Contains(Unit, []byte(c.old)) {
				t.Fatalf("unit has no %q", c.old)
			}
			bad := bytes.Replace(Unit, []byte(c.old), []byte(c.new), 1)
			if out, ok := verify(t, root(t, bad)); ok && out == "" {
				t.Fatalf("verify accepted %q", c.new)
			}
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		r := root(t, Unit)
		if err := os.Remove(filepath.Join(r, "usr/bin/outpost")); err != nil {
			t.Fatal(err)
		}
		if out, ok := verify(t, r); ok || !strings.Contains(out, "/usr/bin/outpost is not executable") {
			t.Fatalf("verify without the binary: ok=%v %s", ok, out)
		}
	})
}

// exposure returns the overall exposure level systemd-analyze reports.
func exposure(t *testing.T, unit []byte) (float64, string) {
	t.Helper()
	r := root(t, unit)
	cmd := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", "--root="+r, "outpost.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for outpost\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	f, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return f, string(out)
}

func TestSecurityExposure(t *testing.T) {
	got, out := exposure(t, Unit)
	t.Logf("systemd-analyze security --offline=yes outpost.service: exposure %.1f", got)
	if got > MaxExposure {
		t.Fatalf("exposure %.1f > %.1f:\n%s", got, MaxExposure, out)
	}
	// The measurement must be able to fail: without the sandbox the same
	// unit scores far worse.
	var plain bytes.Buffer
	for _, l := range strings.Split(string(Unit), "\n") {
		if k, _, ok := strings.Cut(l, "="); ok && sandboxKey(k) {
			continue
		}
		plain.WriteString(l + "\n")
	}
	worse, _ := exposure(t, plain.Bytes())
	t.Logf("the same unit without its sandbox: exposure %.1f", worse)
	if worse <= MaxExposure {
		t.Fatalf("unit without hardening scores %.1f; the check cannot fail", worse)
	}
}

func sandboxKey(k string) bool {
	return strings.HasPrefix(k, "Protect") || strings.HasPrefix(k, "Restrict") ||
		strings.HasPrefix(k, "SystemCall") || strings.HasPrefix(k, "Private") ||
		strings.HasPrefix(k, "Device") || strings.HasSuffix(k, "Capabilities") ||
		k == "CapabilityBoundingSet" || k == "NoNewPrivileges" || k == "MemoryDenyWriteExecute" ||
		k == "LockPersonality" || k == "User" || k == "Group"
}

// The unit keeps the contract that the rest of Outpost and the .deb rely on.
func TestUnitContract(t *testing.T) {
	want := []string{
		"Type=notify",
		"ExecStart=/usr/bin/outpost run -c /etc/outpost/outpost.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"Restart=always",
		"User=outpost",
		"SupplementaryGroups=dialout gpio",
		"StateDirectory=outpost",
		"ConfigurationDirectory=outpost",
		"ProtectSystem=strict",
		"PrivateTmp=yes",
		"NoNewPrivileges=yes",
		"CapabilityBoundingSet=",
		"DevicePolicy=closed",
		"DeviceAllow=char-ttyUSB rw",
		"DeviceAllow=char-gpiochip rw",
		"WantedBy=multi-user.target",
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(Unit), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("outpost.service lacks the line %q", w)
		}
	}
	if !regexp.MustCompile(`(?m)^WatchdogSec=[1-9][0-9]*s$`).Match(Unit) {
		t.Error("outpost.service has no WatchdogSec=")
	}
}

// sysusers and tmpfiles entries are applied to an image root by the real
// tools: they must create the user, its groups and the data directory.
func TestSysusersAndTmpfiles(t *testing.T) {
	peertest.Need(t, "systemd-sysusers")
	peertest.Need(t, "systemd-tmpfiles")
	r := t.TempDir()
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":   "root:x:0:\ndialout:x:20:\n",
		"etc/shadow":  "root:*:19000:0:99999:7:::\n",
		"etc/gshadow": "root:*::\ndialout:*::\n",
	}
	for name, body := range files {
		p := filepath.Join(r, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	su := filepath.Join(t.TempDir(), "outpost.conf")
	if err := os.WriteFile(su, Sysusers, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-sysusers", "--root="+r, su).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(r, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(r, "etc/group"))
	if !regexp.MustCompile(`(?m)^outpost:x:\d+:\d+:[^:]*:/var/lib/outpost:/usr/sbin/nologin$`).Match(passwd) {
		t.Errorf("no outpost user:\n%s", passwd)
	}
	for _, re := range []string{`(?m)^dialout:x:20:outpost$`, `(?m)^gpio:x:\d+:outpost$`, `(?m)^outpost:x:\d+:$`} {
		if !regexp.MustCompile(re).Match(group) {
			t.Errorf("/etc/group lacks %s:\n%s", re, group)
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("tmpfiles: chown to the outpost user needs root")
	}
	tf := filepath.Join(t.TempDir(), "outpost.conf")
	if err := os.WriteFile(tf, Tmpfiles, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-tmpfiles", "--root="+r, "--create", tf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	st, err := os.Stat(filepath.Join(r, "var/lib/outpost"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o750 || !st.IsDir() {
		t.Errorf("/var/lib/outpost mode %v, want drwxr-x---", st.Mode())
	}
	uid := regexp.MustCompile(`(?m)^outpost:x:(\d+):`).FindSubmatch(passwd)
	if uid == nil {
		t.Fatal("no outpost uid")
	}
	if got := ownerUID(st); strconv.Itoa(got) != string(uid[1]) {
		t.Errorf("/var/lib/outpost owned by uid %d, want %s", got, uid[1])
	}
}
