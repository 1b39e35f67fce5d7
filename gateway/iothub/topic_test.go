package iothub

import (
	"errors"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestTwinTopics(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want TwinTopic
		out  string // the built topic, when it differs from in
	}{
		{"$iothub/twin/GET/?$rid=1", TwinTopic{Op: TwinGet, RID: "1"}, ""},
		{"$iothub/twin/GET/?$rid=5b6c2ca0-3a4e-4f4e-a0b0-8c5a1c1e2f33", TwinTopic{Op: TwinGet, RID: "5b6c2ca0-3a4e-4f4e-a0b0-8c5a1c1e2f33"}, ""},
		{"$iothub/twin/GET?$rid=1", TwinTopic{Op: TwinGet, RID: "1"}, "$iothub/twin/GET/?$rid=1"},
		{"$iothub/twin/PATCH/properties/reported/?$rid=42", TwinTopic{Op: TwinReported, RID: "42"}, ""},
		{"$iothub/twin/PATCH/properties/reported/?$rid=a%20b", TwinTopic{Op: TwinReported, RID: "a b"}, ""},
		{"$iothub/twin/res/200/?$rid=1", TwinTopic{Op: TwinResponse, Status: 200, RID: "1"}, ""},
		{"$iothub/twin/res/204/?$rid=7&$version=3", TwinTopic{Op: TwinResponse, Status: 204, RID: "7", Version: 3}, ""},
		{"$iothub/twin/res/429/?$rid=7", TwinTopic{Op: TwinResponse, Status: 429, RID: "7"}, ""},
		{"$iothub/twin/PATCH/properties/desired/?$version=12", TwinTopic{Op: TwinDesired, Version: 12}, ""},
	} {
		got, err := ParseTwinTopic(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
			continue
		}
		want := tc.out
		if want == "" {
			want = tc.in
		}
		if s := got.String(); s != want {
			t.Errorf("%q: String %q", tc.in, s)
		}
	}
	for _, bad := range []string{"", "$iothub/twin/", "$iothub/twin/GET/", "$iothub/twin/GET/?$rid=", "$iothub/twin/PUT/?$rid=1",
		"$iothub/twin/res/abc/?$rid=1", "$iothub/twin/res/-1/?$rid=1", "$iothub/twin/res/1000/?$rid=1", "$iothub/twin/res/200/?$rid=1&$version=0",
		"$iothub/twin/PATCH/properties/desired/", "$iothub/twin/PATCH/properties/desired/?$version=x", "$iothub/methods/POST/m/?$rid=1",
		"devices/d/messages/events/", "$iothub/twin/GET/?$rid=%zz"} {
		if got, err := ParseTwinTopic(bad); !errors.Is(err, ErrNotTwin) {
			t.Errorf("%q: %+v %v, want ErrNotTwin", bad, got, err)
		}
	}
}

func TestMethodTopics(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want MethodTopic
	}{
		{"$iothub/methods/POST/reboot/?$rid=1", MethodTopic{Name: "reboot", RID: "1"}},
		{"$iothub/methods/POST/set_Point-2/?$rid=ab", MethodTopic{Name: "set_Point-2", RID: "ab"}},
		{"$iothub/methods/res/200/?$rid=2", MethodTopic{Response: true, Status: 200, RID: "2"}},
		{"$iothub/methods/res/0/?$rid=2", MethodTopic{Response: true, Status: 0, RID: "2"}},
	} {
		got, err := ParseMethodTopic(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.in {
			t.Errorf("%q: String %q", tc.in, s)
		}
	}
	for _, bad := range []string{"", "$iothub/methods/POST/?$rid=1", "$iothub/methods/POST/a/b/?$rid=1", "$iothub/methods/POST/m/",
		"$iothub/methods/POST/m/?$rid=", "$iothub/methods/GET/m/?$rid=1", "$iothub/methods/res/x/?$rid=1", "$iothub/methods/POST/a+b/?$rid=1",
		"$iothub/twin/GET/?$rid=1"} {
		if got, err := ParseMethodTopic(bad); !errors.Is(err, ErrNotMethod) {
			t.Errorf("%q: %+v %v, want ErrNotMethod", bad, got, err)
		}
	}
}

// The devicebound vectors of IOTHUB.md §4.
func TestC2DTopic(t *testing.T) {
	py := "devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=fake_content_type&%24.ce=utf-8&iothub-ack=positive"
	dev, m, err := ParseC2DTopic(py)
	if err != nil {
		t.Fatal(err)
	}
	want := C2D{MessageID: "6b822696-f75a-46f5-8b02-0680db65abf5", CorrelationID: "fake_corid", To: "/devices/fake_device/messages/devicebound",
		ContentType: "fake_content_type", ContentEncoding: "utf-8", Ack: "positive", Expiry: time.Date(3237, 7, 19, 23, 6, 40, 0, time.UTC)}
	if dev != "fake_device" || !m.Expiry.Equal(want.Expiry) || m.MessageID != want.MessageID || m.CorrelationID != want.CorrelationID ||
		m.To != want.To || m.ContentType != want.ContentType || m.ContentEncoding != want.ContentEncoding || m.Ack != want.Ack || len(m.Props) != 0 {
		t.Errorf("%s %+v", dev, m)
	}
	// Built again, it parses to the same message (the order of a bag is free).
	_, again, err := ParseC2DTopic(C2DTopic(dev, m))
	if err != nil || again.MessageID != m.MessageID || !again.Expiry.Equal(m.Expiry) || again.To != m.To || again.Ack != m.Ack {
		t.Errorf("rebuilt: %+v %v", again, err)
	}

	emb := "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla"
	dev, m, err = ParseC2DTopic(emb)
	wantProps := msg.Props{{Key: "abc", Value: "123"}, {Key: "ghi", Value: "/some/thing"}, {Key: "jkl", Value: "/some/thing/?bla=bla"}}
	if err != nil || dev != "useragent_c" || m.To != "/devices/useragent_c/messages/deviceBound" || len(m.Props) != 3 {
		t.Fatalf("%s %+v %v", dev, m, err)
	}
	for i, p := range wantProps {
		if m.Props[i] != p {
			t.Errorf("prop %d: %+v", i, m.Props[i])
		}
	}

	got := C2DTopic("leaf-1", C2D{MessageID: "m 1", CorrelationID: "c1", ContentType: "application/json", Props: msg.Props{{Key: "k", Value: "v"}}})
	if got != "devices/leaf-1/messages/devicebound/%24.mid=m%201&%24.cid=c1&%24.ct=application%2Fjson&%24.to=%2Fdevices%2Fleaf-1%2Fmessages%2Fdevicebound&k=v" {
		t.Errorf("built %s", got)
	}
	if _, _, err := ParseC2DTopic("devices/d/messages/devicebound/%24.exp=tomorrow"); err == nil {
		t.Error("bad $.exp accepted")
	}
}
