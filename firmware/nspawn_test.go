package firmware

import (
	"fmt"
	"io"
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

// container is a Debian root filesystem booted with systemd-nspawn -b: its
// own systemd as PID 1, a private network namespace reached only through
// the socat forwards the test sets up.
type container struct {
	t      *testing.T
	root   string
	nspawn *peertest.Proc
	leader int // host pid of the container's systemd
}

func bootNspawn(t *testing.T, root string) *container {
	t.Helper()
	cmd := exec.Command("systemd-nspawn", "-q", "-b", "-D", root,
		"--register=no", "--keep-unit", "--private-network", "--console=pipe",
		"--machine=outpost-boot-"+strconv.Itoa(os.Getpid()))
	c := &container{t: t, root: root, nspawn: peertest.Start(t, cmd, nil)}
	// Registered after peertest's SIGKILL cleanup, so it runs first: a clean
	// poweroff, and the SIGKILL is the fallback.
	t.Cleanup(c.poweroff)
	eventually(t, 30*time.Second, "container's systemd started", func() (bool, string) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false, "no child"
		}
		comm, _ := os.ReadFile("/proc/" + f[0] + "/comm")
		if strings.TrimSpace(string(comm)) != "systemd" {
			return false, "child is " + string(comm)
		}
		c.leader, _ = strconv.Atoi(f[0])
		return true, ""
	})
	return c
}

// exec runs args in every namespace of the container.
func (c *container) exec(args ...string) (string, error) {
	return runErr("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a"}, args...)...)
}

// netExec starts a long-running program in the container's network
// namespace only (it keeps the host's files, so it can use host sockets).
func (c *container) netExec(args ...string) *peertest.Proc {
	c.t.Helper()
	a := append([]string{"-t", strconv.Itoa(c.leader), "-n"}, args...)
	return peertest.Start(c.t, exec.Command("nsenter", a...), regexp.MustCompile(`listening on`))
}

func (c *container) unit() map[string]string {
	out, _ := c.exec("systemctl", "show", "outpost.service", "-p", "ActiveState,SubState,MainPID,NRestarts,StatusText,Result")
	return props(out)
}

func (c *container) journal() string {
	out, _ := c.exec("journalctl", "-u", "outpost.service", "--no-pager", "-o", "short-monotonic")
	return out
}

func (c *container) poweroff() {
	select {
	case <-c.nspawn.Done():
		return
	default:
	}
	if c.t.Failed() {
		c.t.Logf("journal of outpost.service:\n%s", c.journal())
	}
	_, _ = c.exec("systemctl", "poweroff")
	select {
	case <-c.nspawn.Done():
	case <-time.After(60 * time.Second):
		c.t.Errorf("container did not power off within 60 s")
	}
}

// forward makes the container's 127.0.0.1:inner reachable on the host's
// 127.0.0.1:outer (through a unix socket both namespaces see).
func (c *container) forward(sockDir string, inner, outer int) {
	c.t.Helper()
	sock := filepath.Join(sockDir, fmt.Sprintf("in-%d.sock", inner))
	c.netExec("socat", "-d", "-d", "UNIX-LISTEN:"+sock+",fork,unlink-early", fmt.Sprintf("TCP:127.0.0.1:%d", inner))
	peertest.Start(c.t, exec.Command("socat", "-d", "-d",
		fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", outer), "UNIX-CONNECT:"+sock),
		regexp.MustCompile(`listening on`))
}

// TestBootNspawn installs the amd64 .deb into Debian 12, boots it with
// systemd as PID 1 and checks the service as systemd runs it: READY=1,
// /healthz, a message from a leaf through the hub to a broker on the host,
// restart after kill -9, the watchdog (a stopped process, and a gateway
// stalled on an upstream that stopped reading), reload, and the package's
// remove/reinstall/purge cycle.
func TestBootNspawn(t *testing.T) {
	bootTest(t, "nspawn", "debootstrap", "systemd-nspawn", "nsenter", "unshare", "socat", "mosquitto_pub", "systemd-analyze")
	if hostArch() != "amd64" {
		t.Skipf("the nspawn boot test runs the amd64 .deb; this host is %s", hostArch())
	}
	start := time.Now()
	deb := debFor(t, "amd64", "amd64")
	root := rootfs(t, "amd64")
	installDeb(t, root, deb)
	checkInstalled(t, root)

	// The test's config: one leaf, the cloud at the container's
	// 127.0.0.1:11883, which is forwarded to Mosquitto on the host. A short
	// stall timeout, and a keepalive long enough that the link's own PUBACK
	// timeout (3 × keepalive) does not drop a stalled connection first.
	hash, err := bcrypt.GenerateFromPassword([]byte("leaf-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`# boot-test config
gateway:
  id: boot-gw
  data_dir: /var/lib/outpost
  stall_timeout: 5s
hub:
  listen: 127.0.0.1:1883
  clients:
    - id: leaf-1
      password_hash: %q
http:
  listen: 127.0.0.1:9180
cloud:
  protocol: mqtt
  url: mqtt://127.0.0.1:11883
  client_id: boot-gw
  keepalive: 60s
`, hash)
	if err := os.WriteFile(filepath.Join(root, "etc/outpost/outpost.yaml"), []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	mustChroot(t, root, "/usr/bin/outpost", "check", "-c", "/etc/outpost/outpost.yaml")
	// A short watchdog so the test can see it fire; the shipped unit has 30 s.
	dropin := filepath.Join(root, "etc/systemd/system/outpost.service.d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropin, "10-boot-test.conf"), []byte("[Service]\nWatchdogSec=4s\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	upstream := peertest.StartMosquitto(t)
	sub := upstream.Sub(t, "#")
	sockDir, err := os.MkdirTemp("", "obt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	upSock := filepath.Join(sockDir, "up.sock")
	peertest.Start(t, exec.Command("socat", "-d", "-d", "UNIX-LISTEN:"+upSock+",fork,unlink-early",
		"TCP:"+upstream.Addr), regexp.MustCompile(`listening on`))

	bootStart := time.Now()
	c := bootNspawn(t, root)
	c.netExec("socat", "-d", "-d", "TCP-LISTEN:11883,bind=127.0.0.1,fork,reuseaddr", "UNIX-CONNECT:"+upSock)

	// Type=notify: "active (running)" only after READY=1.
	eventually(t, 60*time.Second, "outpost.service active (running)", func() (bool, string) {
		u := c.unit()
		if u["ActiveState"] == "failed" {
			t.Fatalf("outpost.service failed: %v\n%s", u, c.journal())
		}
		return u["ActiveState"] == "active" && u["SubState"] == "running", fmt.Sprint(u)
	})
	boot := time.Since(bootStart)
	t.Logf("boot to active (running): %s", fmtDur(boot))
	first := c.unit()
	if j := c.journal(); !strings.Contains(j, "Started outpost.service") && !strings.Contains(j, "Started Outpost") {
		t.Errorf("journal has no start line:\n%s", j)
	}

	hubPort, httpPort := peertest.FreePort(t), peertest.FreePort(t)
	c.forward(sockDir, 1883, hubPort)
	c.forward(sockDir, 9180, httpPort)
	healthz := func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	}
	eventually(t, 20*time.Second, "/healthz answers 200", healthz)

	publish := func(payload string) {
		t.Helper()
		out, err := runErr("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(hubPort), "-q", "1",
			"-i", "leaf-1", "-u", "leaf-1", "-P", "leaf-secret",
			"-t", "devices/leaf-1/messages/events/", "-m", payload)
		if err != nil {
			t.Fatalf("mosquitto_pub to the hub: %v\n%s", err, out)
		}
	}
	// arrives waits until every payload has reached the upstream broker,
	// in any order.
	arrives := func(payloads ...string) {
		t.Helper()
		want := map[string]bool{}
		for _, p := range payloads {
			want[p] = true
		}
		deadline := time.After(60 * time.Second)
		for len(want) > 0 {
			select {
			case l := <-sub.Lines:
				if _, p, ok := strings.Cut(l, " "); ok && want[p] {
					t.Logf("upstream got: %s", l)
					delete(want, p)
				}
			case <-deadline:
				t.Fatalf("%v did not reach the upstream broker; unit %v\n%s", want, c.unit(), c.journal())
			}
		}
	}
	publish("hello-from-leaf-1")
	arrives("hello-from-leaf-1")

	// SIGHUP reload keeps the process and the service.
	if out, err := c.exec("systemctl", "reload", "outpost.service"); err != nil {
		t.Errorf("systemctl reload: %v\n%s", err, out)
	}
	eventually(t, 20*time.Second, "active (running) after reload", func() (bool, string) {
		u := c.unit()
		return u["ActiveState"] == "active" && u["SubState"] == "running", fmt.Sprint(u)
	})
	if u := c.unit(); u["MainPID"] != first["MainPID"] || u["NRestarts"] != "0" {
		t.Errorf("reload restarted the process: before %v, after %v", first, u)
	}

	// kill -9 of the main process: Restart=always brings it back.
	if out, err := c.exec("kill", "-9", first["MainPID"]); err != nil {
		t.Fatalf("kill -9: %v %s", err, out)
	}
	killed := time.Now()
	eventually(t, 30*time.Second, "restart after kill -9", func() (bool, string) {
		u := c.unit()
		return u["NRestarts"] == "1" && u["ActiveState"] == "active" && u["SubState"] == "running" &&
			u["MainPID"] != first["MainPID"], fmt.Sprint(u)
	})
	t.Logf("kill -9 to active (running) again: %s", fmtDur(time.Since(killed)))
	eventually(t, 20*time.Second, "/healthz after the restart", healthz)
	publish("after-kill-9")
	arrives("after-kill-9")

	// A stalled process sends no watchdog pings: systemd kills and restarts it.
	second := c.unit()
	if out, err := c.exec("kill", "-STOP", second["MainPID"]); err != nil {
		t.Fatalf("kill -STOP: %v %s", err, out)
	}
	stopped := time.Now()
	eventually(t, 30*time.Second, "watchdog restart of a stalled process", func() (bool, string) {
		u := c.unit()
		return u["NRestarts"] == "2" && u["SubState"] == "running" && u["MainPID"] != second["MainPID"], fmt.Sprint(u)
	})
	t.Logf("SIGSTOP to restarted by the watchdog (WatchdogSec=4s): %s", fmtDur(time.Since(stopped)))
	if j := c.journal(); !strings.Contains(j, "Watchdog timeout") {
		t.Errorf("journal has no watchdog timeout:\n%s", j)
	}
	eventually(t, 20*time.Second, "/healthz after the watchdog restart", healthz)

	// A stalled upstream: Mosquitto stops reading (SIGSTOP) while the link
	// is up. The messages the hub acknowledges stay queued with no upstream
	// PUBACK; after gateway.stall_timeout /healthz says why, the watchdog
	// is no longer fed and systemd restarts the gateway. The restarted one
	// finds the upstream unanswering (link down: healthy, no restart loop),
	// and once the upstream resumes everything acknowledged arrives.
	third := c.unit()
	upstream.Signal(syscall.SIGSTOP)
	upStopped := time.Now()
	var stalled []string
	for i := range 5 {
		p := fmt.Sprintf("while-upstream-stopped-%d", i)
		publish(p) // returns after the hub's PUBACK: stored
		stalled = append(stalled, p)
	}
	var why string
	eventually(t, 30*time.Second, "/healthz 503 naming the forwarding stall", func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		why = strings.TrimSpace(string(b))
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(why, "no upstream acknowledgement"), resp.Status + " " + why
	})
	t.Logf("upstream stopped to /healthz 503 (stall_timeout 5s): %s: %s", fmtDur(time.Since(upStopped)), why)
	eventually(t, 60*time.Second, "watchdog restart of the gateway stalled on its upstream", func() (bool, string) {
		u := c.unit()
		return u["NRestarts"] == "3" && u["SubState"] == "running" && u["MainPID"] != third["MainPID"], fmt.Sprint(u)
	})
	t.Logf("upstream stopped to restarted by the watchdog: %s", fmtDur(time.Since(upStopped)))
	if j := c.journal(); strings.Count(j, "Watchdog timeout") != 2 || !strings.Contains(j, "no upstream acknowledgement") {
		t.Errorf("journal lacks the second watchdog timeout or the logged stall:\n%s", j)
	}
	eventually(t, 30*time.Second, "/healthz after the restart with the upstream still stopped", healthz)
	upstream.Signal(syscall.SIGCONT)
	arrives(stalled...)
	t.Logf("upstream stopped to every acknowledged message delivered: %s", fmtDur(time.Since(upStopped)))
	if u := c.unit(); u["NRestarts"] != "3" {
		t.Errorf("restarted again after the upstream resumed: %v", u)
	}

	c.poweroff()
	t.Logf("boot, checks and poweroff: %s", fmtDur(time.Since(bootStart)))
	checkRemovePurge(t, root, deb, "boot-gw")
	t.Logf("TestBootNspawn total: %s", fmtDur(time.Since(start)))
}
