package firmware

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// bootTest skips unless OUTPOST_BOOT_TEST names mode (the make targets set
// it): these tests need root and take minutes. Under CI=true a missing tool
// fails the test.
func bootTest(t *testing.T, mode string, tools ...string) {
	t.Helper()
	if !strings.Contains(","+os.Getenv("OUTPOST_BOOT_TEST")+",", ","+mode+",") {
		t.Skipf("boot test %s: set OUTPOST_BOOT_TEST=%s (make firmware-test)", mode, mode)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("boot tests need root")
		}
		t.Skip("boot tests need root")
	}
	for _, tool := range tools {
		peertest.Need(t, tool)
	}
}

// dir is the firmware/ directory (the test's working directory).
func dir(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// run runs a command, failing the test with its output when it fails, and
// returns its stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// debFor returns the .deb to test: the debArch one of $OUTPOST_DEB (one
// path or several separated by spaces), or one built now from the working
// tree for goTarget (amd64, arm64, armv7, armv6) into a temporary directory.
func debFor(t *testing.T, goTarget, debArch string) string {
	t.Helper()
	if env := os.Getenv("OUTPOST_DEB"); env != "" {
		for _, p := range strings.Fields(env) {
			if strings.HasSuffix(p, "_"+debArch+".deb") {
				return p
			}
		}
		t.Fatalf("OUTPOST_DEB=%s holds no %s package", env, debArch)
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(dir(t), "build.sh"), goTarget)
	cmd.Env = append(os.Environ(), "DIST="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh %s: %v\n%s", goTarget, err, b)
	}
	deb := strings.TrimSpace(run(t, filepath.Join(dir(t), "mkdeb.sh"), debArch, filepath.Join(out, "outpost-linux-"+goTarget), out))
	return deb
}

// rootfs returns a private copy of the cached Debian 12 root filesystem for
// arch (built on first use by rootfs.sh; minutes for a foreign arch).
func rootfs(t *testing.T, arch string) string {
	t.Helper()
	start := time.Now()
	base := strings.TrimSpace(run(t, filepath.Join(dir(t), "rootfs.sh"), arch))
	t.Logf("rootfs %s: %s (%.1f s)", arch, base, time.Since(start).Seconds())
	work, err := os.MkdirTemp("", "outpost-boot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("OUTPOST_KEEP") != "" {
			t.Logf("kept %s", work)
			return
		}
		os.RemoveAll(work)
	})
	root := filepath.Join(work, "root")
	run(t, "cp", "-a", base, root)
	return root
}

// chroot runs args inside root with its own /proc (a private mount and pid
// namespace, so nothing stays mounted afterwards).
func chroot(root string, args ...string) (string, error) {
	a := append([]string{"--mount", "--pid", "--fork", "--mount-proc=" + filepath.Join(root, "proc"), "chroot", root}, args...)
	return runErr("unshare", a...)
}

func mustChroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := chroot(root, args...)
	if err != nil {
		t.Fatalf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// installDeb installs deb into root with dpkg, as a user would with
// `apt install ./outpost.deb` on a device whose dependencies are present.
func installDeb(t *testing.T, root, deb string) {
	t.Helper()
	start := time.Now()
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/outpost.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	mustChroot(t, root, "dpkg", "-i", "/tmp/outpost.deb")
	os.Remove(filepath.Join(root, "tmp/outpost.deb"))
	t.Logf("dpkg -i %s: %.1f s", filepath.Base(deb), time.Since(start).Seconds())
}

// eventually polls cond every 100 ms until it returns true or timeout
// passes; then it fails the test with cond's last description.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, desc := cond()
		if ok {
			return
		}
		last = desc
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// props parses `systemctl show` output.
func props(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func hostArch() string {
	if runtime.GOARCH == "arm" {
		return "armhf"
	}
	return runtime.GOARCH
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
