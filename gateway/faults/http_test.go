package faults

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testToken = "faults-token-0123456789abcdef"

// apiCall sends method to the gateway's path with the given headers and
// body and returns the status and body.
func (g *gw) apiCall(method, path, body string, hdr map[string]string) (int, string) {
	g.t.Helper()
	req, err := http.NewRequest(method, "http://"+g.httpAddr+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// The HTTP API as a hostile web page or LAN host would use it: a command
// needs the bearer token, a JSON body and no foreign Origin; a body
// trickled at 1 byte/s is cut; a 100 MB body is refused unread; GETs on
// loopback need no token.
func TestFaultHTTPAPI(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, gwConfig{leaves: []string{"leaf-1"}, http: "  token_file: " + tokenFile + "\n"})
	g.start()
	const cmd = "/api/devices/leaf-1/commands"
	auth := "Bearer " + testToken
	json := "application/json"
	cases := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no token", map[string]string{"Content-Type": json}, http.StatusUnauthorized},
		{"wrong token", map[string]string{"Content-Type": json, "Authorization": "Bearer " + strings.Repeat("x", len(testToken))}, http.StatusUnauthorized},
		{"text/plain, as a page posts without a preflight", map[string]string{"Content-Type": "text/plain", "Authorization": auth}, http.StatusUnsupportedMediaType},
		{"no content type", map[string]string{"Authorization": auth}, http.StatusUnsupportedMediaType},
		{"foreign origin", map[string]string{"Content-Type": json, "Authorization": auth, "Origin": "http://evil.example"}, http.StatusForbidden},
		{"foreign origin without a token", map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"token, JSON, same origin", map[string]string{"Content-Type": json, "Authorization": auth, "Origin": "http://" + g.httpAddr}, http.StatusAccepted},
	}
	for _, tc := range cases {
		if code, body := g.apiCall("POST", cmd, `{"x":1}`, tc.hdr); code != tc.want {
			t.Errorf("%s: POST = %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
	if code, body := g.apiCall("GET", "/api/status", "", nil); code != 200 {
		t.Errorf("GET /api/status on loopback without a token = %d %q, want 200", code, body)
	}
	if code, body := g.apiCall("GET", "/api/status", "", map[string]string{"Origin": "http://evil.example"}); code != http.StatusForbidden {
		t.Errorf("GET /api/status from a foreign origin = %d %q, want 403", code, body)
	}

	// 100 MB announced: refused without reading it (the ledger reads at
	// most 64 KiB; the server may close before the upload ends).
	conn, err := net.Dial("tcp", g.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", cmd, g.httpAddr, auth, 100<<20)
	go func() { _, _ = conn.Write(make([]byte, 4<<20)) }()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("100 MB body: %v %v, want 413", resp, err)
	}
	conn.Close()

	// A body at 1 byte/s: the server cuts the connection.
	slow, err := net.Dial("tcp", g.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", cmd, g.httpAddr, auth)
	start := time.Now()
	cut := false
	for time.Since(start) < 25*time.Second {
		if _, err := slow.Write([]byte(" ")); err != nil {
			cut = true
			break
		}
		_ = slow.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := slow.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			cut = true
			break
		}
	}
	if !cut {
		t.Errorf("a body sent at 1 byte/s was still being read after %v", time.Since(start).Round(time.Second))
	} else {
		t.Logf("a body sent at 1 byte/s was cut after %v", time.Since(start).Round(time.Second))
	}
	if !g.alive() {
		t.Fatalf("gateway died:\n%s", g.proc.Output())
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Without http.token_file no command is taken over HTTP at all.
func TestFaultHTTPNoTokenNoCommands(t *testing.T) {
	g := newGateway(t, gwConfig{leaves: []string{"leaf-1"}})
	g.start()
	code, body := g.apiCall("POST", "/api/devices/leaf-1/commands", `{"x":1}`, map[string]string{"Content-Type": "application/json"})
	if code != http.StatusForbidden || !strings.Contains(body, "http.token_file") {
		t.Errorf("POST without a token file = %d %q, want 403 naming http.token_file", code, body)
	}
}

// `outpost check` refuses an HTTP listener off loopback without a token.
func TestCheckRefusesOpenHTTPWithoutToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		http string
		ok   bool
	}{
		{"  listen: 0.0.0.0:9180\n", false},
		{"  listen: :9180\n", false},
		{"  listen: 192.168.1.10:9180\n", false},
		{"  listen: 0.0.0.0:9180\n  token_file: " + tokenFile + "\n", true},
		{"  listen: 127.0.0.1:9180\n", true},
		{"  listen: \"[::1]:9180\"\n", true},
	} {
		cfg := filepath.Join(dir, "outpost.yaml")
		src := "gateway: {id: gw-1, data_dir: " + dir + "}\nhttp:\n" + tc.http
		if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "check", "-c", cfg).CombinedOutput()
		if ok := err == nil; ok != tc.ok {
			t.Errorf("outpost check with\n%s: ok %v, want %v:\n%s", tc.http, ok, tc.ok, out)
		} else if !tc.ok && !strings.Contains(string(out), "http.token_file") {
			t.Errorf("outpost check with\n%s: the refusal does not name http.token_file:\n%s", tc.http, out)
		}
	}
}
