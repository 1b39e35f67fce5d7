package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

var (
	bin  string // the outpost binary under test
	soak = os.Getenv("OUTPOST_SOAK") == "1"
)

func TestMain(m *testing.M) {
	peertest.RunWithOutpost(m, func(b string) { bin = b })
}

// rng returns a random source for a test, seeded from OUTPOST_SEED or the
// clock; the seed is logged so a failing run can be repeated.
func rng(t *testing.T) *rand.Rand {
	seed, err := strconv.ParseUint(os.Getenv("OUTPOST_SEED"), 10, 64)
	if err != nil {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("OUTPOST_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, 0x0f0))
}

// pick returns short, or long under OUTPOST_SOAK=1.
func pick[T any](short, long T) T {
	if soak {
		return long
	}
	return short
}

// rounds returns the number of fault rounds: OUTPOST_ROUNDS when set, else
// short or, under OUTPOST_SOAK=1, long.
func rounds(short, long int) int {
	if n, err := strconv.Atoi(os.Getenv("OUTPOST_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return pick(short, long)
}

// password is every test leaf's password.
func password(id string) string { return "pw-" + id }

// gwConfig is what a test varies in the gateway's config.
type gwConfig struct {
	cloud   string   // upstream host:port; "" = protocol none
	dataDir string   // "" = a temp dir
	store   string   // YAML lines under store:, each indented two spaces
	hub     string   // YAML lines under hub:
	http    string   // YAML lines under http: besides listen
	leaves  []string // device ids, password password(id)
}

// gw is one outpost daemon under test, restartable.
type gw struct {
	t        *testing.T
	cfg      gwConfig
	dataDir  string
	cfgPath  string
	hubAddr  string
	httpAddr string
	proc     *peertest.Proc
	starts   int
}

func newGateway(t *testing.T, c gwConfig) *gw {
	t.Helper()
	dir := t.TempDir()
	g := &gw{t: t, cfg: c, dataDir: c.dataDir}
	if g.dataDir == "" {
		g.dataDir = filepath.Join(dir, "data")
	}
	g.hubAddr = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	g.httpAddr = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	var b strings.Builder
	fmt.Fprintf(&b, "gateway:\n  id: gw-faults\n  data_dir: %s\n", g.dataDir)
	fmt.Fprintf(&b, "hub:\n  listen: %s\n%s  clients:\n", g.hubAddr, c.hub)
	for _, id := range c.leaves {
		h, err := bcrypt.GenerateFromPassword([]byte(password(id)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "    - id: %s\n      password_hash: %q\n", id, h)
	}
	fmt.Fprintf(&b, "http:\n  listen: %s\n%s", g.httpAddr, c.http)
	if c.store != "" {
		fmt.Fprintf(&b, "store:\n%s", c.store)
	}
	if c.cloud == "" {
		b.WriteString("cloud:\n  protocol: none\n")
	} else {
		fmt.Fprintf(&b, "cloud:\n  protocol: mqtt\n  url: mqtt://%s\n  client_id: gw-faults\n", c.cloud)
	}
	g.cfgPath = filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(g.cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// launch starts the process without waiting.
func (g *gw) launch() {
	g.t.Helper()
	g.starts++
	args := []string{"run", "-c", g.cfgPath}
	if lv := os.Getenv("OUTPOST_LOG_LEVEL"); lv != "" { // e.g. debug, to see why a test failed
		args = append(args, "--log-level", lv)
	}
	g.proc = peertest.Start(g.t, exec.Command(bin, args...), nil)
}

// start runs `outpost run` and waits until /healthz answers 200.
func (g *gw) start() {
	g.t.Helper()
	g.launch()
	if code, body := g.awaitHTTP(30 * time.Second); code != 200 {
		g.t.Fatalf("outpost start %d: /healthz %d %q\n%s", g.starts, code, body, g.proc.Output())
	}
}

// awaitHTTP waits for the first answer of /healthz (any status), failing
// the test when the process exits first or nothing answers within d.
func (g *gw) awaitHTTP(d time.Duration) (int, string) {
	g.t.Helper()
	deadline := time.Now().Add(d)
	c := http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-g.proc.Done():
			g.t.Fatalf("outpost exited during start %d:\n%s", g.starts, g.proc.Output())
		default:
		}
		resp, err := c.Get("http://" + g.httpAddr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 || !strings.Contains(string(body), "starting") {
				return resp.StatusCode, strings.TrimSpace(string(body))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.t.Fatalf("outpost start %d: no /healthz answer within %v:\n%s", g.starts, d, g.proc.Output())
	return 0, ""
}

// health returns /healthz's status and body now.
func (g *gw) health() (int, string) {
	g.t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + g.httpAddr + "/healthz")
	if err != nil {
		g.t.Fatalf("/healthz: %v\n%s", err, g.proc.Output())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// status returns /api/status.
func (g *gw) status() gateway.Status {
	g.t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + g.httpAddr + "/api/status")
	if err != nil {
		g.t.Fatalf("/api/status: %v\n%s", err, g.proc.Output())
	}
	defer resp.Body.Close()
	var st gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		g.t.Fatalf("/api/status: %v", err)
	}
	return st
}

// metric returns the value of a counter or gauge on /metrics (-1 when it
// is not there).
func (g *gw) metric(name string) float64 {
	g.t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + g.httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return -1
}

// alive reports whether the current process is still running.
func (g *gw) alive() bool {
	select {
	case <-g.proc.Done():
		return false
	default:
		return true
	}
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (g *gw) kill9() { g.proc.Kill() }

// term sends SIGTERM and waits for a clean exit.
func (g *gw) term() {
	g.t.Helper()
	g.proc.Signal(syscall.SIGTERM)
	select {
	case <-g.proc.Done():
	case <-time.After(20 * time.Second):
		g.t.Fatalf("outpost did not exit within 20 s of SIGTERM:\n%s", g.proc.Output())
	}
	if st := g.proc.Cmd.ProcessState; st != nil && !st.Success() {
		g.t.Errorf("outpost exited with %v after SIGTERM:\n%s", st, g.proc.Output())
	}
}

// peakRSSMiB returns the process's VmHWM, or 0 when it cannot be read.
func (g *gw) peakRSSMiB() float64 {
	return vmHWM(g.proc.Cmd.Process.Pid)
}

func vmHWM(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// awaitDrained waits until the gateway reports an empty queue.
func (g *gw) awaitDrained(d time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if st := g.status(); st.Queue.Depth == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.t.Errorf("queue not empty after %v: %+v", d, g.status().Queue)
}
