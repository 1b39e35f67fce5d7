package commands

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// Register adds the command API to mux:
//
//	POST /api/devices/{id}/commands   take a command in (see Accept)
//	GET  /api/commands/{id}           a command's state and result
func (l *Ledger) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/devices/{id}/commands", l.postCommand)
	mux.HandleFunc("GET /api/commands/{id}", l.getCommand)
}

// postCommand is POST /api/devices/{id}/commands: the body is a command
// (`{"write":{...}}`, `{"send":"..."}`, `{"pulse":{...}}`, or any payload for
// an MQTT leaf); optional query parameters id (default: generated) and ttl
// (a duration, default the ledger's TTL). It answers 202 with the command's
// id once the command is durably accepted, 200 for a duplicate id, 404 for a
// device the gateway does not have.
func (l *Ledger) postCommand(w http.ResponseWriter, r *http.Request) {
	device := r.PathValue("id")
	if _, _, ok := l.targets.Adapter(device); !ok && !l.targets.IsLeaf(device) {
		http.Error(w, fmt.Sprintf("no device %q on this gateway", device), http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(body) > 64<<10 {
		http.Error(w, "body missing or larger than 64 KiB", http.StatusRequestEntityTooLarge)
		return
	}
	var props msg.Props
	if id := r.URL.Query().Get("id"); id != "" {
		props = append(props, msg.Prop{Key: msg.PropMessageID, Value: id})
	}
	if ttl := r.URL.Query().Get("ttl"); ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d <= 0 {
			http.Error(w, "ttl: want a positive duration such as 30s", http.StatusBadRequest)
			return
		}
		props = append(props, msg.Prop{Key: msg.PropExpiry, Value: time.Now().Add(d).UTC().Format(time.RFC3339Nano)})
	}
	c, dup, err := l.accept(r.Context(), device, props, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if dup {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusAccepted)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"id": c.ID, "device": device, "duplicate": dup})
}

// getCommand is GET /api/commands/{id}: the command's state and result.
func (l *Ledger) getCommand(w http.ResponseWriter, r *http.Request) {
	c, err := l.inbox.Command(r.PathValue("id"))
	if errors.Is(err, store.ErrNoCommand) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := map[string]any{"id": c.ID, "device": c.Device, "state": c.State, "received": c.Received, "deadline": c.Deadline}
	if c.State.Final() && json.Valid([]byte(c.Detail)) {
		out["result"] = json.RawMessage(c.Detail)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
