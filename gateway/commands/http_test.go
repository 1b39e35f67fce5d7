package commands

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The command API: 404 for a device the gateway does not have, 202 for a
// new command, 200 for a duplicate id, 400 for a bad ttl, and GET shows the
// state and, once final, the result.
func TestHTTPCommands(t *testing.T) {
	r := newRig(t, time.Minute)
	a := &fakeAdapter{}
	r.f.adapters["plc-1"] = a
	mux := http.NewServeMux()
	r.l.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("POST", "/api/devices/nobody/commands", `{"write":{"x":1}}`); code != http.StatusNotFound {
		t.Errorf("unknown device: %d %s", code, body)
	}
	if code, body := do("POST", "/api/devices/plc-1/commands?ttl=soon", `{"write":{"x":1}}`); code != http.StatusBadRequest {
		t.Errorf("bad ttl: %d %s", code, body)
	}
	code, body := do("POST", "/api/devices/plc-1/commands?id=h1&ttl=30s", `{"write":{"x":1}}`)
	if code != http.StatusAccepted || !strings.Contains(body, `"id":"h1"`) || !strings.Contains(body, `"duplicate":false`) {
		t.Fatalf("post: %d %s", code, body)
	}
	if code, body := do("POST", "/api/devices/plc-1/commands?id=h1", `{"write":{"x":1}}`); code != http.StatusOK || !strings.Contains(body, `"duplicate":true`) {
		t.Errorf("duplicate: %d %s", code, body)
	}
	r.waitFinal(t, "h1", 5*time.Second)
	code, body = do("GET", "/api/commands/h1", "")
	var got struct {
		State  string
		Result struct{ Status string }
	}
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil || got.State != "done" || got.Result.Status != "done" {
		t.Errorf("get: %d %s (%v)", code, body, err)
	}
	if code, _ := do("GET", "/api/commands/nope", ""); code != http.StatusNotFound {
		t.Errorf("get unknown: %d", code)
	}
	// A generated id when none is given.
	code, body = do("POST", "/api/devices/plc-1/commands", `{"write":{"x":2}}`)
	if code != http.StatusAccepted || strings.Contains(body, `"id":""`) {
		t.Errorf("post without id: %d %s", code, body)
	}
}
