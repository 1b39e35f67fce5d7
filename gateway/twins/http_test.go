package twins_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

func do(t *testing.T, srv *httptest.Server, method, path, ctype, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object", method, path, b)
	}
	return resp.StatusCode, out
}

// The API refuses what is not JSON (415), patches of anything but desired
// (400), bad method calls (400) and unknown devices (404), and serves the
// twin in IoT Hub's shape.
func TestHTTPRefusals(t *testing.T) {
	e := newEnv(t, t.TempDir(), nil)
	mux := http.NewServeMux()
	e.m.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		method, path, ctype, body string
		want                      int
	}{
		{"PATCH", "/api/devices/az-1/twin", "text/plain", `{"desired":{"a":1}}`, 415},
		{"PATCH", "/api/devices/az-1/twin", "", `{"desired":{"a":1}}`, 415},
		{"POST", "/api/devices/az-1/methods/reboot", "application/x-www-form-urlencoded", `a=1`, 415},
		{"PATCH", "/api/devices/az-1/twin", "application/json", `{"desired":{"a":1}`, 400},
		{"PATCH", "/api/devices/az-1/twin", "application/json", `{"reported":{"a":1}}`, 400},
		{"PATCH", "/api/devices/az-1/twin", "application/json", `{"desired":{"a":1},"tags":{}}`, 400},
		{"PATCH", "/api/devices/az-1/twin", "application/json", `{"desired":{"$bad":1}}`, 400},
		{"PATCH", "/api/devices/nobody/twin", "application/json", `{"desired":{"a":1}}`, 404},
		{"GET", "/api/devices/nobody/twin", "", ``, 404},
		{"POST", "/api/devices/az-1/methods/reboot", "application/json", `{"responseTimeoutInSeconds":4}`, 400},
		{"POST", "/api/devices/az-1/methods/reboot", "application/json", `{"responseTimeoutInSeconds":301}`, 400},
		{"POST", "/api/devices/az-1/methods/reboot", "application/json", `{"methodName":"other"}`, 400},
		{"POST", "/api/devices/az-1/methods/reboot", "application/json", `{"payload":"` + strings.Repeat("x", iothub.MaxMethodPayloadBytes) + `"}`, 413},
		{"POST", "/api/devices/az-1/methods/reboot", "application/json; charset=utf-8", `{"payload":{}}`, 404}, // not connected
	} {
		got, body := do(t, srv, c.method, c.path, c.ctype, c.body)
		if got != c.want || body["status"] != float64(c.want) || body["error"] == "" {
			t.Errorf("%s %s %q %.40s: %d %v, want %d", c.method, c.path, c.ctype, c.body, got, body, c.want)
		}
	}
	got, body := do(t, srv, "PATCH", "/api/devices/az-1/twin", "application/merge-patch+json", `{"desired":{"mode":"eco"}}`)
	if got != 200 {
		t.Fatalf("PATCH: %d %v", got, body)
	}
	got, body = do(t, srv, "GET", "/api/devices/az-1/twin", "", "")
	b, _ := json.Marshal(body)
	if got != 200 || string(b) != `{"desired":{"$version":2,"mode":"eco"},"reported":{"$version":1}}` {
		t.Errorf("GET twin: %d %s", got, b)
	}
}
