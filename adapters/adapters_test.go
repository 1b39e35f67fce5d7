package adapters

import (
	"encoding/json"
	"testing"
)

// Health's text is what /api/status and the logs have always shown; a
// decoded status gets the same state back.
func TestHealthText(t *testing.T) {
	for h, want := range map[Health]string{Up: "ok", Degraded: "degraded", Down: "down"} {
		if h.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(h), h.String(), want)
		}
		b, err := json.Marshal(struct{ H Health }{h})
		if err != nil || string(b) != `{"H":"`+want+`"}` {
			t.Errorf("Marshal(%v) = %s, %v", h, b, err)
		}
		var back struct{ H Health }
		if err := json.Unmarshal(b, &back); err != nil || back.H != h {
			t.Errorf("Unmarshal(%s) = %v, %v", b, back.H, err)
		}
	}
	var zero Health
	if zero != Up {
		t.Errorf("zero Health = %v, want Up", zero)
	}
	if _, err := Health(7).MarshalText(); err == nil || Health(7).String() != "Health(7)" {
		t.Errorf("Health(7): MarshalText err %v, String %q", err, Health(7).String())
	}
	var h Health
	if err := h.UnmarshalText([]byte("up")); err == nil {
		t.Error(`UnmarshalText("up") accepted`)
	}
}
