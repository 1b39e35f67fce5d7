package firmware

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// arm32 is one 32-bit target: the Go build, the Debian architecture, and
// the CPU qemu-user emulates for everything run in its root (QEMU_CPU), the
// oldest board the package is for.
type arm32 struct {
	goTarget, debArch, cpu, board string
}

var arm32Targets = []arm32{
	{"armv7", "armhf", "cortex-a7", "Pi 2"},
	{"armv6", "armel", "arm1176", "Pi 1 / Zero"},
}

// TestInstall32 installs the armhf and armel .debs into Debian 12 roots of
// their own architecture under qemu-user (binfmt_misc), emulating the
// oldest CPU each is for, and starts the service from the package the way
// its unit does (user outpost, its groups, the packaged paths): the
// maintainer scripts, `outpost check` of the shipped config, /healthz, a
// leaf's message through the hub to a Mosquitto on the host, a clean exit
// on SIGTERM, and the remove/reinstall/purge cycle. systemd itself is not
// PID 1 here: the boot under systemd is TestBootNspawn's (amd64) and
// TestBootQemuArm64's.
func TestInstall32(t *testing.T) {
	bootTest(t, "arm32", "debootstrap", "qemu-arm-static", "update-binfmts", "unshare", "chroot", "mosquitto_pub")
	for _, a := range arm32Targets {
		t.Run(a.debArch, func(t *testing.T) { install32(t, a) })
	}
}

func install32(t *testing.T, a arm32) {
	start := time.Now()
	deb := debFor(t, a.goTarget, a.debArch)
	root := rootfs(t, a.debArch)
	run(t, filepath.Join(dir(t), "binfmt.sh"), a.debArch)
	// Every program in the root, dpkg and the maintainer scripts included,
	// runs on the emulated board's CPU: a binary built for a newer one dies
	// with SIGILL.
	t.Setenv("QEMU_CPU", a.cpu)
	if out := mustChroot(t, root, "uname", "-m"); !strings.HasPrefix(out, "armv") {
		t.Fatalf("uname -m in the %s root: %q", a.debArch, out)
	}
	installDeb(t, root, deb)
	checkInstalled(t, root)

	upstream := peertest.StartMosquitto(t)
	sub := upstream.Sub(t, "#")
	hubPort, httpPort := peertest.FreePort(t), peertest.FreePort(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("leaf-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	gwID := a.debArch + "-gw"
	cfg := fmt.Sprintf(`gateway:
  id: %s
  data_dir: /var/lib/outpost
hub:
  listen: 127.0.0.1:%d
  clients:
    - id: leaf-1
      password_hash: %q
http:
  listen: 127.0.0.1:%d
cloud:
  protocol: mqtt
  url: mqtt://%s
`, gwID, hubPort, hash, httpPort, upstream.Addr)
	if err := os.WriteFile(filepath.Join(root, "etc/outpost/outpost.yaml"), []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	mustChroot(t, root, "/usr/bin/outpost", "check", "-c", "/etc/outpost/outpost.yaml")

	// As the unit runs it: User=outpost, Group=outpost,
	// SupplementaryGroups=dialout gpio (numeric: the host's chroot resolves
	// names in the host's files). The host's network: the chroot shares it.
	uid, gid := lookupID(t, root, "passwd", "outpost"), lookupID(t, root, "group", "outpost")
	groups := lookupID(t, root, "group", "dialout") + "," + lookupID(t, root, "group", "gpio")
	cmd := exec.Command("unshare", "--mount", "--fork", "--kill-child=SIGTERM", "--mount-proc="+filepath.Join(root, "proc"),
		"chroot", "--userspec="+uid+":"+gid, "--groups="+groups, root,
		"/usr/bin/outpost", "run", "-c", "/etc/outpost/outpost.yaml")
	runStart := time.Now()
	gw := peertest.Start(t, cmd, nil)
	healthz := func() (bool, string) {
		select {
		case <-gw.Done():
			t.Fatalf("outpost run exited:\n%s", gw.Output())
		default:
		}
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	}
	eventually(t, 2*time.Minute, "/healthz 200 from the "+a.debArch+" gateway", healthz)
	t.Logf("%s on %s (%s): exec to /healthz 200: %s", a.debArch, a.cpu, a.board, fmtDur(time.Since(runStart)))
	if ps := mustChroot(t, root, "stat", "-c", "%U", "/var/lib/outpost/queue"); strings.TrimSpace(ps) != "outpost" {
		t.Errorf("the store is owned by %q, want outpost (the service's user)", strings.TrimSpace(ps))
	}

	payload := "hello-from-" + a.debArch
	if out, err := runErr("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(hubPort), "-q", "1",
		"-i", "leaf-1", "-u", "leaf-1", "-P", "leaf-secret", "-t", "devices/leaf-1/messages/events/", "-m", payload); err != nil {
		t.Fatalf("mosquitto_pub to the %s hub: %v\n%s", a.debArch, err, out)
	}
	deadline := time.After(60 * time.Second)
	for got := false; !got; {
		select {
		case l := <-sub.Lines:
			if strings.HasSuffix(l, " "+payload) {
				t.Logf("upstream got: %s", l)
				got = true
			}
		case <-deadline:
			t.Fatalf("%q did not reach the upstream broker; gateway output:\n%s", payload, gw.Output())
		}
	}

	// SIGTERM, as systemctl stop sends it, to the gateway (unshare's child).
	pid := childOf(t, cmd.Process.Pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("outpost run did not exit within 60 s of SIGTERM:\n%s", gw.Output())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("outpost run exited %d after SIGTERM:\n%s", code, gw.Output())
	}
	checkRemovePurge(t, root, deb, gwID)
	t.Logf("TestInstall32/%s total: %s", a.debArch, fmtDur(time.Since(start)))
}

// lookupID returns the numeric id of name in root's /etc/passwd or
// /etc/group (file).
func lookupID(t *testing.T, root, file, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc", file))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) > 2 && f[0] == name {
			return f[2]
		}
	}
	t.Fatalf("%s not in %s's /etc/%s", name, root, file)
	return ""
}

// childOf returns the pid of the only child of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := regexp.MustCompile(`\d+`).FindAllString(string(b), -1)
	if len(f) != 1 {
		t.Fatalf("pid %d has children %q, want one", pid, f)
	}
	c, _ := strconv.Atoi(f[0])
	return c
}
