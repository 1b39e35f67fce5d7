// Package e2e tests the built outpost binary as a child process against real
// peers: Mosquitto as the upstream, mosquitto_pub/sub as leaves and cloud.
package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

var bin string // the outpost binary under test

func TestMain(m *testing.M) {
	peertest.RunWithOutpost(m, func(b string) { bin = b })
}

// leaf is a configured MQTT client: a leaf device, or an operator.
type leaf struct {
	id, password string
	operator     bool
}

// gw is one outpost daemon under test.
type gw struct {
	t       *testing.T
	dir     string
	cfgPath string
	hub     string // host:port
	http    string
	proc    *peertest.Proc
}

// apiToken is every test gateway's HTTP bearer token.
const apiToken = "e2e-token-0123456789abcdef"

// tokenFile writes apiToken to a file in g's dir and returns its path.
func (g *gw) tokenFile() string {
	g.t.Helper()
	p := filepath.Join(g.dir, "http-token")
	if err := os.WriteFile(p, []byte(apiToken+"\n"), 0o600); err != nil {
		g.t.Fatal(err)
	}
	return p
}

// postJSON POSTs a JSON body to the gateway's API with the bearer token.
func (g *gw) postJSON(path, body string) (*http.Response, error) {
	req, err := http.NewRequest("POST", "http://"+g.http+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiToken)
	return http.DefaultClient.Do(req)
}

// newGateway writes a config for leaves and an upstream at cloudAddr.
func newGateway(t *testing.T, cloudAddr string, leaves ...leaf) *gw {
	return newGatewayWith(t, cloudAddr, "", leaves...)
}

// newGatewayWith is newGateway with extra top-level YAML (devices, commands).
func newGatewayWith(t *testing.T, cloudAddr, extra string, leaves ...leaf) *gw {
	t.Helper()
	g := &gw{t: t, dir: t.TempDir()}
	g.hub = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	g.http = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	var clients strings.Builder
	for _, l := range leaves {
		h, err := bcrypt.GenerateFromPassword([]byte(l.password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&clients, "    - id: %s\n      password_hash: %q\n      operator: %v\n", l.id, h, l.operator)
	}
	cfg := fmt.Sprintf(`gateway:
  id: gw-e2e
  data_dir: %s
hub:
  listen: %s
  clients:
%shttp:
  listen: %s
  token_file: %s
cloud:
  protocol: mqtt
  url: mqtt://%s
  client_id: gw-e2e
%s`, filepath.Join(g.dir, "data"), g.hub, clients.String(), g.http, g.tokenFile(), cloudAddr, extra)
	g.cfgPath = filepath.Join(g.dir, "outpost.yaml")
	if err := os.WriteFile(g.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// start runs `outpost run` and waits until /healthz answers 200.
func (g *gw) start() {
	g.t.Helper()
	g.proc = peertest.Start(g.t, exec.Command(bin, "run", "-c", g.cfgPath, "--log-level", "debug"), nil)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.proc.Done():
			g.t.Fatalf("outpost exited during start:\n%s", g.proc.Output())
		default:
		}
		resp, err := http.Get("http://" + g.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.t.Fatalf("outpost not healthy within 15 s:\n%s", g.proc.Output())
}

// status fetches /api/status.
func (g *gw) status() gateway.Status {
	g.t.Helper()
	var st gateway.Status
	resp, err := http.Get("http://" + g.http + "/api/status")
	if err != nil {
		g.t.Fatalf("status: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		g.t.Fatalf("status: %v", err)
	}
	return st
}

// waitStatus polls /api/status until ok returns true.
func (g *gw) waitStatus(what string, d time.Duration, ok func(gateway.Status) bool) gateway.Status {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := g.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out after %v waiting for %s; status %+v\noutpost log:\n%s", d, what, st, g.proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to exit.
func (g *gw) stop(sig os.Signal) {
	g.t.Helper()
	_ = g.proc.Cmd.Process.Signal(sig)
	select {
	case <-g.proc.Done():
	case <-time.After(10 * time.Second):
		g.t.Fatalf("outpost did not exit within 10 s of %v:\n%s", sig, g.proc.Output())
	}
}

// pub runs mosquitto_pub as a leaf and returns its exit error and output.
func (g *gw) pub(l leaf, topic, payload string, extra ...string) (string, error) {
	g.t.Helper()
	host, port, _ := strings.Cut(g.hub, ":")
	args := append([]string{"-h", host, "-p", port, "-q", "1", "-i", l.id, "-u", l.id, "-P", l.password,
		"-t", topic, "-m", payload, "-d"}, extra...)
	cmd := exec.Command(peertest.Need(g.t, "mosquitto_pub"), args...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		return string(out), fmt.Errorf("mosquitto_pub hung (no PUBACK)")
	}
	return string(out), err
}

// expectLine waits for a line from sub matching re.
func expectLine(t *testing.T, sub *peertest.Proc, re *regexp.Regexp, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case line := <-sub.Lines:
			if re.MatchString(line) {
				return line
			}
		case <-deadline:
			t.Fatalf("no line matching %q within %v; subscriber saw:\n%s", re, d, sub.Output())
			return ""
		}
	}
}

// expectNoLine fails if a line matching re arrives within d.
func expectNoLine(t *testing.T, sub *peertest.Proc, re *regexp.Regexp, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case line := <-sub.Lines:
			if re.MatchString(line) {
				t.Fatalf("unexpected line %q", line)
			}
		case <-deadline:
			return
		}
	}
}

var syscallKILL = syscall.SIGKILL
