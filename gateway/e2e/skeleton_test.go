package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

var leaf1 = leaf{id: "leaf-1", password: "pw-one"}
var leaf2 = leaf{id: "leaf-2", password: "pw-two"}

// A QoS 1 message from an authenticated leaf reaches the upstream Mosquitto
// with its payload unchanged and its $.mid in the topic's property bag.
func TestLeafToUpstream(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	sub := up.Sub(t, "devices/#")
	g := newGateway(t, up.Addr, leaf1, leaf2)
	g.start()

	payload := `{"temp": 21.5, "note": "hello world"}`
	if out, err := g.pub(leaf1, "devices/leaf-1/messages/events/$.mid=m-1&unit=degC", payload); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	line := expectLine(t, sub, regexp.MustCompile(`^devices/leaf-1/messages/events/`), 10*time.Second)
	topic, body, _ := strings.Cut(line, " ")
	if body != payload {
		t.Errorf("payload upstream = %q, want %q", body, payload)
	}
	dev, props, err := msg.ParseEventsTopic(topic)
	if err != nil || dev != "leaf-1" {
		t.Fatalf("upstream topic %q: %v", topic, err)
	}
	if mid, _ := props.Get("$.mid"); mid != "m-1" {
		t.Errorf("$.mid upstream = %q, want m-1 (topic %s)", mid, topic)
	}
	if u, _ := props.Get("unit"); u != "degC" {
		t.Errorf("app property unit = %q, want degC", u)
	}
	if seq, _ := props.Get(msg.PropSeq); seq == "" {
		t.Errorf("no %s property upstream: %s", msg.PropSeq, topic)
	}

	// A message without $.mid gets one assigned by the gateway.
	if out, err := g.pub(leaf2, "devices/leaf-2/messages/events/", "no-id"); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	line = expectLine(t, sub, regexp.MustCompile(`^devices/leaf-2/messages/events/\S* no-id$`), 10*time.Second)
	_, props, _ = msg.ParseEventsTopic(strings.Fields(line)[0])
	if mid, _ := props.Get("$.mid"); mid == "" {
		t.Errorf("no $.mid assigned: %s", line)
	}
}

// With the upstream unreachable the leaf still gets its PUBACK, the message
// survives a restart of outpost (SIGTERM, and separately SIGKILL), and
// arrives upstream once the link is back.
func TestOfflineSurvivesRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			up := peertest.StartMosquitto(t)
			sub := up.Sub(t, "devices/#")
			link := peertest.StartProxy(t, up.Addr)
			link.Cut()
			g := newGateway(t, link.Addr, leaf1)
			g.start()

			mid := "offline-" + strings.ToLower(sig.String()[3:])
			out, err := g.pub(leaf1, "devices/leaf-1/messages/events/$.mid="+mid, "kept on disk")
			if err != nil {
				t.Fatalf("no PUBACK while upstream is down: %v\n%s", err, out)
			}
			if !strings.Contains(out, "PUBACK") {
				t.Fatalf("mosquitto_pub saw no PUBACK:\n%s", out)
			}
			g.stop(sig)
			g.start()
			expectNoLine(t, sub, regexp.MustCompile(mid), 500*time.Millisecond)
			link.Restore()
			line := expectLine(t, sub, regexp.MustCompile(regexp.QuoteMeta(mid)), 60*time.Second)
			if !strings.HasSuffix(line, " kept on disk") {
				t.Errorf("upstream got %q", line)
			}
		})
	}
}

// A wrong password is refused at CONNECT, and a leaf cannot publish into
// another device's topic: neither message reaches the upstream.
func TestAuthAndACL(t *testing.T) {
	t.Parallel()
	up := peertest.StartMosquitto(t)
	sub := up.Sub(t, "devices/#")
	g := newGateway(t, up.Addr, leaf1, leaf2)
	g.start()

	out, err := g.pub(leaf{id: "leaf-1", password: "wrong"}, "devices/leaf-1/messages/events/$.mid=bad-pw", "x")
	if err == nil {
		t.Fatalf("wrong password accepted:\n%s", out)
	}
	if !strings.Contains(strings.ToLower(out), "not authori") {
		t.Errorf("wrong password: want a 'not authorised' refusal, got:\n%s", out)
	}
	out, err = g.pub(leaf1, "devices/leaf-2/messages/events/$.mid=spoof", "x")
	if err == nil && strings.Contains(out, "PUBACK") {
		t.Fatalf("leaf-1 published to leaf-2's topic and got a PUBACK:\n%s", out)
	}
	// MQTT 5: refused with a reason code instead of a disconnect.
	out, _ = g.pub(leaf1, "devices/leaf-2/messages/events/$.mid=spoof5", "x", "-V", "mqttv5")
	if strings.Contains(out, "PUBACK") && !strings.Contains(out, "rc135") && !strings.Contains(out, "not authori") {
		t.Errorf("MQTT 5 spoof got a successful PUBACK:\n%s", out)
	}
	// The honest message after them still goes through, and the refused ones never do.
	if out, err := g.pub(leaf1, "devices/leaf-1/messages/events/$.mid=honest", "ok"); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	expectLine(t, sub, regexp.MustCompile(`honest`), 10*time.Second)
	expectNoLine(t, sub, regexp.MustCompile(`spoof|bad-pw`), 300*time.Millisecond)
	if o := sub.Output(); strings.Contains(o, "spoof") || strings.Contains(o, "bad-pw") {
		t.Fatalf("a refused message reached the upstream:\n%s", o)
	}
}

// `outpost demo --for` exits 0: readings and leaf messages are delivered
// through an outage of the stand-in cloud with nothing lost, and both
// command round trips complete.
func TestDemo(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(bin, "demo", "--for", "10s")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^demo: produced=(\d+) stored=(\d+) delivered=(\d+) queued=(\d+) lost=(\d+) commands=(\d+)/(\d+)$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no final line:\n%s", out)
	}
	if m[3] == "0" || m[5] != "0" || m[6] != m[7] || m[7] == "0" {
		t.Fatalf("want delivered > 0, lost=0, every command done:\n%s", out)
	}
	for _, want := range []string{"demo:   1s ", "stand-in cloud DOWN", "stand-in cloud back", "result upstream: done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
