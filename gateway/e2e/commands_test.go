package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// startSlave starts the modbus adapter's pymodbus slave over TCP.
func startSlave(t *testing.T, port int) *peertest.Proc {
	t.Helper()
	py := peertest.Python(t)
	script, _ := filepath.Abs("../../adapters/modbus/testdata/slave.py")
	return peertest.Start(t, exec.Command(py, script, "tcp", "127.0.0.1", strconv.Itoa(port)), regexp.MustCompile(`READY`))
}

func plcDevice(port int) string {
	return fmt.Sprintf(`devices:
  - id: plc-1
    modbus:
      url: tcp://127.0.0.1:%d
      unit: 1
      interval: 300ms
      timeout: 500ms
      points:
        - {name: setpoint, table: holding, address: 100, type: int16, scale: 0.1, writable: true}
`, port)
}

// c2d publishes a C2D message at the upstream broker, as the cloud would.
func c2d(t *testing.T, up *peertest.Mosquitto, device string, props msg.Props, body string) {
	t.Helper()
	out, err := exec.Command(peertest.Need(t, "mosquitto_pub"), "-h", "127.0.0.1", "-p", strconv.Itoa(up.Port),
		"-q", "1", "-t", msg.DeviceboundTopic(device, props), "-m", body).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub c2d: %v\n%s", err, out)
	}
}

// waitC2DSubscribed waits until the gateway's cloud link has subscribed to C2D upstream.
func waitC2DSubscribed(t *testing.T, up *peertest.Mosquitto) {
	t.Helper()
	up.WaitFor(t, regexp.MustCompile(`gw-e2e \d devices/\+/messages/devicebound/#`), 20*time.Second)
}

// result is one command-result seen upstream.
type result struct {
	device, cid string
	body        msg.Result
}

var resultRE = regexp.MustCompile(`^devices/\S+/messages/events/\S*type=command-result`)

// nextResult waits for the next command result upstream.
func nextResult(t *testing.T, sub *peertest.Proc, d time.Duration) result {
	t.Helper()
	line := expectLine(t, sub, resultRE, d)
	topic, body, _ := strings.Cut(line, " ")
	dev, props, err := msg.ParseEventsTopic(topic)
	if err != nil {
		t.Fatalf("result topic %q: %v", topic, err)
	}
	r := result{device: dev}
	r.cid, _ = props.Get(msg.PropCorrelationID)
	if err := json.Unmarshal([]byte(body), &r.body); err != nil {
		t.Fatalf("result body %q: %v", body, err)
	}
	return r
}

// A setpoint write published at the cloud reaches the real pymodbus slave's
// register, its command-result with $.cid arrives upstream, and a duplicate
// of the same command is not applied again.
func TestCommandToModbus(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	sub := up.Sub(t, "devices/#")
	port := peertest.FreePort(t)
	slave := startSlave(t, port)
	hmi := leaf{id: "hmi-1", password: "pw-hmi", operator: true}
	g := newGatewayWith(t, up.Addr, plcDevice(port), leaf1, hmi)
	g.start()
	waitC2DSubscribed(t, up)
	g.waitStatus("plc-1 readings", 10*time.Second, func(st gateway.Status) bool {
		return len(st.Devices) == 1 && st.Devices[0].Readings > 0
	})

	c2d(t, up, "plc-1", msg.Props{{Key: "$.mid", Value: "cmd-1"}}, `{"write":{"setpoint":23.5}}`)
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[235\]`), 10*time.Second)
	r := nextResult(t, sub, 10*time.Second)
	if r.device != "plc-1" || r.cid != "cmd-1" || r.body.Status != msg.StatusDone || r.body.Values["setpoint"] != 23.5 {
		t.Fatalf("result = %+v, want done for cmd-1 with setpoint 23.5 read back", r)
	}

	// The cloud redelivers the same command: acknowledged, not applied.
	c2d(t, up, "plc-1", msg.Props{{Key: "$.mid", Value: "cmd-1"}}, `{"write":{"setpoint":23.5}}`)
	g.waitStatus("the duplicate to be taken in", 10*time.Second, func(st gateway.Status) bool {
		return st.Link != nil && st.Link.C2D+st.Link.C2DDuplicates >= 2
	})
	// A later, different command proves the device's queue moved on past it.
	c2d(t, up, "plc-1", msg.Props{{Key: "$.mid", Value: "cmd-2"}}, `{"write":{"nope":1}}`)
	r = nextResult(t, sub, 10*time.Second)
	if r.cid != "cmd-2" || r.body.Status != msg.StatusRejected {
		t.Fatalf("second result = %+v, want cmd-2 rejected (cmd-1 must not have a second result)", r)
	}
	if n := strings.Count(slave.Output(), "WRITE hr 100"); n != 1 {
		t.Fatalf("the slave saw %d writes, want exactly 1:\n%s", n, slave.Output())
	}

	// A local operator client may command devices over the hub; a leaf may not.
	if out, err := g.pub(leaf1, "devices/plc-1/messages/devicebound/$.mid=leaf-cmd", `{"write":{"setpoint":99}}`); err == nil && strings.Contains(out, "PUBACK") {
		t.Fatalf("a leaf (not an operator) got a PUBACK for a command:\n%s", out)
	}
	if out, err := g.pub(hmi, "devices/plc-1/messages/devicebound/$.mid=op-1", `{"write":{"setpoint":22}}`); err != nil {
		t.Fatalf("operator command: %v\n%s", err, out)
	}
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[220\]`), 10*time.Second)
	if r := nextResult(t, sub, 10*time.Second); r.cid != "op-1" || r.body.Status != msg.StatusDone {
		t.Fatalf("operator command result = %+v", r)
	}

	// And so may the HTTP API; the same id twice is one command.
	post := func() int {
		resp, err := g.postJSON("/api/devices/plc-1/commands?id=http-1&ttl=1m", `{"write":{"setpoint":24}}`)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(); code != http.StatusAccepted {
		t.Fatalf("POST command = %d, want 202", code)
	}
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[240\]`), 10*time.Second)
	if r := nextResult(t, sub, 10*time.Second); r.cid != "http-1" || r.body.Status != msg.StatusDone {
		t.Fatalf("HTTP command result = %+v", r)
	}
	if code := post(); code != http.StatusOK {
		t.Errorf("POST of the same id again = %d, want 200 (duplicate)", code)
	}
	if code, body := get(t, "http://"+g.http+"/api/commands/http-1"); code != 200 || !strings.Contains(body, `"state":"done"`) || !strings.Contains(body, `"setpoint":24`) {
		t.Errorf("GET /api/commands/http-1 = %d %s", code, body)
	}
	if code, _ := get(t, "http://"+g.http+"/api/commands/nope"); code != 404 {
		t.Errorf("GET unknown command = %d, want 404", code)
	}
	resp, err := g.postJSON("/api/devices/ghost/commands", `{}`)
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("POST to an unknown device = %v %v, want 404", resp.StatusCode, err)
	}
	if n := strings.Count(slave.Output(), "WRITE hr 100"); n != 3 {
		t.Errorf("the slave saw %d writes, want 3:\n%s", n, slave.Output())
	}
}

// A command for an MQTT leaf that is offline waits; the leaf gets it when it
// connects, its PUBACK completes the command. A command whose deadline
// passes first ends expired. Both results go upstream.
func TestCommandToLeaf(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	sub := up.Sub(t, "devices/#")
	g := newGateway(t, up.Addr, leaf1)
	g.start()
	waitC2DSubscribed(t, up)

	exp := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	c2d(t, up, "leaf-1", msg.Props{{Key: "$.mid", Value: "short"}, {Key: "$.exp", Value: exp}}, "too late")
	r := nextResult(t, sub, 15*time.Second)
	if r.cid != "short" || r.body.Status != msg.StatusExpired {
		t.Fatalf("result = %+v, want short expired", r)
	}

	c2d(t, up, "leaf-1", msg.Props{{Key: "$.mid", Value: "later"}, {Key: "color", Value: "red"}}, "turn on")
	time.Sleep(300 * time.Millisecond) // the command is queued while the leaf is away
	host, port, _ := strings.Cut(g.hub, ":")
	leafSub := peertest.Start(t, exec.Command(peertest.Need(t, "mosquitto_sub"), "-h", host, "-p", port, "-q", "1",
		"-i", leaf1.id, "-u", leaf1.id, "-P", leaf1.password, "-t", "devices/leaf-1/messages/devicebound/#", "-v", "-C", "1"), nil)
	line := expectLine(t, leafSub, regexp.MustCompile(`^devices/leaf-1/messages/devicebound/`), 10*time.Second)
	if !strings.HasSuffix(line, " turn on") || !strings.Contains(line, "color=red") || !strings.Contains(line, "later") {
		t.Errorf("leaf got %q", line)
	}
	r = nextResult(t, sub, 10*time.Second)
	if r.cid != "later" || r.body.Status != msg.StatusDone {
		t.Fatalf("result = %+v, want later done", r)
	}
}

// kill -9 after a command was accepted but before it could be applied (the
// slave is down) still ends in exactly one result, once the slave is back.
func TestCommandSurvivesKill(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	sub := up.Sub(t, "devices/#")
	port := peertest.FreePort(t)
	g := newGatewayWith(t, up.Addr, plcDevice(port))
	g.start()
	waitC2DSubscribed(t, up)

	c2d(t, up, "plc-1", msg.Props{{Key: "$.mid", Value: "cmd-k"}}, `{"write":{"setpoint":19.5}}`)
	g.waitStatus("the command to be accepted", 10*time.Second, func(st gateway.Status) bool {
		for _, c := range st.Commands {
			if c.ID == "cmd-k" {
				return true
			}
		}
		return false
	})
	g.stop(syscallKILL)
	slave := startSlave(t, port)
	g.start()
	slave.WaitFor(t, regexp.MustCompile(`WRITE hr 100 \[195\]`), 20*time.Second)
	r := nextResult(t, sub, 20*time.Second)
	if r.cid != "cmd-k" || r.body.Status != msg.StatusDone {
		t.Fatalf("result = %+v, want cmd-k done", r)
	}
	expectNoLine(t, sub, regexp.MustCompile(`cmd-k`), 2*time.Second)
}
