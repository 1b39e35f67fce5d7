package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

const twinLeafKey = "dHdpbi1sZWFmLWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=" // base64, the leaf's own key

// serverPKI writes a CA and a server certificate for 127.0.0.1 signed by
// it, and returns the CA file and the server's certificate and key files.
func serverPKI(t *testing.T) (ca, crt, key string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	return write("ca.crt", "CERTIFICATE", caDER), write("server.crt", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", kder)
}

// twinAPIToken is the HTTP API's bearer token in the twin tests (every
// mutating call needs one).
const twinAPIToken = "twin-test-token-0123456789"

// twinGW is a gateway with an SDK leaf az-1 on tls_listen and the HTTP API,
// on fixed ports so that it can be restarted in place.
type twinGW struct {
	dir, ca, crt, key string
	tlsAddr, httpAddr string
	g                 *Gateway
	stop              func()
}

func newTwinGW(t *testing.T) *twinGW {
	t.Helper()
	w := &twinGW{dir: t.TempDir()}
	w.ca, w.crt, w.key = serverPKI(t)
	w.tlsAddr = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	w.httpAddr = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	return w
}

// start runs the gateway (certFile, when not "", replaces the certificate
// file) and waits for Ready.
func (w *twinGW) start(t *testing.T, certFile string) {
	t.Helper()
	cfg := config.Default()
	cfg.Gateway.ID = "gw-twin"
	cfg.Gateway.DataDir = w.dir
	cfg.Hub.Listen = ""
	cfg.Hub.TLSListen = w.tlsAddr
	cfg.Hub.TLS.CertFile, cfg.Hub.TLS.KeyFile = w.crt, w.key
	if certFile != "" {
		cfg.Hub.TLS.CertFile = certFile
	}
	cfg.HTTP.Listen = w.httpAddr
	cfg.HTTP.TokenFile = filepath.Join(w.dir, "api.token")
	if err := os.WriteFile(cfg.HTTP.TokenFile, []byte(twinAPIToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Hub.Clients = []config.Client{{Client: hub.Client{ID: "az-1"}, Azure: &config.DeviceAzure{SharedAccessKey: twinLeafKey}}}
	g := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	stopped := false
	w.g = g
	w.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}
	t.Cleanup(w.stop)
}

// leaf starts testdata/twinleaf.js as az-1 with args.
func (w *twinGW) leaf(t *testing.T, args ...string) *peertest.Proc {
	t.Helper()
	return w.leafVia(t, w.tlsAddr, args...)
}

// leafVia is leaf with GatewayHostName=addr.
func (w *twinGW) leafVia(t *testing.T, addr string, args ...string) *peertest.Proc {
	t.Helper()
	sdk := peertest.NeedNodeSDK(t)
	conn := fmt.Sprintf("HostName=myhub.azure-devices.net;DeviceId=az-1;SharedAccessKey=%s;GatewayHostName=%s", twinLeafKey, addr)
	return peertest.Start(t, sdk.Command(filepath.Join("testdata", "twinleaf.js"), []string{"LEAF_CONN=" + conn, "LEAF_CA=" + w.ca}, args...), nil)
}

// api sends an HTTP request with a JSON body (when body is not "") and
// returns the status and the decoded JSON answer.
func (w *twinGW) api(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://"+w.httpAddr+path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+twinAPIToken)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

// leafEvent waits for the leaf's next line matching ev (after the first
// skip such lines) and returns it decoded.
func leafEvent(t *testing.T, l *peertest.Proc, ev string, n int) map[string]any {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\{"ev":"` + ev + `".*$`)
	deadline := time.Now().Add(60 * time.Second)
	exited := false
	for time.Now().Before(deadline) {
		if ms := re.FindAllString(l.Output(), -1); len(ms) >= n {
			var m map[string]any
			if err := json.Unmarshal([]byte(ms[n-1]), &m); err != nil {
				t.Fatalf("leaf printed %q: %v", ms[n-1], err)
			}
			return m
		}
		if exited {
			t.Fatalf("leaf exited before its %s event #%d:\n%s", ev, n, l.Output())
		}
		select {
		case <-l.Done():
			l.Exited() // all output read
			exited = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %s event #%d from the leaf:\n%s", ev, n, l.Output())
	return nil
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Microsoft's Node.js SDK as a leaf: getTwin answers with a desired change
// made before the leaf ever connected, a reported update is answered and
// kept pending for upstream, a desired PATCH on the HTTP API reaches the
// leaf's properties.desired handler, and direct methods from the HTTP API
// are answered (200), time out (504) and fail at once for an offline leaf
// (404).
func TestSDKLeafTwinAndMethods(t *testing.T) {
	peertest.NeedNodeSDK(t)
	w := newTwinGW(t)
	w.start(t, "")
	if st, body := w.api(t, "PATCH", "/api/devices/az-1/twin", `{"desired":{"interval":5}}`); st != 200 {
		t.Fatalf("PATCH before the leaf connected: %d %v", st, body)
	}
	l := w.leaf(t, "twin", `report:{"fw":"1.0","temp":21.5}`, "wait")
	tw := leafEvent(t, l, "twin", 1)
	if d := tw["desired"].(map[string]any); d["interval"] != float64(5) || d["$version"] != float64(2) {
		t.Errorf("getTwin: %v", tw)
	}
	leafEvent(t, l, "reported", 1)
	st, body := w.api(t, "GET", "/api/devices/az-1/twin", "")
	if rep := body["reported"].(map[string]any); st != 200 || rep["fw"] != "1.0" || rep["temp"] != 21.5 || rep["$version"] != float64(2) {
		t.Errorf("GET twin after the reported update: %d %v", st, body)
	}
	if ts := w.g.Status().Twins; len(ts) != 1 || ts[0].PendingUpstream != 1 || ts[0].ReportedVersion != 2 || ts[0].SeenVersion != 2 {
		t.Errorf("status twins %+v: want the reported patch pending upstream", ts)
	}
	leafEvent(t, l, "waiting", 1)
	if st, body := w.api(t, "PATCH", "/api/devices/az-1/twin", `{"desired":{"interval":10,"mode":"eco"}}`); st != 200 {
		t.Fatalf("PATCH: %d %v", st, body)
	}
	// Desired event 1 is the SDK's own, for the twin it read.
	if p := leafEvent(t, l, "desired", 2)["patch"].(map[string]any); p["interval"] != float64(10) || p["mode"] != "eco" || p["$version"] != float64(3) {
		t.Errorf("desired update at the leaf: %v", p)
	}

	st, body = w.api(t, "POST", "/api/devices/az-1/methods/echo", `{"payload":{"x":[1,"two"]},"responseTimeoutInSeconds":10}`)
	if st != 200 || js(body) != `{"payload":{"echo":{"x":[1,"two"]}},"status":200}` {
		t.Errorf("echo: %d %s", st, js(body))
	}
	if m := leafEvent(t, l, "method", 1); m["name"] != "echo" || js(m["payload"]) != `{"x":[1,"two"]}` {
		t.Errorf("the leaf got %v", m)
	}
	start := time.Now()
	st, body = w.api(t, "POST", "/api/devices/az-1/methods/slow", `{"responseTimeoutInSeconds":5}`)
	if el := time.Since(start); st != 504 || el < 5*time.Second || el > 20*time.Second {
		t.Errorf("slow: %d %v after %v, want 504 after 5 s", st, body, el)
	}
	leafEvent(t, l, "method", 2)

	l.Kill()
	<-l.Done()
	deadline := time.Now().Add(10 * time.Second)
	for w.g.hub().Subscribed("az-1", iothub.MethodRequestFilter) {
		if time.Now().After(deadline) {
			t.Fatal("the killed leaf still counts as connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start = time.Now()
	st, body = w.api(t, "POST", "/api/devices/az-1/methods/echo", `{"payload":1}`)
	if st != 404 || time.Since(start) > 2*time.Second {
		t.Errorf("echo to an offline leaf: %d %v after %v, want 404 at once", st, body, time.Since(start))
	}
}

// A desired change made while the leaf is cut off (the gateway up, the
// leaf's connection gone) reaches the running SDK leaf when it reconnects:
// the hub resumes its session, subscriptions and all, and the twins send
// one patch from the version it saw to the one desired now.
func TestSDKLeafDesiredAfterReconnect(t *testing.T) {
	peertest.NeedNodeSDK(t)
	w := newTwinGW(t)
	w.start(t, "")
	px := peertest.StartProxy(t, w.tlsAddr)
	l := w.leafVia(t, px.Addr, "twin", "wait")
	leafEvent(t, l, "waiting", 1)
	px.Cut()
	waitNot(t, "the cut leaf to count as gone", func() bool { return w.g.hub().Subscribed("az-1", iothub.TwinDesiredFilter) })
	if st, body := w.api(t, "PATCH", "/api/devices/az-1/twin", `{"desired":{"mode":"eco","rate":5}}`); st != 200 {
		t.Fatalf("PATCH while the leaf is away: %d %v", st, body)
	}
	w.api(t, "PATCH", "/api/devices/az-1/twin", `{"desired":{"rate":null}}`)
	px.Restore()
	// Desired event 1 is the SDK's own, for the twin it read.
	if p := leafEvent(t, l, "desired", 2)["patch"]; js(p) != `{"$version":3,"mode":"eco"}` {
		t.Errorf("after reconnecting the leaf got %s, want one patch to version 3", js(p))
	}
	if ts := w.g.Status().Twins; len(ts) != 1 || ts[0].SeenVersion != 3 || ts[0].DesiredVersion != 3 {
		t.Errorf("status twins %+v", ts)
	}
}

func waitNot(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Across a gateway restart the twin is answered from the store, on the
// HTTP API while the hub cannot start yet and to the SDK leaf once it can,
// with a desired change made while the hub was down.
func TestSDKLeafTwinAcrossRestart(t *testing.T) {
	peertest.NeedNodeSDK(t)
	w := newTwinGW(t)
	w.start(t, "")
	l := w.leaf(t, "twin", `report:{"a":1,"net":{"ssid":"x"}}`)
	leafEvent(t, l, "done", 1)
	w.stop()

	// The hub cannot start while its certificate is missing; the gateway
	// runs, and the operator changes the desired properties meanwhile.
	cert := filepath.Join(t.TempDir(), "server.crt")
	w.start(t, cert)
	if w.g.hub() != nil {
		t.Fatal("the hub started without its certificate")
	}
	st, body := w.api(t, "GET", "/api/devices/az-1/twin", "")
	if rep := body["reported"].(map[string]any); st != 200 || rep["a"] != float64(1) || rep["$version"] != float64(2) {
		t.Fatalf("GET after restart: %d %v", st, body)
	}
	if st, body := w.api(t, "PATCH", "/api/devices/az-1/twin", `{"desired":{"mode":"eco"}}`); st != 200 {
		t.Fatalf("PATCH while the hub is down: %d %v", st, body)
	}
	b, err := os.ReadFile(w.crt)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, b, 0o600); err != nil {
		t.Fatal(err)
	}
	waitNot(t, "the hub to start with its certificate back", func() bool { return w.g.hub() == nil })
	l2 := w.leaf(t, "twin")
	tw := leafEvent(t, l2, "twin", 1)
	if js(tw["reported"]) != `{"$version":2,"a":1,"net":{"ssid":"x"}}` || js(tw["desired"]) != `{"$version":2,"mode":"eco"}` {
		t.Errorf("getTwin after the restart: %s", js(tw))
	}
	leafEvent(t, l2, "done", 1)
	if ts := w.g.Status().Twins; len(ts) != 1 || ts[0].PendingUpstream != 1 || ts[0].SeenVersion != 2 {
		t.Errorf("status twins %+v", ts)
	}
}
