package twins

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// maxBody bounds a request body of the API: a method payload of 128 KB
// with its envelope, or a desired patch.
const maxBody = iothub.MaxMethodPayloadBytes + 4<<10

// Register adds the twin and method API to mux, with the shapes of IoT
// Hub's service API:
//
//	GET   /api/devices/{id}/twin            the twin
//	PATCH /api/devices/{id}/twin            {"desired":{...}}: merge into desired
//	POST  /api/devices/{id}/methods/{name}  {"payload":...,"responseTimeoutInSeconds":N}
//
// Bodies must be JSON (Content-Type application/json, else 415). Errors
// answer {"error":"...","status":N} with N as the HTTP status.
func (m *Manager) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/devices/{id}/twin", m.getTwin)
	mux.HandleFunc("PATCH /api/devices/{id}/twin", m.patchTwin)
	mux.HandleFunc("POST /api/devices/{id}/methods/{name}", m.postMethod)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	status := iothub.StatusOf(err)
	var he *iothub.Error
	if !errors.As(err, &he) {
		status = http.StatusInternalServerError
		if errors.Is(err, errUnavailable) {
			status = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, map[string]any{"error": err.Error(), "status": status})
}

var errUnavailable = errors.New("twins: request ended")

// readJSON reads a JSON request body, or answers 415 or 413 and returns
// false.
func readJSON(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]any{
			"error": fmt.Sprintf("Content-Type %q: want application/json", r.Header.Get("Content-Type")), "status": http.StatusUnsupportedMediaType})
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, errorf(iothub.StatusBadRequest, "reading the body: %v", err))
		return nil, false
	}
	if len(b) > maxBody {
		writeError(w, errorf(iothub.StatusTooLarge, "body larger than %d bytes", maxBody))
		return nil, false
	}
	return b, true
}

// getTwin is GET /api/devices/{id}/twin.
func (m *Manager) getTwin(w http.ResponseWriter, r *http.Request) {
	t, err := m.Twin(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// patchTwin is PATCH /api/devices/{id}/twin with {"desired":{...}}: the
// operator acting as the cloud. It answers 200 with the twin once the
// patch is durable (and sent to the leaf if it is subscribed).
func (m *Manager) patchTwin(w http.ResponseWriter, r *http.Request) {
	b, ok := readJSON(w, r)
	if !ok {
		return
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(b, &body); err != nil {
		writeError(w, errorf(iothub.StatusBadRequest, "malformed JSON: %v", err))
		return
	}
	raw, ok := body["desired"]
	if !ok || len(body) != 1 {
		writeError(w, errorf(iothub.StatusBadRequest, `want {"desired":{...}}: only desired properties can be patched (reported ones are the device's)`))
		return
	}
	p, err := iothub.ParsePatch(raw)
	if err != nil {
		writeError(w, err)
		return
	}
	t, err := m.PatchDesired(r.Context(), r.PathValue("id"), p, 0)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// postMethod is POST /api/devices/{id}/methods/{name}: 200 with
// {"status":<leaf status>,"payload":<leaf payload>}, 404 when the leaf is
// not connected, 504 when it does not answer in time.
func (m *Manager) postMethod(w http.ResponseWriter, r *http.Request) {
	b, ok := readJSON(w, r)
	if !ok {
		return
	}
	c, err := iothub.ParseMethodCall(b)
	if err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("name")
	if c.Name != "" && c.Name != name {
		writeError(w, errorf(iothub.StatusBadRequest, "methodName %q in the body differs from %q in the path", c.Name, name))
		return
	}
	c.Name = name
	res, err := m.Call(r.Context(), r.PathValue("id"), c)
	if err != nil {
		if r.Context().Err() != nil {
			err = fmt.Errorf("%w: %v", errUnavailable, err)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
