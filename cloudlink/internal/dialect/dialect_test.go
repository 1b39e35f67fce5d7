package dialect

import (
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestAzureUsernameAndTopics(t *testing.T) {
	d := Azure{Host: "myhub.azure-devices.net", Device: "gw-leaf-01"}
	// IOTHUB.md's property-bag vector, plus the gateway's sequence number.
	r := &msg.Record{Seq: 7, ID: "msg-0001", Device: "gw-leaf-01", Props: msg.Props{
		{Key: "unit", Value: "degC"}, {Key: "$.ce", Value: "utf-8"}, {Key: "alert level", Value: "high temp"},
		{Key: "$.ct", Value: "application/json;charset=utf-8"}, {Key: "$.cid", Value: "corr 1"}}}
	want := "devices/gw-leaf-01/messages/events/%24.mid=msg-0001&%24.cid=corr%201&%24.ct=application%2Fjson%3Bcharset%3Dutf-8&%24.ce=utf-8&alert%20level=high%20temp&outpost-seq=7&unit=degC"
	if got := d.Topic(r); got != want {
		t.Errorf("topic\n got %s\nwant %s", got, want)
	}
	// A leaf under the gateway's identity is named in a property.
	r.Device, r.Props = "meter-1", nil
	if got, want := d.Topic(r), "devices/gw-leaf-01/messages/events/%24.mid=msg-0001&outpost-device=meter-1&outpost-seq=7"; got != want {
		t.Errorf("leaf topic\n got %s\nwant %s", got, want)
	}
	if got := d.C2DFilter(); got != "devices/gw-leaf-01/messages/devicebound/#" {
		t.Errorf("c2d filter %q", got)
	}
	// IOTHUB.md's C2D vector: percent-decoding only.
	dev, ps, err := Azure{Device: "fake_device"}.C2D("devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=fake_content_type&%24.ce=utf-8&iothub-ack=positive")
	if err != nil || dev != "fake_device" {
		t.Fatalf("c2d: %q %v", dev, err)
	}
	for k, v := range map[string]string{"$.mid": "6b822696-f75a-46f5-8b02-0680db65abf5", "$.to": "/devices/fake_device/messages/devicebound", "$.exp": "3237-07-19T23:06:40.0000000Z", "iothub-ack": "positive"} {
		if got, _ := ps.Get(k); got != v {
			t.Errorf("c2d %s = %q, want %q", k, got, v)
		}
	}
	if dev, _, err := (Azure{Device: "gw"}).C2D("devices/gw/messages/devicebound/outpost-device=meter-1&x=1"); err != nil || dev != "meter-1" {
		t.Errorf("leaf C2D routed to %q (%v), want meter-1", dev, err)
	}
	if _, _, err := (Azure{Device: "gw"}).C2D("devices/other/messages/devicebound/"); err == nil {
		t.Error("C2D for another identity accepted")
	}
}

func TestAzureCredentialsExpire(t *testing.T) {
	d := Azure{Host: "h.azure-devices.net", Device: "gw", Key: "c2VjcmV0", TTL: time.Hour}
	now := time.Unix(1_800_000_000, 0)
	user, pass, exp, err := d.Credentials(now)
	if err != nil {
		t.Fatal(err)
	}
	// IOTHUB.md's V1 key ("secret"), signed for an hour from now.
	want := iothub.Sign("h.azure-devices.net/devices/gw", []byte("secret"), now.Add(time.Hour), "")
	if user != "h.azure-devices.net/gw/?api-version=2021-04-12" || pass != want || !exp.Equal(now.Add(time.Hour)) {
		t.Errorf("credentials %q %q %v", user, pass, exp)
	}
	x509 := Azure{Host: "h", Device: "gw"}
	if _, pass, exp, _ := x509.Credentials(now); pass != "" || !exp.IsZero() {
		t.Errorf("X.509 identity got a password or an expiry")
	}
}

func TestMQTT(t *testing.T) {
	d := MQTT{ID: "gw", User: "u", Pass: "p", Filter: "devices/+/messages/devicebound/#"}
	if user, pass, exp, err := d.Credentials(time.Now()); d.ClientID() != "gw" || user != "u" || pass != "p" || !exp.IsZero() || err != nil {
		t.Errorf("credentials %q %q %v %v", user, pass, exp, err)
	}
	r := &msg.Record{Seq: 1, ID: "m1", Device: "leaf-1"}
	if got := d.Topic(r); got != r.Topic() {
		t.Errorf("topic %q, want the record's own %q", got, r.Topic())
	}
	if dev, _, err := d.C2D("devices/leaf-1/messages/devicebound/%24.mid=1"); err != nil || dev != "leaf-1" {
		t.Errorf("c2d %q %v", dev, err)
	}
}
