package iothub

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func FuzzParseSAS(f *testing.F) {
	f.Add("SharedAccessSignature sr=test.azure-devices.net%2Fdevices%2Ftest&sig=IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU%3D&se=1483236061&skn=")
	f.Add("SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345")
	f.Add("SharedAccessSignature sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D&se=1578941692&sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device")
	f.Add("SharedAccessSignature sr=h%2Fdevices&sig=AAAA&se=1&skn=policy")
	f.Add("SharedAccessSignature sr=%zz&se=+1")
	f.Fuzz(func(t *testing.T, tok string) {
		key := []byte("secret")
		s, err := ParseSAS(tok)
		_, verr := Verify(tok, key, "/devices/test", time.Unix(1483236000, 0))
		if err != nil {
			if verr == nil {
				t.Fatalf("Verify accepted a token ParseSAS refuses: %q", tok)
			}
			return
		}
		// A token for the same resource that we sign verifies.
		again := Sign(s.Resource, key, s.Expiry, s.KeyName)
		s2, err := ParseSAS(again)
		if err != nil || s2.Resource != s.Resource || !s2.Expiry.Equal(s.Expiry) || s2.KeyName != s.KeyName {
			t.Fatalf("Sign(%q) = %q: %+v %v", s.Resource, again, s2, err)
		}
		if s.Resource[0] == '/' {
			return // no host: matches no "{host}/devices/{id}"
		}
		if _, err := Verify(again, key, s.Resource, s.Expiry.Add(-time.Second)); err != nil {
			t.Fatalf("own token %q: %v", again, err)
		}
	})
}

func FuzzParseUsername(f *testing.F) {
	f.Add("myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.0.0")
	f.Add("hub/leaf-1/api-version=2016-11-14&DeviceClientType=x")
	f.Add("hub/edge-1/mod-a/?api-version=2018-06-30&model-id=dtmi%3Ax%3B1")
	f.Add("hub/leaf-1")
	f.Add("/a//?")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsername(s)
		if err != nil {
			return
		}
		again, err := ParseUsername(u.String())
		if u.APIVersion == "" {
			u.APIVersion = DefaultAPIVersion
		}
		if err != nil || again != u {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", s, u, u.String(), again, err)
		}
	})
}

func FuzzTwinTopic(f *testing.F) {
	for _, s := range []string{"$iothub/twin/GET/?$rid=1", "$iothub/twin/PATCH/properties/reported/?$rid=a%20b",
		"$iothub/twin/res/204/?$rid=7&$version=3", "$iothub/twin/PATCH/properties/desired/?$version=12", "$iothub/twin/res/200?$rid=x&y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tt, err := ParseTwinTopic(s)
		if err != nil {
			return
		}
		again, err := ParseTwinTopic(tt.String())
		if err != nil || again != tt {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", s, tt, tt.String(), again, err)
		}
	})
}

func FuzzMethodTopic(f *testing.F) {
	for _, s := range []string{"$iothub/methods/POST/reboot/?$rid=1", "$iothub/methods/res/200/?$rid=2", "$iothub/methods/POST/a%2Fb?$rid=%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMethodTopic(s)
		if err != nil {
			return
		}
		again, err := ParseMethodTopic(m.String())
		if err != nil || again != m {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", s, m, m.String(), again, err)
		}
	})
}

func FuzzC2DTopic(f *testing.F) {
	f.Add("devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b82&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=t&%24.ce=utf-8&iothub-ack=positive")
	f.Add("devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123&ghi=%2Fsome%2Fthing")
	f.Add("devices/d/messages/devicebound/")
	f.Add("devices/d/messages/devicebound/%24.exp=9999-12-31T23:00:00-05:00")
	f.Fuzz(func(t *testing.T, s string) {
		dev, m, err := ParseC2DTopic(s)
		if err != nil {
			return
		}
		dev2, m2, err := ParseC2DTopic(C2DTopic(dev, m))
		if err != nil || dev2 != dev {
			t.Fatalf("%q -> %q: %v", s, C2DTopic(dev, m), err)
		}
		if m.To == "" {
			m.To = "/devices/" + dev + "/messages/devicebound"
		}
		m.Expiry, m2.Expiry = m.Expiry.Truncate(100*time.Nanosecond).UTC(), m2.Expiry.UTC()
		if !m.Expiry.Equal(m2.Expiry) {
			t.Fatalf("%q: expiry %v -> %v", s, m.Expiry, m2.Expiry)
		}
		m.Expiry, m2.Expiry = time.Time{}, time.Time{}
		if len(m.Props) == 0 {
			m.Props = nil
		}
		if len(m2.Props) == 0 {
			m2.Props = nil
		}
		if !reflect.DeepEqual(m, m2) {
			// Application properties may come back in another order (sorted by name).
			m.Props, m2.Props = nil, nil
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("%q:\n%+v\n%+v", s, m, m2)
			}
		}
	})
}

func FuzzParsePatch(f *testing.F) {
	for _, s := range []string{`{"fw":"1.0","net":{"ip":"10.0.0.2","rssi":-70}}`, `{"a":[1,[2,{"b":"c"}]],"n":null,"f":1.50}`,
		`{"$version":3}`, `{"a":`, `{"i":4503599627370496}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePatch(b)
		if err != nil {
			if StatusOf(err) != StatusBadRequest {
				t.Fatalf("%q: status %d", b, StatusOf(err))
			}
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := ParsePatch(out)
		if err != nil || !reflect.DeepEqual(p, p2) {
			t.Fatalf("%q -> %s -> %v %v", b, out, p2, err)
		}
		s := Section{Props: map[string]any{"x": json.Number("1")}}
		if err := s.Apply(p); err != nil && StatusOf(err) != StatusTooLarge {
			t.Fatalf("Apply: %v", err)
		}
	})
}

// FuzzPending takes newline-separated JSON patches: the first is the start
// section, the rest are the patches made while offline.
func FuzzPending(f *testing.F) {
	f.Add([]byte("{\"a\":{\"x\":1}}\n{\"a\":null}\n{\"a\":{\"y\":2}}"))
	f.Add([]byte("{}\n{\"a\":1,\"o\":{\"x\":1}}\n{\"o\":{\"x\":null,\"z\":[1]}}\n{\"b\":true}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ps []Patch
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			p, err := ParsePatch(line)
			if err != nil {
				return
			}
			ps = append(ps, p)
		}
		if len(ps) < 2 {
			return
		}
		var q Pending
		for _, p := range ps[1:] {
			q.Add(p)
		}
		checkPending(t, ps[0], ps[1:], q.Patches())
	})
}

func FuzzMethodCall(f *testing.F) {
	f.Add([]byte(`{"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":300}`))
	f.Add([]byte(`{"responseTimeoutInSeconds":1e2}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseMethodCall(b)
		if err != nil {
			return
		}
		if c.ResponseTimeout < MinMethodTimeout || c.ResponseTimeout > MaxMethodTimeout || c.ConnectTimeout < 0 || c.ConnectTimeout > MaxConnectTimeout {
			t.Fatalf("%q: %+v", b, c)
		}
		if _, err := json.Marshal(MethodResult{Status: 200, Payload: c.Payload}); err != nil {
			t.Fatalf("%q: result: %v", b, err)
		}
	})
}
