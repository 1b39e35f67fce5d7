package hub

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

const (
	sasKey1 = "bGVhZi0xLWtleS0wMTIzNDU2Nzg5YWJjZGVm" // base64 of a test key
	sasKey2 = "c2Vjb25kLWxlYWYta2V5"
)

func sasToken(t testing.TB, host, id, key string, ttl time.Duration) string {
	t.Helper()
	k, err := iothub.DecodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return iothub.Sign(iothub.DeviceResource(host, id), k, time.Now().Add(ttl), "")
}

func sasUser(host, id string) string {
	return host + "/" + id + "/?api-version=2021-04-12&DeviceClientType=outpost-test"
}

// startSASHub has az-1 (SAS key only), az-2 (SAS key in a file, and a
// password) and leaf-1 (password only).
func startSASHub(t testing.TB, mod func(*Options)) (*Hub, *fakeStore) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "az-2.key")
	if err := os.WriteFile(file, []byte(sasKey2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &fakeStore{}
	h := startHub(t, st, func(o *Options) {
		o.Clients = []Client{
			{ID: "az-1", SASKey: sasKey1},
			{ID: "az-2", SASKeyFile: file, PasswordHash: testHash},
			{ID: "leaf-1", PasswordHash: testHash},
		}
		if mod != nil {
			mod(o)
		}
	})
	return h, st
}

// connackCode sends a CONNECT and returns the CONNACK's return/reason code,
// with the conn.
func connackCode(t testing.TB, addr string, version byte, id, user, pass string) (byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(mqttConnect(version, id, user, pass)); err != nil {
		t.Fatal(err)
	}
	typ, body := readPacket(t, c)
	if typ>>4 != 2 || len(body) < 2 {
		t.Fatalf("CONNACK: type %#x body %x", typ, body)
	}
	return body[1], c
}

func mqttConnect(version byte, id, user, pass string) []byte {
	if version == 5 {
		return connect5(id, user, pass)
	}
	return connect4(id, user, pass)
}

func TestSASLogin(t *testing.T) {
	h, st := startSASHub(t, nil)
	addr := h.Addr()
	good := sasToken(t, "myhub.azure-devices.net", "az-1", sasKey1, time.Hour)
	for _, tc := range []struct {
		name, id, user, pass string
		want4, want5         byte // CONNACK codes: 0 accepted, 5 / 0x86 refused
	}{
		{"good token", "az-1", sasUser("myhub.azure-devices.net", "az-1"), good, 0, 0},
		{"gateway host in username and token", "az-1", sasUser("127.0.0.1", "az-1"), sasToken(t, "127.0.0.1", "az-1", sasKey1, time.Hour), 0, 0},
		{"old username form", "az-1", "myhub/az-1/api-version=2016-11-14", good, 0, 0},
		{"key from a file", "az-2", sasUser("h", "az-2"), sasToken(t, "h", "az-2", sasKey2, time.Hour), 0, 0},
		{"password still works", "az-2", "az-2", testPassword, 0, 0},
		{"bcrypt leaf", "leaf-1", "leaf-1", testPassword, 0, 0},
		{"wrong key", "az-1", sasUser("h", "az-1"), sasToken(t, "h", "az-1", sasKey2, time.Hour), 5, 0x86},
		{"expired", "az-1", sasUser("h", "az-1"), sasToken(t, "h", "az-1", sasKey1, -time.Second), 5, 0x86},
		{"token of another device", "az-1", sasUser("h", "az-1"), sasToken(t, "h", "az-2", sasKey1, time.Hour), 5, 0x86},
		{"username of another device", "az-1", sasUser("h", "az-2"), good, 5, 0x86},
		{"module username", "az-1", "h/az-1/m/?api-version=2021-04-12", good, 5, 0x86},
		{"no password", "az-1", sasUser("h", "az-1"), "", 5, 0x86},
		{"garbage token", "az-1", sasUser("h", "az-1"), "SharedAccessSignature sr=x", 5, 0x86},
		{"token as id login", "az-1", "az-1", good, 5, 0x86},
		{"SAS for a bcrypt-only leaf", "leaf-1", sasUser("h", "leaf-1"), sasToken(t, "h", "leaf-1", sasKey1, time.Hour), 5, 0x86},
		{"unknown client", "az-9", sasUser("h", "az-9"), sasToken(t, "h", "az-9", sasKey1, time.Hour), 5, 0x86},
	} {
		for _, v := range []byte{4, 5} {
			want := tc.want4
			if v == 5 {
				want = tc.want5
			}
			code, c := connackCode(t, addr, v, tc.id, tc.user, tc.pass)
			if code != want {
				t.Errorf("%s (MQTT %d): CONNACK %#x, want %#x", tc.name, v, code, want)
			}
			c.Close()
		}
	}

	// A SAS leaf publishes to its own D2C topic like any leaf.
	_, c := connackCode(t, addr, 4, "az-1", sasUser("h", "az-1"), good)
	if _, err := c.Write(publish4(msg.EventsTopic("az-1", msg.Props{{Key: "$.mid", Value: "m-1"}}), 1, []byte("hi"))); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readPacket(t, c); typ>>4 != 4 {
		t.Fatalf("want PUBACK, got %#x", typ)
	}
	recs := st.records()
	if len(recs) != 1 || recs[0].Device != "az-1" || recs[0].ID != "m-1" {
		t.Errorf("stored %+v", recs)
	}
	c.Close()
	waitFor(t, "expiry timers released", func() bool { return h.sas.pending() == 0 })
}

// A connection ends when its token expires: MQTT 3.1.1 is closed, MQTT 5
// first gets DISCONNECT 0x87 (not authorized).
func TestSASExpiryCloses(t *testing.T) {
	h, _ := startSASHub(t, nil)
	for _, v := range []byte{4, 5} {
		start := time.Now()
		tok := sasToken(t, "h", "az-1", sasKey1, 2*time.Second)
		code, c := connackCode(t, h.Addr(), v, "az-1", sasUser("h", "az-1"), tok)
		if code != 0 {
			t.Fatalf("MQTT %d: CONNACK %#x", v, code)
		}
		typ, body, err := readPacketErr(c, 10*time.Second)
		gone := time.Since(start)
		switch v {
		case 4:
			if !errors.Is(err, io.EOF) && !isClosed(err) {
				t.Errorf("MQTT 4: want the connection closed, got %#x %x %v", typ, body, err)
			}
		case 5:
			if err != nil || typ>>4 != 14 || len(body) < 1 || body[0] != 0x87 {
				t.Errorf("MQTT 5: want DISCONNECT 0x87, got %#x %x %v", typ, body, err)
			}
		}
		// se has whole seconds: the token ends 1–2 s after it was made.
		if gone < time.Second || gone > 5*time.Second {
			t.Errorf("MQTT %d: closed after %v, want at the token's expiry (~2s)", v, gone)
		}
		waitFor(t, "expiry timer released", func() bool { return h.sas.pending() == 0 })
	}
	// A fresh token logs in again.
	if code, _ := connackCode(t, h.Addr(), 4, "az-1", sasUser("h", "az-1"), sasToken(t, "h", "az-1", sasKey1, time.Hour)); code != 0 {
		t.Errorf("reconnect with a fresh token: CONNACK %#x", code)
	}
}

func isClosed(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// An X.509 leaf may send an IoT Hub username (the SDKs do).
func TestX509AzureUsername(t *testing.T) {
	h, p := startTLSHub(t, &fakeStore{})
	crt, key := p.issue(t, "leaf-1", false)
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsPaho(t, h, p, "leaf-1", sasUser("myhub.azure-devices.net", "leaf-1"), "", &cert); err != nil {
		t.Errorf("X.509 with an IoT Hub username: %v", err)
	}
	if err := tlsPaho(t, h, p, "leaf-1", sasUser("h", "leaf-2"), "", &cert); err == nil {
		t.Error("X.509 with another device's username was accepted")
	}
}

func TestSASConfig(t *testing.T) {
	c := DefaultConfig()
	c.Clients = []Client{{ID: "az-1", SASKey: sasKey1}, {ID: "az-2", SASKeyFile: "/k"}}
	if err := c.Validate(); err != nil {
		t.Errorf("SAS clients without password_hash: %v", err)
	}
	for _, bad := range []Client{{ID: "a", SASKey: "not base64!"}, {ID: "a", SASKeyFile: "/nonexistent/key"}, {ID: "a", SASKey: sasKey1, SASKeyFile: "/k"}} {
		if _, err := New(Options{Config: Config{Listen: "127.0.0.1:0", Clients: []Client{bad}}}, &fakeStore{}); err == nil {
			t.Errorf("%+v: New accepted it", bad)
		}
	}
}
