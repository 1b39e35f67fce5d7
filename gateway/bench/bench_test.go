package bench

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestStore runs the store benchmark at its smallest and checks the report:
// the documented keys, the JSON shape `outpost bench store --json` prints,
// and the human table.
func TestStore(t *testing.T) {
	var progress []string
	rep, err := Store(context.Background(), StoreOptions{Dir: t.TempDir(), Duration: 50 * time.Millisecond, Records: 200, Size: 16,
		Log: Log{Progress: func(f string, a ...any) { progress = append(progress, f) }}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"appends_per_s_p1", "appends_per_s_p16", "appends_per_s_p64", "fsync_each_appends_per_s_p16"} {
		if rep.Metrics[k] <= 0 {
			t.Errorf("metric %s = %v, want > 0", k, rep.Metrics[k])
		}
	}
	if _, ok := rep.Metrics["reopen_1m_s"]; ok {
		t.Error("reopen_1m_s reported for a backlog of 200 records")
	}
	var got struct {
		Bench, Machine string
		Metrics        map[string]float64
	}
	if err := json.Unmarshal(rep.JSON(), &got); err != nil || got.Bench != "store" || got.Machine == "" || len(got.Metrics) != len(rep.Metrics) {
		t.Errorf("JSON %s: %+v, %v", rep.JSON(), got, err)
	}
	if !strings.HasPrefix(string(rep.JSON()), `{"bench":"store","machine":`) {
		t.Errorf("JSON %s: want bench, machine, metrics in that order", rep.JSON())
	}
	if !strings.Contains(rep.Text, "appends_per_s_p16 ") || !strings.Contains(rep.Text, "note ") {
		t.Errorf("table:\n%s", rep.Text)
	}
	if len(progress) == 0 {
		t.Error("no progress reported")
	}
}

// TestIngest drives the hub with the raw-packet load generator for a moment.
func TestIngest(t *testing.T) {
	rep, err := Ingest(context.Background(), IngestOptions{Clients: 2, Inflight: 4, Size: 16, Duration: 200 * time.Millisecond, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Metrics["outpost_msgs_per_s"] <= 0 || rep.Metrics["single_client_msgs_per_s"] <= 0 {
		t.Errorf("metrics %v", rep.Metrics)
	}
	if _, ok := rep.Metrics["ratio"]; ok {
		t.Error("a ratio without Mosquitto")
	}
}
