package cloudlink

import (
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// The vectors are IOTHUB.md's V1, V2 and V5 (V1's library appends an empty
// "&skn=", which IoT Hub does not need; it is omitted here).
func TestSASTokenVectors(t *testing.T) {
	for _, tc := range []struct {
		name, uri, key string
		expiry         int64
		want           string
	}{
		{"V1", "test.azure-devices.net/devices/test", "c2VjcmV0", 1483236061,
			"SharedAccessSignature sr=test.azure-devices.net%2Fdevices%2Ftest&sig=IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU%3D&se=1483236061"},
		{"V2", "uri", "cGFzc3dvcmQ=", 12345,
			"SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"},
		{"V5", "myiothub.azure-devices.net/devices/my_device", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", 1578941692,
			"SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D&se=1578941692"},
		{"V5-module", "myiothub.azure-devices.net/devices/my_device/modules/my_module", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", 1578941692,
			"SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module&sig=iAQRxkGTvQpFKsLRYZsj0xf8UcgKBbNZhWDb5pCSK9o%3D&se=1578941692"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SASToken(tc.uri, tc.key, time.Unix(tc.expiry, 0), "")
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	if tok, _ := SASToken("uri", "cGFzc3dvcmQ=", time.Unix(12345, 0), "device connect"); tok != "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345&skn=device%20connect" {
		t.Errorf("policy token %s", tok)
	}
	if _, err := SASToken("uri", "not base64!", time.Unix(1, 0), ""); err == nil {
		t.Error("a key that is not base64 was accepted")
	}
}

func TestAzureUsernameAndTopics(t *testing.T) {
	if got, want := AzureUsername("myhub.azure-devices.net", "gw-01"), "myhub.azure-devices.net/gw-01/?api-version=2021-04-12"; got != want {
		t.Errorf("username %q, want %q", got, want)
	}
	d := azureDialect{host: "myhub.azure-devices.net", device: "gw-leaf-01"}
	// IOTHUB.md's property-bag vector, plus the gateway's sequence number.
	r := &msg.Record{Seq: 7, ID: "msg-0001", Device: "gw-leaf-01", Props: msg.Props{
		{Key: "unit", Value: "degC"}, {Key: "$.ce", Value: "utf-8"}, {Key: "alert level", Value: "high temp"},
		{Key: "$.ct", Value: "application/json;charset=utf-8"}, {Key: "$.cid", Value: "corr 1"}}}
	want := "devices/gw-leaf-01/messages/events/%24.mid=msg-0001&%24.cid=corr%201&%24.ct=application%2Fjson%3Bcharset%3Dutf-8&%24.ce=utf-8&alert%20level=high%20temp&outpost-seq=7&unit=degC"
	if got := d.topic(r); got != want {
		t.Errorf("topic\n got %s\nwant %s", got, want)
	}
	// A leaf under the gateway's identity is named in a property.
	r.Device, r.Props = "meter-1", nil
	if got, want := d.topic(r), "devices/gw-leaf-01/messages/events/%24.mid=msg-0001&outpost-device=meter-1&outpost-seq=7"; got != want {
		t.Errorf("leaf topic\n got %s\nwant %s", got, want)
	}
	if got := d.c2dTopic(); got != "devices/gw-leaf-01/messages/devicebound/#" {
		t.Errorf("c2d filter %q", got)
	}
	// IOTHUB.md's C2D vector: percent-decoding only.
	dev, ps, err := azureDialect{device: "fake_device"}.c2d("devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=fake_content_type&%24.ce=utf-8&iothub-ack=positive")
	if err != nil || dev != "fake_device" {
		t.Fatalf("c2d: %q %v", dev, err)
	}
	for k, v := range map[string]string{"$.mid": "6b822696-f75a-46f5-8b02-0680db65abf5", "$.to": "/devices/fake_device/messages/devicebound", "$.exp": "3237-07-19T23:06:40.0000000Z", "iothub-ack": "positive"} {
		if got, _ := ps.Get(k); got != v {
			t.Errorf("c2d %s = %q, want %q", k, got, v)
		}
	}
	if dev, _, err := (azureDialect{device: "gw"}).c2d("devices/gw/messages/devicebound/outpost-device=meter-1&x=1"); err != nil || dev != "meter-1" {
		t.Errorf("leaf C2D routed to %q (%v), want meter-1", dev, err)
	}
	if _, _, err := (azureDialect{device: "gw"}).c2d("devices/other/messages/devicebound/"); err == nil {
		t.Error("C2D for another identity accepted")
	}
}

func TestAzureCredentialsExpire(t *testing.T) {
	d := azureDialect{host: "h.azure-devices.net", device: "gw", key: "c2VjcmV0", ttl: time.Hour}
	now := time.Unix(1_800_000_000, 0)
	user, pass, exp, err := d.credentials(now)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := SASToken("h.azure-devices.net/devices/gw", "c2VjcmV0", now.Add(time.Hour), "")
	if user != "h.azure-devices.net/gw/?api-version=2021-04-12" || pass != want || !exp.Equal(now.Add(time.Hour)) {
		t.Errorf("credentials %q %q %v", user, pass, exp)
	}
	x509 := azureDialect{host: "h", device: "gw"}
	if _, pass, exp, _ := x509.credentials(now); pass != "" || !exp.IsZero() {
		t.Errorf("X.509 identity got a password or an expiry")
	}
}
