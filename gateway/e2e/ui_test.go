package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// chromium runs Debian's headless Chromium with args and the flags this
// closed machine needs, and returns its stdout.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin := peertest.Need(t, "chromium")
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000"}
	cmd := exec.Command(bin, append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("chromium hung; stderr:\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// The status page, loaded by a real browser from a running gateway, shows
// the device list and the queue depth. A screenshot is kept as a test
// artefact in $OUTPOST_ARTIFACTS (default: a temp dir), never committed.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	link := peertest.StartProxy(t, up.Addr)
	link.Cut() // the queue grows, so the page has a depth to show
	g := newGatewayWith(t, link.Addr, simDevices("meter-1", "meter-2"))
	g.start()
	g.waitStatus("a queue", 10*time.Second, func(st gateway.Status) bool { return st.Queue.Depth >= 5 })

	dom := chromium(t, "--dump-dom", "http://"+g.http+"/")
	for _, want := range []string{"meter-1", "meter-2", "gw-e2e"} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	m := regexp.MustCompile(`id="depth">(\d+)<`).FindStringSubmatch(dom)
	if m == nil || m[1] == "0" {
		t.Errorf("status page shows no queue depth (want > 0): %v", m)
	}
	if !regexp.MustCompile(`id="link"><span class="down">down`).MatchString(dom) {
		t.Errorf("status page does not show the link down")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	dir := os.Getenv("OUTPOST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "outpost-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "status-page.png")
	chromium(t, "--screenshot="+shot, "--window-size=1200,900", "http://"+g.http+"/")
	fi, err := os.Stat(shot)
	if err != nil || fi.Size() < 5000 {
		t.Fatalf("screenshot %s: %v (size %v)", shot, err, fi)
	}
	t.Logf("screenshot: %s", shot)
}
