package hubtest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/gateway/msg"
)

const (
	host = "testhub.azure-devices.net"
	key1 = "c2VjcmV0LWtleS1vZi1kZXYtMQ==" // "secret-key-of-dev-1"
	key2 = "c2VjcmV0LWtleS1vZi1kZXYtMg=="
)

func start(t *testing.T) *hubtest.Hub {
	t.Helper()
	h, err := hubtest.Start(hubtest.Options{Host: host, Devices: map[string]string{"dev-1": key1, "dev-2": key2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func token(t *testing.T, device, key string, ttl time.Duration) string {
	t.Helper()
	tok, err := cloudlink.SASToken(host+"/devices/"+device, key, time.Now().Add(ttl), "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client connects a raw paho client as device with the given credentials.
func client(t *testing.T, h *hubtest.Hub, id, user, pass string, version uint, onMsg paho.MessageHandler) (paho.Client, error) {
	t.Helper()
	lost := make(chan error, 1)
	o := paho.NewClientOptions().AddBroker("tcp://" + h.Addr()).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetProtocolVersion(version).SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetDefaultPublishHandler(onMsg).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func TestConnectChecks(t *testing.T) {
	h := start(t)
	user := cloudlink.AzureUsername(host, "dev-1")
	for _, tc := range []struct {
		name, id, user, pass string
		version              uint
		refused              string // "" = accepted; else the hub's reason
	}{
		{"good", "dev-1", user, token(t, "dev-1", key1, time.Hour), 4, ""},
		{"extra username parameters", "dev-1", user + "&DeviceClientType=outpost", token(t, "dev-1", key1, time.Hour), 4, ""},
		{"no api-version", "dev-1", host + "/dev-1/", token(t, "dev-1", key1, time.Hour), 4, "username"},
		{"old username shape", "dev-1", host + "/dev-1/api-version=2016-11-14", token(t, "dev-1", key1, time.Hour), 4, "username"},
		{"username of another device", "dev-1", cloudlink.AzureUsername(host, "dev-2"), token(t, "dev-1", key1, time.Hour), 4, "username"},
		{"signed with another key", "dev-1", user, token(t, "dev-1", key2, time.Hour), 4, "does not match"},
		{"token of another device", "dev-1", user, token(t, "dev-2", key2, time.Hour), 4, "sr"},
		{"expired token", "dev-1", user, token(t, "dev-1", key1, -time.Minute), 4, "expired"},
		{"no password", "dev-1", user, "", 4, "SharedAccessSignature"},
		{"unregistered device", "dev-9", cloudlink.AzureUsername(host, "dev-9"), token(t, "dev-9", key1, time.Hour), 4, "not registered"},
		{"MQTT 3.1", "dev-1", user, token(t, "dev-1", key1, time.Hour), 3, "protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Count(hubtest.Refused, "")
			c, err := client(t, h, tc.id, tc.user, tc.pass, tc.version, nil)
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v; events %v", err, h.Events())
				}
				c.Disconnect(0)
				return
			}
			if err == nil {
				t.Fatalf("accepted")
			}
			if tc.version == 3 {
				return // refused by the broker's version check, before authentication
			}
			var last hubtest.Event
			for _, e := range h.Events() {
				if e.Kind == hubtest.Refused {
					last = e
				}
			}
			if h.Count(hubtest.Refused, "") != before+1 || !strings.Contains(last.Detail, tc.refused) {
				t.Errorf("client got %v; hub's last refusal %v; want one refusal mentioning %q", err, last, tc.refused)
			}
		})
	}
}

// TestViolationsDropTheConnection: each violation closes the connection
// (IoT Hub has no error replies over MQTT 3.1.1) and is recorded.
func TestViolationsDropTheConnection(t *testing.T) {
	h := start(t)
	big := make([]byte, hubtest.MaxMessageBytes)
	for _, tc := range []struct {
		name string
		act  func(c paho.Client) paho.Token
		want string
	}{
		{"QoS 2 publish", func(c paho.Client) paho.Token { return c.Publish("devices/dev-1/messages/events/", 2, false, "x") }, "QoS 2"},
		{"another device's topic", func(c paho.Client) paho.Token { return c.Publish("devices/dev-2/messages/events/", 1, false, "x") }, "PUBLISH to"},
		{"free-form topic", func(c paho.Client) paho.Token { return c.Publish("sensors/dev-1", 1, false, "x") }, "PUBLISH to"},
		{"form-encoded bag", func(c paho.Client) paho.Token {
			return c.Publish("devices/dev-1/messages/events/unit=deg+C", 1, false, "x")
		}, "'+'"},
		{"oversize", func(c paho.Client) paho.Token {
			return c.Publish("devices/dev-1/messages/events/k=v", 1, false, big)
		}, "over the"},
		{"subscribe to everything", func(c paho.Client) paho.Token { return c.Subscribe("#", 1, nil) }, "SUBSCRIBE"},
		{"subscribe to another device's C2D", func(c paho.Client) paho.Token {
			return c.Subscribe("devices/dev-2/messages/devicebound/#", 1, nil)
		}, "SUBSCRIBE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client(t, h, "dev-1", cloudlink.AzureUsername(host, "dev-1"), token(t, "dev-1", key1, time.Hour), 4, nil)
			if err != nil {
				t.Fatal(err)
			}
			before := h.Count(hubtest.Violation, "dev-1")
			tc.act(c)
			if !h.Wait(5*time.Second, func(h *hubtest.Hub) bool { return h.Count(hubtest.Violation, "dev-1") > before }) {
				t.Fatalf("no violation recorded; events %v", h.Events())
			}
			ev := h.Events()
			var last hubtest.Event
			for _, e := range ev {
				if e.Kind == hubtest.Violation {
					last = e
				}
			}
			if !strings.Contains(last.Detail, tc.want) {
				t.Errorf("violation %q, want it to mention %q", last.Detail, tc.want)
			}
			deadline := time.Now().Add(5 * time.Second)
			for c.IsConnectionOpen() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if c.IsConnectionOpen() {
				t.Error("connection still open after a violation")
			}
		})
	}
	if n := len(h.D2C()); n != 0 {
		t.Errorf("%d messages accepted from violating publishes", n)
	}
}

// TestD2CC2DAndExpiry: an accepted publish is recorded with its decoded bag;
// a QoS 2 subscription is granted QoS 1; C2D arrives with its bag and its
// PUBACK completes it; the connection is severed when the token expires.
func TestD2CC2DAndExpiry(t *testing.T) {
	h := start(t)
	got := make(chan paho.Message, 10)
	c, err := client(t, h, "dev-1", cloudlink.AzureUsername(host, "dev-1"), token(t, "dev-1", key1, 2*time.Second), 4,
		func(_ paho.Client, m paho.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	sub := c.Subscribe("devices/dev-1/messages/devicebound/#", 2, nil)
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		t.Fatal(sub.Error())
	}
	if q := sub.(*paho.SubscribeToken).Result()["devices/dev-1/messages/devicebound/#"]; q != 1 {
		t.Errorf("QoS 2 subscription granted %d, want 1", q)
	}
	if tok := c.Publish(msg.EventsTopic("dev-1", msg.Props{{Key: "$.mid", Value: "m 1"}, {Key: "a&b", Value: "c=d"}}), 1, false, "hi"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	d := h.D2C()
	if len(d) != 1 || d[0].Device != "dev-1" || string(d[0].Payload) != "hi" {
		t.Fatalf("D2C %+v", d)
	}
	if v, _ := d[0].Props.Get("a&b"); v != "c=d" {
		t.Errorf("bag decoded as %v", d[0].Props)
	}
	if err := h.SendC2D("dev-1", msg.Props{{Key: "$.mid", Value: "c2d-1"}, {Key: "note", Value: "a b"}}, []byte("cmd")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Topic() != "devices/dev-1/messages/devicebound/%24.mid=c2d-1&note=a%20b" || string(m.Payload()) != "cmd" || m.Qos() != 1 {
			t.Errorf("C2D %q %q qos %d", m.Topic(), m.Payload(), m.Qos())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no C2D")
	}
	if !h.Wait(5*time.Second, func(h *hubtest.Hub) bool { return h.Completed("dev-1") == 1 }) {
		t.Errorf("C2D PUBACK not counted")
	}
	if !h.Wait(5*time.Second, func(h *hubtest.Hub) bool { return h.Count(hubtest.Expired, "dev-1") == 1 }) {
		t.Fatalf("not severed at token expiry; events %v", h.Events())
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.IsConnectionOpen() {
		t.Error("connection open after its token expired")
	}
}
