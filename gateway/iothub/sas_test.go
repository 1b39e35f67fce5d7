package iothub

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustKey(t testing.TB, b64 string) []byte {
	t.Helper()
	k, err := DecodeKey(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The vectors of IOTHUB.md §2.
func TestSignVectors(t *testing.T) {
	v3 := "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
	for _, tc := range []struct {
		name, key, resource string
		se                  int64
		want                string
	}{
		{"V1", "c2VjcmV0", "test.azure-devices.net/devices/test", 1483236061,
			"SharedAccessSignature sr=test.azure-devices.net%2Fdevices%2Ftest&sig=IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU%3D&se=1483236061"},
		{"V2", "cGFzc3dvcmQ=", "uri", 12345,
			"SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"},
		{"V5", v3, "myiothub.azure-devices.net/devices/my_device", 1578941692,
			"SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D&se=1578941692"},
		{"V5 module", v3, "myiothub.azure-devices.net/devices/my_device/modules/my_module", 1578941692,
			"SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module&sig=iAQRxkGTvQpFKsLRYZsj0xf8UcgKBbNZhWDb5pCSK9o%3D&se=1578941692"},
	} {
		got := Sign(tc.resource, mustKey(t, tc.key), time.Unix(tc.se, 0), "")
		if got != tc.want {
			t.Errorf("%s: Sign =\n %s\nwant\n %s", tc.name, got, tc.want)
		}
		exp, err := Verify(tc.want, mustKey(t, tc.key), tc.resource, time.Unix(tc.se-1, 0))
		if err != nil || exp.Unix() != tc.se {
			t.Errorf("%s: Verify = %v, %v", tc.name, exp, err)
		}
	}
	// V3: the raw HMAC.
	if got := base64.StdEncoding.EncodeToString(sign(mustKey(t, v3), "sign this message")); got != "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M=" {
		t.Errorf("V3: %s", got)
	}
	// V1 as amenzhinsky/iothub writes it, with an empty skn.
	v1 := "SharedAccessSignature sr=test.azure-devices.net%2Fdevices%2Ftest&sig=IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU%3D&se=1483236061&skn="
	if _, err := Verify(v1, []byte("secret"), "/devices/test", time.Unix(1483236000, 0)); err != nil {
		t.Errorf("V1 with empty skn: %v", err)
	}
}

func TestSignPolicy(t *testing.T) {
	tok := Sign("h/devices", []byte("k"), time.Unix(10, 0), "device policy")
	if !strings.HasSuffix(tok, "&se=10&skn=device%20policy") {
		t.Errorf("%s", tok)
	}
	s, err := ParseSAS(tok)
	if err != nil || s.KeyName != "device policy" || s.Resource != "h/devices" {
		t.Errorf("%+v %v", s, err)
	}
}

func TestParseSASAnyOrder(t *testing.T) {
	key := []byte("secret")
	good := Sign("hub.example/devices/leaf-1", key, time.Unix(2000, 0), "")
	s, err := ParseSAS(good)
	if err != nil {
		t.Fatal(err)
	}
	sig := strings.TrimPrefix(strings.Split(good, "&")[1], "sig=")
	for _, tok := range []string{
		"SharedAccessSignature sig=" + sig + "&se=2000&sr=hub.example%2Fdevices%2Fleaf-1",
		"SharedAccessSignature se=2000&sr=hub.example%2Fdevices%2Fleaf-1&sig=" + sig,
		"  " + good + " \n",
	} {
		got, err := ParseSAS(tok)
		if err != nil || got.Resource != s.Resource || got.Signature != s.Signature || !got.Expiry.Equal(s.Expiry) {
			t.Errorf("%q: %+v %v", tok, got, err)
		}
		if _, err := Verify(tok, key, "/devices/leaf-1", time.Unix(1999, 0)); err != nil {
			t.Errorf("%q: %v", tok, err)
		}
	}
	// Lower-case hex, as the doc text asks: the signature covers sr as sent.
	lower := "hub.example%2fdevices%2fleaf-1"
	tok := "SharedAccessSignature sr=" + lower + "&sig=" + base64.StdEncoding.EncodeToString(sign(key, lower+"\n2000")) + "&se=2000"
	if _, err := Verify(tok, key, "/devices/leaf-1", time.Unix(1999, 0)); err != nil {
		t.Errorf("lower-case hex: %v", err)
	}
}

func TestVerifyErrors(t *testing.T) {
	key := []byte("secret")
	now := time.Unix(100000, 0)
	good := Sign("myhub.azure-devices.net/devices/leaf-1", key, now.Add(time.Hour), "")
	for _, tc := range []struct {
		name, token, want string
		key               []byte
		err               error
	}{
		{"good, any host", good, "/devices/leaf-1", key, nil},
		{"good, that host", good, "myhub.azure-devices.net/devices/leaf-1", key, nil},
		{"host without case", good, "MyHub.Azure-Devices.net/devices/leaf-1/", key, nil},
		{"other host", good, "gw.local/devices/leaf-1", key, ErrTokenResource},
		{"wrong device", good, "/devices/leaf-2", key, ErrTokenResource},
		{"module token for the device", Sign("h/devices/leaf-1/modules/m", key, now.Add(time.Hour), ""), "/devices/leaf-1", key, ErrTokenResource},
		{"hub-wide token", Sign("h/devices", key, now.Add(time.Hour), ""), "/devices/leaf-1", key, ErrTokenResource},
		{"wrong key", good, "/devices/leaf-1", []byte("other"), ErrTokenSignature},
		{"empty key", good, "/devices/leaf-1", nil, ErrTokenSignature},
		{"tampered se", strings.Replace(good, "&se=103600", "&se=103601", 1), "/devices/leaf-1", key, ErrTokenSignature},
		{"expired", Sign("h/devices/leaf-1", key, now, ""), "/devices/leaf-1", key, ErrTokenExpired},
		{"long expired", Sign("h/devices/leaf-1", key, now.Add(-time.Hour), ""), "/devices/leaf-1", key, ErrTokenExpired},
		{"no prefix", strings.TrimPrefix(good, "SharedAccessSignature "), "/devices/leaf-1", key, ErrTokenFormat},
		{"no sig", "SharedAccessSignature sr=a%2Fdevices%2Fb&se=5000", "/devices/b", key, ErrTokenFormat},
		{"no se", "SharedAccessSignature sr=a%2Fdevices%2Fb&sig=IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU%3D", "/devices/b", key, ErrTokenFormat},
		{"bad se", strings.Replace(good, "&se=103600", "&se=1036x0", 1), "/devices/leaf-1", key, ErrTokenFormat},
		{"negative se", strings.Replace(good, "&se=103600", "&se=-103600", 1), "/devices/leaf-1", key, ErrTokenFormat},
		{"twice", good + "&se=103600", "/devices/leaf-1", key, ErrTokenFormat},
		{"unknown field", good + "&x=1", "/devices/leaf-1", key, ErrTokenFormat},
		{"short sig", "SharedAccessSignature sr=a%2Fdevices%2Fb&sig=AAAA&se=5000", "/devices/b", key, ErrTokenFormat},
		{"bad escape", "SharedAccessSignature sr=a%2Gdevices&sig=AAAA&se=5000", "/devices/b", key, ErrTokenFormat},
		{"empty", "", "/devices/b", key, ErrTokenFormat},
	} {
		exp, err := Verify(tc.token, tc.key, tc.want, now)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
		if tc.err == nil && !exp.Equal(now.Add(time.Hour)) {
			t.Errorf("%s: expiry %v", tc.name, exp)
		}
	}
}

func TestDecodeKey(t *testing.T) {
	if k, err := DecodeKey(" c2VjcmV0\n"); err != nil || string(k) != "secret" {
		t.Errorf("%q %v", k, err)
	}
	for _, bad := range []string{"", "not base64!", "===="} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
