package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

const hash = "$2a$10$SFEetvJTni7.DP0arh0hTOdm.K/CH8LuZCoBNGAVLGzGG8KIT9WSS"

func TestExampleValidates(t *testing.T) {
	c, err := Parse("example.yaml", Example)
	if err != nil {
		t.Fatalf("Example does not validate:\n%v", err)
	}
	if c.Gateway.ID != "gw-01" || c.Cloud.Protocol != cloudlink.ProtocolMQTT || len(c.Hub.Clients) != 1 {
		t.Errorf("Example parsed to %+v", c)
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	want := &Config{
		Gateway: Gateway{DataDir: "/var/lib/outpost", StallTimeout: 2 * time.Minute},
		Hub: Hub{Config: hub.Config{Listen: "127.0.0.1:1883", MaxMessageBytes: 262144, MaxInflight: 256,
			SessionExpiry: 24 * time.Hour, ConnectRate: 20, ConnectBurst: 100,
			ConnectTimeout: 10 * time.Second, MaxConnections: 1000, MaxConnectPacket: 16 * msg.KiB}},
		HTTP:     HTTP{Listen: "127.0.0.1:9180"},
		Store:    store.Config{MaxBytes: 512 << 20, WhenFull: store.DropOldest, TTL: 168 * time.Hour},
		Cloud:    cloudlink.Config{Protocol: cloudlink.ProtocolNone, MaxInflight: 64, Keepalive: 30 * time.Second, Identity: cloudlink.IdentityGateway},
		Commands: Commands{TTL: time.Hour},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", c, want)
	}
	// Default needs only an id to be valid.
	err := c.Validate()
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Path != "gateway.id" || es[0].Line != 0 {
		t.Fatalf("Default().Validate() = %v, want only gateway.id missing (no position)", err)
	}
	c.Gateway.ID = "demo"
	if err := c.Validate(); err != nil {
		t.Errorf("Default() with an id: %v", err)
	}
}

// A file holding only the required key gets every default.
func TestMinimalGetsDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte("gateway: {id: gw-9}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Gateway.ID = "gw-9"
	want.File = "min.yaml"
	c.where = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c, want)
	}
}

func TestFullSample(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "full.yaml"))
	if err != nil {
		t.Fatalf("full.yaml:\n%v", err)
	}
	if c.File != "testdata/full.yaml" {
		t.Errorf("File = %q", c.File)
	}
	if got := c.Hub.Clients[1]; got.ID != "dashboard" || !got.ReadAll || got.Priority != msg.Low || got.PasswordHash != hash {
		t.Errorf("clients[1] = %+v", got)
	}
	if c.Hub.Clients[0].Priority != msg.Normal || c.Hub.Clients[2].Priority != msg.High {
		t.Errorf("client priorities %v %v", c.Hub.Clients[0].Priority, c.Hub.Clients[2].Priority)
	}
	if c.Hub.TLS.ClientCAFile != "/etc/outpost/ca.crt" || c.Hub.TLSListen != ":8883" || c.Hub.SessionExpiry != 2*time.Hour {
		t.Errorf("hub = %+v", c.Hub)
	}
	if c.Cloud.Pack != (cloudlink.PackConfig{MaxBytes: 4096, MaxDelay: 2 * time.Second}) || c.Cloud.ReplayRate != 500 || c.Cloud.Keepalive != 45*time.Second {
		t.Errorf("cloud = %+v", c.Cloud)
	}
	if c.Commands.TTL != 30*time.Minute {
		t.Errorf("commands.ttl = %v", c.Commands.TTL)
	}
	if len(c.Devices) != 3 {
		t.Fatalf("%d devices", len(c.Devices))
	}
	d := c.Devices[0]
	fc, ok := d.Adapter.(*fakeConfig)
	if d.ID != "meter-1" || d.Kind != "fake" || d.Priority != msg.High || !ok {
		t.Fatalf("devices[0] = %+v", d)
	}
	wantFake := &fakeConfig{
		URL:      "rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1",
		Interval: 5 * time.Second,
		Points:   []fakePoint{{"voltage", "float32", 0}, {"setpoint", "int16", 100}},
	}
	if !reflect.DeepEqual(fc, wantFake) {
		t.Errorf("devices[0].fake = %+v, want %+v", fc, wantFake)
	}
	if oc, ok := c.Devices[1].Adapter.(*otherConfig); !ok || oc.Port != "/dev/ttyUSB1" || c.Devices[1].Priority != msg.Normal {
		t.Errorf("devices[1] = %+v", c.Devices[1])
	}
	if fc := c.Devices[2].Adapter.(*fakeConfig); fc.Label != "front door" || fc.Interval != 5*time.Second {
		t.Errorf("devices[2].fake = %+v (want the kind's default interval kept)", fc)
	}
	const sum = "gw-01: hub 127.0.0.1:1883 + :8883 (tls) (3 clients), http 127.0.0.1:9180, store 512MiB drop-oldest, cloud mqtts://broker.example:8883, 3 devices (fake 2, other 1), 2 high priority"
	if got := c.Summary(); got != sum {
		t.Errorf("Summary() =\n%s\nwant\n%s", got, sum)
	}
}

const everyKeySrc = `
gateway: {id: gw-2, data_dir: /data, stall_timeout: 45s}
hub:
  listen: ""
  tls_listen: 0.0.0.0:8883
  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}
  max_message_bytes: 64KiB
  max_inflight: 10
  session_expiry: 90m
  connect_rate: 2.5
  connect_burst: 7
  connect_rate_per_address: 1.5
  connect_timeout: 3s
  max_connections: 50
  max_connect_packet: 4KiB
  clients:
    - {id: l1, password_hash: "$2a$10$SFEetvJTni7.DP0arh0hTOdm.K/CH8LuZCoBNGAVLGzGG8KIT9WSS", priority: high, read_all: true, operator: true, azure: {shared_access_key: "a2V5"}}
http: {listen: "[::1]:9999", token_file: /etc/outpost/http-token}
store: {max_bytes: 1GB, when_full: reject, ttl: 0}
cloud:
  protocol: azure-iothub
  url: mqtt://127.0.0.1:18883
  host: hub1.azure-devices.net
  device_id: gw-2-dev
  shared_access_key_file: /etc/outpost/key
  shared_access_key_name: device
  sas_ttl: 2h
  identity: per-device
  tls: {ca_file: ca.pem, server_name: hub1, insecure_skip_verify: true}
  max_inflight: 8
  pack: {max_bytes: 4096}
  keepalive: 1m
commands: {ttl: 10s}
devices:
  - {id: d1, priority: low, twin_interval: 2s, other: {port: p}, azure: {shared_access_key_file: /k}}
`

// TestEveryKey sets every non-device key to a value other than its default
// and checks where each one lands.
func TestEveryKey(t *testing.T) {
	c, err := Parse("every.yaml", []byte(everyKeySrc))
	if err != nil {
		t.Fatal(err)
	}
	c.where = nil
	want := &Config{
		File:    "every.yaml",
		Gateway: Gateway{ID: "gw-2", DataDir: "/data", StallTimeout: 45 * time.Second},
		Hub: Hub{Config: hub.Config{Listen: "", TLSListen: "0.0.0.0:8883", TLS: hub.TLSConfig{CertFile: "c.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem"},
			MaxMessageBytes: 64 * msg.KiB, MaxInflight: 10, SessionExpiry: 90 * time.Minute, ConnectRate: 2.5, ConnectBurst: 7,
			ConnectRatePerAddress: 1.5, ConnectTimeout: 3 * time.Second, MaxConnections: 50, MaxConnectPacket: 4 * msg.KiB},
			Clients: []Client{{Client: hub.Client{ID: "l1", PasswordHash: hash, Priority: msg.High, ReadAll: true, Operator: true}, Azure: &DeviceAzure{SharedAccessKey: "a2V5"}}}},
		HTTP:  HTTP{Listen: "[::1]:9999", TokenFile: "/etc/outpost/http-token"},
		Store: store.Config{MaxBytes: 1000 * 1000 * 1000, WhenFull: store.Reject, TTL: 0},
		Cloud: cloudlink.Config{Protocol: cloudlink.ProtocolAzure, URL: "mqtt://127.0.0.1:18883", Host: "hub1.azure-devices.net",
			DeviceID: "gw-2-dev", SharedAccessKeyFile: "/etc/outpost/key", SharedAccessKeyName: "device", SASTTL: 2 * time.Hour, Identity: cloudlink.IdentityPerDevice,
			TLS: cloudlink.TLSConfig{CAFile: "ca.pem", ServerName: "hub1", InsecureSkipVerify: true}, MaxInflight: 8,
			Pack: cloudlink.PackConfig{MaxBytes: 4096, MaxDelay: 2 * time.Second}, Keepalive: time.Minute},
		Commands: Commands{TTL: 10 * time.Second},
		Devices: []Device{{ID: "d1", Priority: msg.Low, Kind: "other", Adapter: &otherConfig{Port: "p"},
			Azure: &DeviceAzure{SharedAccessKeyFile: "/k"}, TwinInterval: 2 * time.Second}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c, want)
	}
}

// The mqtt-only cloud keys (the azure ones are in everyKeySrc).
const everyKeyMQTTSrc = `
gateway: {id: gw-2}
cloud:
  protocol: mqtt
  url: mqtts://broker.example
  client_id: gw-2-client
  username: gw-2-user
  password_file: /etc/outpost/pw
  pack: {max_bytes: 8KB, max_delay: 500ms}
  replay_rate: 0.5
`

func TestEveryKeyMQTT(t *testing.T) {
	c, err := Parse("every.yaml", []byte(everyKeyMQTTSrc))
	if err != nil {
		t.Fatal(err)
	}
	want := cloudlink.Config{Protocol: cloudlink.ProtocolMQTT, URL: "mqtts://broker.example", ClientID: "gw-2-client", Username: "gw-2-user",
		PasswordFile: "/etc/outpost/pw", Pack: cloudlink.PackConfig{MaxBytes: 8000, MaxDelay: 500 * time.Millisecond},
		MaxInflight: 64, ReplayRate: 0.5, Keepalive: 30 * time.Second, Identity: cloudlink.IdentityGateway}
	if c.Cloud != want {
		t.Errorf("cloud = %+v\nwant    %+v", c.Cloud, want)
	}
}

func TestAzureDefaults(t *testing.T) {
	c, err := Parse("az.yaml", []byte("gateway: {id: gw-3}\ncloud: {protocol: azure-iothub, host: h.azure-devices.net, shared_access_key: a2V5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cloud
	if cl.DeviceID != "gw-3" || cl.URL != "mqtts://h.azure-devices.net:8883" || cl.MaxInflight != 16 || cl.SASTTL != time.Hour || cl.Identity != cloudlink.IdentityGateway {
		t.Errorf("azure defaults: %+v", cl)
	}
	if s := c.Summary(); !strings.Contains(s, "cloud azure-iothub h.azure-devices.net as gw-3 (gateway identity)") {
		t.Errorf("Summary() = %s", s)
	}
}

// Anchors, aliases and merge keys work like in any YAML decoder.
func TestAnchors(t *testing.T) {
	src := `
gateway: {id: gw-1}
x-common: &fakebase {url: tcp://a, interval: 2s}
devices:
  - id: a
    fake:
      <<: *fakebase
  - id: b
    fake:
      <<: *fakebase
      interval: 3s
`
	_, err := Parse("a.yaml", []byte(src))
	// x-common is not a key we know: anchors still need a home.
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Line != 3 || !strings.Contains(es[0].Msg, `unknown key "x-common"`) {
		t.Fatalf("err = %v", err)
	}
	src = strings.Replace(src, "x-common: &fakebase {url: tcp://a, interval: 2s}\n", "", 1)
	src = strings.Replace(src, "  - id: a\n    fake:\n      <<: *fakebase\n", "  - id: a\n    fake: &fakebase {url: tcp://a, interval: 2s}\n", 1)
	c, err := Parse("a.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Devices[0].Adapter.(*fakeConfig), c.Devices[1].Adapter.(*fakeConfig)
	if a.URL != "tcp://a" || a.Interval != 2*time.Second || b.URL != "tcp://a" || b.Interval != 3*time.Second {
		t.Errorf("a = %+v, b = %+v", a, b)
	}
}

func TestSummaryHasNoSecrets(t *testing.T) {
	secrets := []string{"s3cr3t-pw", "c2VjcmV0LWtleQ==", hash, "tok=xyz"}
	files := map[string]string{
		"mqtt": `gateway: {id: gw-1}
hub: {clients: [{id: l, password_hash: "` + hash + `"}]}
cloud: {protocol: mqtt, url: "mqtts://gw:s3cr3t-pw@broker:8883"}
`,
		"mqtt-userinfo": `gateway: {id: gw-1}
cloud: {protocol: mqtt, url: "mqtts://gw@broker:8883", username: gw, password_file: /etc/s3cr3t-pw}
`,
		"azure": `gateway: {id: gw-1}
cloud: {protocol: azure-iothub, host: h.example, shared_access_key: "c2VjcmV0LWtleQ==", identity: per-device}
devices: [{id: d, other: {}, azure: {shared_access_key: "c2VjcmV0LWtleQ=="}}]
`,
	}
	for name, src := range files {
		c, err := Parse(name, []byte(src))
		out := ""
		if err != nil {
			out = err.Error()
		} else {
			out = c.Summary()
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s: output contains secret %q:\n%s", name, s, out)
			}
		}
	}
	// The summary of a code-built config with secrets set.
	c := Default()
	c.Gateway.ID = "gw"
	c.Cloud = cloudlink.Config{Protocol: cloudlink.ProtocolMQTT, URL: "mqtt://u:s3cr3t-pw@h:1883/?tok=xyz", PasswordFile: "/p"}
	if s := c.Summary(); strings.Contains(s, "s3cr3t") || strings.Contains(s, "xyz") || !strings.Contains(s, "mqtt://h:1883") {
		t.Errorf("Summary() = %s", s)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("err = %v", err)
	}
}

// identity per-device: a leaf needs its own key (or the policy key), an
// observer or operator client does not (it is not a device).
func TestPerDeviceObservers(t *testing.T) {
	base := ok + "cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5, identity: per-device}\n"
	if _, err := Parse("t.yaml", []byte(base+`hub: {clients: [{id: dash, password_hash: "`+hash+`", read_all: true}, {id: hmi, password_hash: "`+hash+`", operator: true}]}`+"\n")); err != nil {
		t.Errorf("observer and operator without azure keys: %v", err)
	}
	_, err := Parse("t.yaml", []byte(base+`hub: {clients: [{id: leaf-1, password_hash: "`+hash+`"}]}`+"\n"))
	if err == nil || !strings.Contains(err.Error(), "hub.clients[0] needs azure") {
		t.Errorf("leaf without a key: %v", err)
	}
}

// A hub client with an azure key logs in with SAS tokens under any cloud
// protocol: it needs no password_hash, and HubConfig hands the key to the hub.
func TestClientSASKey(t *testing.T) {
	for _, cloud := range []string{"", "cloud: {protocol: mqtt, url: mqtts://b:8883}\n",
		"cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5}\n",
		"cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5, identity: per-device}\n"} {
		c, err := Parse("t.yaml", []byte(ok+cloud+"hub: {clients: [{id: leaf-1, azure: {shared_access_key: bGVhZg==}}, {id: leaf-2, azure: {shared_access_key_file: /k}}]}\n"))
		if err != nil {
			t.Errorf("%q: %v", cloud, err)
			continue
		}
		hc := c.Hub.HubConfig()
		if hc.Clients[0].SASKey != "bGVhZg==" || hc.Clients[1].SASKeyFile != "/k" || hc.Clients[0].PasswordHash != "" {
			t.Errorf("%q: HubConfig clients %+v", cloud, hc.Clients)
		}
	}
	for _, tc := range []struct{ src, want string }{
		{"hub: {clients: [{id: leaf-1, azure: {shared_access_key: \"not base64!\"}}]}\n", `t.yaml:2:57: hub.clients[0].azure.shared_access_key is not a base64 key`},
		{"hub: {clients: [{id: leaf-1, azure: {shared_access_key: a2V5, shared_access_key_file: /k}}]}\n", `t.yaml:2:87: hub.clients[0].azure: set shared_access_key or shared_access_key_file, not both`},
		{"hub: {clients: [{id: leaf-1, azure: {}}]}\n", `t.yaml:2:17: hub.clients[0].password_hash is required (make one with ` + "`outpost passwd`" + `); no client connects anonymously`},
	} {
		_, err := Parse("t.yaml", []byte(ok+tc.src))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: got\n%v\nwant\n%s", tc.src, err, tc.want)
		}
	}
}
