package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	_ "github.com/outpost-iot/outpost/adapters/modbus"
	_ "github.com/outpost-iot/outpost/adapters/sim"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// An adapter device's twin in process (under the race detector): a
// desired setpoint written to a pymodbus slave's register and
// acknowledged, a desired property that is not a point refused, and the
// read and write methods, all at once with the device's polling.
func TestAdapterTwin(t *testing.T) {
	py := peertest.Python(t)
	port := peertest.FreePort(t)
	script, _ := filepath.Abs("../adapters/modbus/testdata/slave.py")
	slave := peertest.Start(t, exec.Command(py, script, "tcp", "127.0.0.1", strconv.Itoa(port)), regexp.MustCompile(`READY`))

	w := startDevGW(t, fmt.Sprintf(`
  - id: plc-1
    twin_interval: 100ms
    modbus:
      url: tcp://127.0.0.1:%d
      interval: 100ms
      timeout: 500ms
      points:
        - {name: setpoint, table: holding, address: 100, type: int16, scale: 0.1, writable: true}
`, port))
	reported := func(what string, ok func(map[string]any) bool) map[string]any {
		t.Helper()
		return w.reported(t, "plc-1", what, ok)
	}
	reported("the setpoint and health", func(rep map[string]any) bool {
		pts, _ := rep["points"].(map[string]any)
		return pts != nil && pts["setpoint"] == 21.5 && rep["health"] == "ok"
	})

	code, tw := w.api(t, "PATCH", "/api/devices/plc-1/twin", `{"desired":{"setpoint":19,"mode":"eco"}}`)
	if code != 200 {
		t.Fatalf("PATCH: %d %v", code, tw)
	}
	av := tw["desired"].(map[string]any)["$version"].(float64)
	// Methods while the command runs and the device polls.
	code, res := w.api(t, "POST", "/api/devices/plc-1/methods/write", `{"payload":{"setpoint":19}}`)
	if code != 200 || res["status"] != 200.0 {
		t.Fatalf("write: %d %v", code, res)
	}
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[190\]`), 10*time.Second)
	reported("setpoint 200 and mode 400", func(rep map[string]any) bool {
		sp, _ := rep["setpoint"].(map[string]any)
		mode, _ := rep["mode"].(map[string]any)
		return sp != nil && sp["ac"] == 200.0 && sp["av"] == av && sp["value"] == 19.0 &&
			mode != nil && mode["ac"] == 400.0 && mode["av"] == av
	})
	code, res = w.api(t, "POST", "/api/devices/plc-1/methods/read", `{}`)
	if code != 200 || res["status"] != 200.0 || res["payload"].(map[string]any)["values"].(map[string]any)["setpoint"] != 19.0 {
		t.Fatalf("read: %d %v", code, res)
	}
	code, res = w.api(t, "POST", "/api/devices/nope/methods/read", `{}`)
	if code != 404 {
		t.Fatalf("read of an unknown device: %d %v, want 404", code, res)
	}
}

// devGW is a gateway in process with adapter devices and the HTTP API.
type devGW struct {
	*twinGW
	g *Gateway
}

// startDevGW runs a gateway with devices (YAML list items under
// devices:) and waits for Ready.
func startDevGW(t *testing.T, devices string) devGW {
	t.Helper()
	dir := t.TempDir()
	w := &twinGW{dir: dir, httpAddr: fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))}
	tokenFile := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokenFile, []byte(twinAPIToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`gateway: {id: gw-t, data_dir: %s}
hub: {listen: ""}
http: {listen: %s, token_file: %s}
devices:%s`, filepath.Join(dir, "data"), w.httpAddr, tokenFile, devices)))
	if err != nil {
		t.Fatal(err)
	}
	g := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	return devGW{w, g}
}

// reported polls device's twin until ok holds for its reported section.
func (w devGW) reported(t *testing.T, device, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var rep map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		code, tw := w.api(t, "GET", "/api/devices/"+device+"/twin", "")
		if code != 200 {
			t.Fatalf("GET twin: %d %v", code, tw)
		}
		if rep, _ = tw["reported"].(map[string]any); rep != nil && ok(rep) {
			return rep
		}
	}
	t.Fatalf("reported of %s never showed %s: %v", device, what, rep)
	return nil
}

// A device's points are reported at most once per twin_interval however
// often it emits, while acknowledgements of desired changes are not held
// back; a sim meter takes a desired setpoint.
func TestAdapterTwinInterval(t *testing.T) {
	w := startDevGW(t, `
  - id: meter-1
    twin_interval: 1h
    sim: {interval: 20ms}
`)
	first := w.reported(t, "meter-1", "the first points", func(rep map[string]any) bool {
		pts, _ := rep["points"].(map[string]any)
		return pts != nil && pts["voltage"] != nil
	})
	// Many readings later: the same report.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := w.g.Status(); len(st.Devices) == 1 && st.Devices[0].Readings >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sim meter did not emit 20 readings")
		}
	}
	_, tw := w.api(t, "GET", "/api/devices/meter-1/twin", "")
	if got, want := fmt.Sprint(tw["reported"].(map[string]any)["points"]), fmt.Sprint(first["points"]); got != want {
		t.Fatalf("points reported again within twin_interval: %s, first %s", got, want)
	}
	code, tw := w.api(t, "PATCH", "/api/devices/meter-1/twin", `{"desired":{"setpoint":25.5,"voltage":1}}`)
	if code != 200 {
		t.Fatalf("PATCH: %d %v", code, tw)
	}
	av := tw["desired"].(map[string]any)["$version"].(float64)
	w.reported(t, "meter-1", "setpoint 200 and voltage 400", func(rep map[string]any) bool {
		sp, _ := rep["setpoint"].(map[string]any)
		v, _ := rep["voltage"].(map[string]any)
		return sp != nil && sp["ac"] == 200.0 && sp["av"] == av && sp["value"] == 25.5 && v != nil && v["ac"] == 400.0
	})
}
