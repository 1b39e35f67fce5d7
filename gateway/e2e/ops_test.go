package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

func simDevices(ids ...string) string {
	var b strings.Builder
	b.WriteString("devices:\n")
	for _, id := range ids {
		name, interval, _ := strings.Cut(id, "@")
		if interval == "" {
			interval = "100ms"
		}
		fmt.Fprintf(&b, "  - id: %s\n    sim: {interval: %s}\n", name, interval)
	}
	return b.String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /metrics is valid Prometheus text with the queue, link, hub and
// per-device figures.
func TestMetrics(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	g := newGatewayWith(t, up.Addr, simDevices("meter-1"), leaf1)
	g.start()
	g.waitStatus("readings", 10*time.Second, func(st gateway.Status) bool { return st.Stored > 3 })
	code, body := get(t, "http://"+g.http+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, name := range []string{"outpost_store_depth", "outpost_store_appends_total", "outpost_store_commit_seconds",
		"outpost_link_up", "outpost_link_forwarded_total", "outpost_hub_clients_connected", "outpost_healthy",
		"outpost_device_health", "outpost_device_readings_total", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	if f := fams["outpost_device_readings_total"]; f != nil {
		m := f.GetMetric()
		if len(m) != 1 || m[0].GetLabel()[0].GetValue() != "meter-1" || m[0].GetCounter().GetValue() < 3 {
			t.Errorf("outpost_device_readings_total = %v", m)
		}
	}
	if f := fams["outpost_healthy"]; f != nil && f.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("outpost_healthy = %v, want 1", f.GetMetric()[0])
	}

	// outpost status prints the same picture from the running daemon.
	out, err := exec.Command(bin, "status", "--http", g.http).CombinedOutput()
	if err != nil {
		t.Fatalf("outpost status: %v\n%s", err, out)
	}
	for _, re := range []string{`(?m)^gateway\s+gw-e2e: healthy$`, `(?m)^queue\s+\d+ records`, `(?m)^link\s+mqtt up since`,
		`(?m)^device\s+meter-1\s+sim\s+ok\s+last \S+ ago, \d+ readings$`} {
		if !regexp.MustCompile(re).Match(out) {
			t.Errorf("outpost status lacks %s:\n%s", re, out)
		}
	}
	if out, err := exec.Command(bin, "status", "--http", "127.0.0.1:1").CombinedOutput(); err == nil || !strings.Contains(string(out), "is the daemon running") {
		t.Errorf("outpost status without a daemon: %v\n%s", err, out)
	}
}

// /healthz answers 503 with the reason while the hub cannot listen, and
// 200 once it can; the gateway keeps running meanwhile.
func TestHealthzHubCannotListen(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	g := newGateway(t, up.Addr, leaf1)
	squatter, err := net.Listen("tcp", g.hub)
	if err != nil {
		t.Fatal(err)
	}
	g.proc = peertest.Start(t, exec.Command(bin, "run", "-c", g.cfgPath), nil)
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + g.http + "/healthz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 503 {
				body = string(b)
				break
			}
			t.Fatalf("/healthz = %d while the hub port is taken", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /healthz answer: %v\n%s", err, g.proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(body, "hub") || !strings.Contains(body, "address already in use") {
		t.Errorf("503 body does not say why: %q", body)
	}
	squatter.Close()
	g.waitStatus("the hub to start after the port is free", 20*time.Second, func(st gateway.Status) bool { return st.Healthy })
	if out, err := g.pub(leaf1, "devices/leaf-1/messages/events/", "x"); err != nil {
		t.Fatalf("publish after recovery: %v\n%s", err, out)
	}
}

// A store corrupted while the gateway was stopped is quarantined: the
// gateway runs on a fresh store, takes messages, and /healthz says 503
// naming the quarantine.
func TestHealthzQuarantine(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	g := newGateway(t, up.Addr, leaf1)
	g.start()
	g.stop(syscall.SIGTERM)
	manifest := filepath.Join(g.dir, "data", "queue", "MANIFEST")
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+8 && i < len(b); i++ {
		b[i] ^= 0xa5
	}
	if err := os.WriteFile(manifest, b, 0o644); err != nil {
		t.Fatal(err)
	}
	g.proc = peertest.Start(t, exec.Command(bin, "run", "-c", g.cfgPath), nil)
	st := g.waitStatusSoft(10*time.Second, func(st gateway.Status) bool {
		return len(st.Problems) > 0 && !strings.Contains(strings.Join(st.Problems, ""), "starting")
	})
	if st.Healthy || !strings.Contains(strings.Join(st.Problems, " "), "quarantine") {
		t.Fatalf("status after corruption = %+v, want unhealthy naming the quarantine", st)
	}
	code, body := get(t, "http://"+g.http+"/healthz")
	if code != 503 || !strings.Contains(body, "quarantine") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if m, _ := filepath.Glob(filepath.Join(g.dir, "data", "quarantine-*")); len(m) != 1 {
		t.Errorf("quarantine dirs = %v", m)
	}
	sub := up.Sub(t, "devices/#")
	if out, err := g.pub(leaf1, "devices/leaf-1/messages/events/$.mid=after-q", "y"); err != nil {
		t.Fatalf("publish on the fresh store: %v\n%s", err, out)
	}
	expectLine(t, sub, regexp.MustCompile(`after-q`), 10*time.Second)
}

// waitStatusSoft is waitStatus for a gateway that may not answer /api/status at first.
func (g *gw) waitStatusSoft(d time.Duration, ok func(gateway.Status) bool) gateway.Status {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for {
		resp, err := http.Get("http://" + g.http + "/api/status")
		if err == nil {
			resp.Body.Close()
			if st := g.status(); ok(st) || time.Now().After(deadline) {
				return st
			}
		} else if time.Now().After(deadline) {
			g.t.Fatalf("no status within %v: %v\n%s", d, err, g.proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
