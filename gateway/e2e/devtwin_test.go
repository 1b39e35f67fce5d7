package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// api sends a request with a JSON body (when body is not "") and the
// bearer token to g's API and returns the status and the decoded answer.
func (g *gw) api(method, path, body string) (int, map[string]any) {
	g.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://"+g.http+path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		g.t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

// waitReported polls device's twin until ok holds for its reported
// section, and returns that section.
func (g *gw) waitReported(device, what string, ok func(rep map[string]any) bool) map[string]any {
	g.t.Helper()
	var rep map[string]any
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		code, tw := g.api("GET", "/api/devices/"+device+"/twin", "")
		if code != 200 {
			g.t.Fatalf("GET twin: %d %v", code, tw)
		}
		rep, _ = tw["reported"].(map[string]any)
		if rep != nil && ok(rep) {
			return rep
		}
	}
	g.t.Fatalf("reported of %s never showed %s; last:\n%v\n%s", device, what, rep, g.proc.Output())
	return nil
}

// isAck reports whether v is an acknowledgement {"value":value,"ac":ac,"av":av}.
func isAck(v any, value any, ac int, av float64) bool {
	m, _ := v.(map[string]any)
	return m != nil && m["ac"] == float64(ac) && m["av"] == av && (value == nil || m["value"] == value)
}

// A Modbus device's twin and methods against a real pymodbus slave: its
// points and health are reported; a desired setpoint is written to the
// register and acknowledged with ac 200 and av = the desired version; a
// value out of range and a point that is not writable are acknowledged
// 400; the read and write methods round trip through the device.
func TestModbusTwin(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	port := peertest.FreePort(t)
	slave := startSlave(t, port)
	g := newGatewayWith(t, up.Addr, fmt.Sprintf(`devices:
  - id: plc-1
    twin_interval: 200ms
    modbus:
      url: tcp://127.0.0.1:%d
      unit: 1
      interval: 300ms
      timeout: 500ms
      points:
        - {name: setpoint, table: holding, address: 100, type: int16, scale: 0.1, writable: true}
        - {name: temp, table: holding, address: 51, type: int16, scale: 0.1}
`, port))
	g.start()

	// Reported: the points' values and the health.
	g.waitReported("plc-1", "the points and health", func(rep map[string]any) bool {
		pts, _ := rep["points"].(map[string]any)
		return pts != nil && pts["setpoint"] == 21.5 && pts["temp"] == 215.3 && rep["health"] == "ok"
	})

	// A desired setpoint: written to the register, acknowledged 200.
	code, tw := g.api("PATCH", "/api/devices/plc-1/twin", `{"desired":{"setpoint":23.5}}`)
	if code != 200 {
		t.Fatalf("PATCH desired: %d %v", code, tw)
	}
	av := tw["desired"].(map[string]any)["$version"].(float64)
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[235\]`), 10*time.Second)
	g.waitReported("plc-1", "setpoint acknowledged 200", func(rep map[string]any) bool {
		return isAck(rep["setpoint"], 23.5, 200, av)
	})
	// The register holds it: the read method reads the device now.
	code, res := g.api("POST", "/api/devices/plc-1/methods/read", `{"payload":{}}`)
	if code != 200 || res["status"] != 200.0 {
		t.Fatalf("read: %d %v", code, res)
	}
	p := res["payload"].(map[string]any)
	if p["source"] != "device" || p["values"].(map[string]any)["setpoint"] != 23.5 {
		t.Fatalf("read payload %v, want setpoint 23.5 read from the device", p)
	}
	g.waitReported("plc-1", "the polled setpoint", func(rep map[string]any) bool {
		return rep["points"].(map[string]any)["setpoint"] == 23.5
	})

	// Out of range for an int16 with scale 0.1, and a read-only point: 400.
	code, tw = g.api("PATCH", "/api/devices/plc-1/twin", `{"desired":{"setpoint":5000,"temp":1}}`)
	if code != 200 {
		t.Fatalf("PATCH desired: %d %v", code, tw)
	}
	av2 := tw["desired"].(map[string]any)["$version"].(float64)
	rep := g.waitReported("plc-1", "both refused with 400", func(rep map[string]any) bool {
		return isAck(rep["setpoint"], nil, 400, av2) && isAck(rep["temp"], 1.0, 400, av2)
	})
	if ad, _ := rep["temp"].(map[string]any)["ad"].(string); !strings.Contains(ad, "not a writable point") {
		t.Errorf("temp's ad = %q, want why", ad)
	}
	if ad, _ := rep["setpoint"].(map[string]any)["ad"].(string); ad == "" {
		t.Error("setpoint's refusal has no ad")
	}

	// The write method answers with the value read back.
	code, res = g.api("POST", "/api/devices/plc-1/methods/write", `{"payload":{"setpoint":22},"responseTimeoutInSeconds":10}`)
	if code != 200 || res["status"] != 200.0 || res["payload"].(map[string]any)["values"].(map[string]any)["setpoint"] != 22.0 {
		t.Fatalf("write: %d %v", code, res)
	}
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[220\]`), 10*time.Second)
	code, res = g.api("POST", "/api/devices/plc-1/methods/write", `{"payload":{"temp":1}}`)
	if code != 200 || res["status"] != 400.0 {
		t.Fatalf("write to a read-only point: %d %v, want status 400", code, res)
	}
	if n := strings.Count(slave.Output(), "WRITE hr"); n != 2 {
		t.Errorf("the slave saw %d writes, want 2 (23.5 and 22):\n%s", n, slave.Output())
	}

	// A method the device does not have.
	code, res = g.api("POST", "/api/devices/plc-1/methods/reboot", `{}`)
	if code != 200 || res["status"] != 404.0 {
		t.Fatalf("unknown method: %d %v, want status 404", code, res)
	}
}

// A desired setpoint made while the Modbus device is down waits in the
// ledger (acknowledged 202), survives a kill of the gateway, and is
// written once and acknowledged 200 when the device is back; the twin's
// health follows the device.
func TestModbusTwinDesiredWhileDown(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	port := peertest.FreePort(t)
	dev := fmt.Sprintf(`devices:
  - id: plc-1
    twin_interval: 200ms
    modbus:
      url: tcp://127.0.0.1:%d
      unit: 1
      interval: 300ms
      timeout: 300ms
      points:
        - {name: setpoint, table: holding, address: 100, type: int16, scale: 0.1, writable: true}
`, port)
	g := newGatewayWith(t, up.Addr, dev)
	g.start()
	g.waitReported("plc-1", "a health other than ok", func(rep map[string]any) bool {
		h, _ := rep["health"].(string)
		return h == "degraded" || h == "down"
	})
	code, tw := g.api("PATCH", "/api/devices/plc-1/twin", `{"desired":{"setpoint":24}}`)
	if code != 200 {
		t.Fatalf("PATCH desired: %d %v", code, tw)
	}
	av := tw["desired"].(map[string]any)["$version"].(float64)
	g.waitReported("plc-1", "setpoint acknowledged 202", func(rep map[string]any) bool {
		return isAck(rep["setpoint"], 24.0, 202, av)
	})
	g.stop(syscallKILL)

	slave := startSlave(t, port)
	g.start()
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[240\]`), 20*time.Second)
	g.waitReported("plc-1", "setpoint acknowledged 200 and health ok", func(rep map[string]any) bool {
		return isAck(rep["setpoint"], 24.0, 200, av) && rep["health"] == "ok"
	})
	if n := strings.Count(slave.Output(), "WRITE hr"); n != 1 {
		t.Errorf("the slave saw %d writes, want 1:\n%s", n, slave.Output())
	}
}
