package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/store"
)

var update = flag.Bool("update", false, "rewrite the .golden files in testdata")

// ok is a valid base that cases add lines to.
const ok = "gateway: {id: gw-1}\n"

func TestMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want string // the whole error text
	}{
		{"syntax", "gateway:\n  id: [gw-1\n", "t.yaml:2:7: sequence end token ']' not found"},
		{"tab indent", "gateway:\n\tid: gw-1\n", "t.yaml:2:1: found character '\t' that cannot start any token"},
		{"duplicate key", "gateway:\n  id: a\n  id: b\n", `t.yaml:3:3: mapping key "id" already defined at [2:3]`},
		{"two documents", ok + "---\ngateway: {id: b}\n", "t.yaml:3:1: only one YAML document is allowed"},
		{"not a mapping", "- a\n", "t.yaml:1:1: the file: want a mapping, got a list"},
		{"empty file", "", "t.yaml:1:1: gateway.id is required"},
		{"missing id", "gateway:\n  data_dir: /x\n", "t.yaml:1:1: gateway.id is required"},
		{"bad gateway id", "gateway: {id: \"gw 1\"}\n", `t.yaml:1:15: gateway.id: device id "gw 1": character ' ' not allowed`},
		{"stall timeout too short", "gateway: {id: gw-1, stall_timeout: 500ms}\n", "t.yaml:1:36: gateway.stall_timeout must be at least 1s, got 500ms"},
		{"stall timeout zero", "gateway: {id: gw-1, stall_timeout: 0s}\n", "t.yaml:1:36: gateway.stall_timeout must be at least 1s, got 0s"},
		{"unknown top key", ok + "hubb: {}\n", `t.yaml:2:1: unknown key "hubb" (did you mean "hub"?)`},
		{"unknown key", ok + "hub:\n  lisen: :1883\n", `t.yaml:3:3: unknown key "lisen" in hub (did you mean "listen"?)`},
		{"unknown key no hint", ok + "store:\n  colour: red\n", `t.yaml:3:3: unknown key "colour" in store (known keys: max_bytes, when_full, ttl)`},
		{"dash for underscore", ok + "hub: {max-inflight: 3}\n", `t.yaml:2:7: unknown key "max-inflight" in hub (did you mean "max_inflight"?)`},
		{"wrong type string", ok + "hub:\n  max_inflight: lots\n", `t.yaml:3:17: hub.max_inflight: want an integer, got "lots"`},
		{"wrong type mapping", ok + "hub:\n  listen: {a: b}\n", `t.yaml:3:11: hub.listen: want a string, got a mapping`},
		{"wrong type section", ok + "store: 5\n", `t.yaml:2:8: store: want a mapping, got 5`},
		{"wrong type bool", ok + "hub: {clients: [{id: a, password_hash: \"" + hash + "\", read_all: yes}]}\n", `t.yaml:2:114: hub.clients[0].read_all: want true or false, got "yes"`},
		{"wrong type list", ok + "devices: {id: a}\n", `t.yaml:2:10: devices: want a list, got a mapping`},
		{"overflow", ok + "hub: {max_inflight: 99999999999999999999}\n", `t.yaml:2:21: hub.max_inflight: want an integer, got "99999999999999999999"`},
		{"bad listen", ok + "hub:\n  listen: 1883\n", `t.yaml:3:11: hub.listen: bad listen address "1883": want host:port, e.g. 127.0.0.1:1883 or :1883`},
		{"bad port", ok + "http: {listen: \"localhost:99999\"}\n", `t.yaml:2:16: http.listen: bad port "99999" in "localhost:99999"`},
		{"same listen", ok + "http: {listen: \"127.0.0.1:1883\"}\n", `t.yaml:2:16: http.listen: same address as the hub's listener`},
		{"bad duration", ok + "store:\n  ttl: 7 days\n", `t.yaml:3:8: store.ttl: bad duration "7 days" (want a number with a unit: 500ms, 5s, 2m, 168h)`},
		{"duration without unit", ok + "commands: {ttl: 60}\n", `t.yaml:2:17: commands.ttl: duration 60 needs a unit: 60ms, 60s, 60m or 60h`},
		{"negative ttl", ok + "commands: {ttl: -1h}\n", `t.yaml:2:17: commands.ttl must be positive, got -1h0m0s`},
		{"bad size unit", ok + "store:\n  max_bytes: 512MiBs\n", `t.yaml:3:14: store.max_bytes: bad size "512MiBs": unknown unit "MiBs" (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`},
		{"bad size word", ok + "store:\n  max_bytes: lots\n", `t.yaml:3:14: store.max_bytes: bad size "lots": want a number of bytes, optionally with a unit (4096, 4KiB, 512MiB)`},
		{"negative size", ok + "store:\n  max_bytes: -5\n", `t.yaml:3:14: store.max_bytes: size must not be negative`},
		{"store smaller than message", ok + "store: {max_bytes: 1KiB}\n", `t.yaml:2:20: store.max_bytes (1KiB) is smaller than hub.max_message_bytes (256KiB): a largest message could never be stored`},
		{"unknown when_full", ok + "store:\n  when_full: drop-newest\n", `t.yaml:3:14: store.when_full: unknown policy "drop-newest" (want drop-oldest or reject)`},
		{"replay rate per device", ok + "cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5, shared_access_key_name: device, identity: per-device, replay_rate: 100}\n",
			`t.yaml:2:142: cloud.replay_rate is not supported with cloud.identity: per-device (each device's connection drains its backlog in queue order); remove it`},
		{"unknown protocol", ok + "cloud:\n  protocol: amqp\n", `t.yaml:3:13: cloud.protocol: unknown protocol "amqp" (want mqtt, azure-iothub or none)`},
		{"mqtt without url", ok + "cloud:\n  protocol: mqtt\n", `t.yaml:2:1: cloud.url is required with protocol mqtt (e.g. mqtts://broker.example:8883)`},
		{"url without protocol", ok + "cloud:\n  url: mqtts://b:8883\n", `t.yaml:3:8: cloud.url is set but cloud.protocol is none, so nothing is sent upstream (set protocol: mqtt or azure-iothub)`},
		{"bad url scheme", ok + "cloud: {protocol: mqtt, url: \"http://b:80\"}\n", `t.yaml:2:30: cloud.url: unknown scheme "http" in "http://b:80" (want mqtts://, or mqtt:// for plain TCP)`},
		{"pack too small", ok + "cloud: {protocol: mqtt, url: \"mqtt://b:1883\", pack: {max_bytes: 100}}\n", `t.yaml:2:65: cloud.pack.max_bytes 100B is too small to pack readings: use at least 512B (IoT Hub meters messages in 4KB units, so 4KB is the usual choice)`},
		{"url with password", ok + "cloud: {protocol: mqtt, url: \"mqtt://u:pw@b:1883\"}\n", `t.yaml:2:30: cloud.url must not carry a password: put it in cloud.password_file`},
		{"tls on plain url", ok + "cloud:\n  protocol: mqtt\n  url: mqtt://b:1883\n  tls: {ca_file: ca.pem}\n", `t.yaml:5:8: cloud.tls is set but cloud.url is plain mqtt://; use mqtts://`},
		{"azure key on mqtt", ok + "cloud:\n  protocol: mqtt\n  url: mqtts://b\n  shared_access_key: a2V5\n", `t.yaml:5:22: cloud.shared_access_key is not used with protocol mqtt`},
		{"azure without host", ok + "cloud: {protocol: azure-iothub, shared_access_key: a2V5}\n", `t.yaml:2:1: cloud.host is required with protocol azure-iothub (e.g. myhub.azure-devices.net)`},
		{"azure without auth", ok + "cloud: {protocol: azure-iothub, host: h.example}\n", `t.yaml:2:1: cloud: protocol azure-iothub needs shared_access_key, shared_access_key_file or an X.509 certificate in tls.cert_file/key_file`},
		{"azure bad key", ok + "cloud: {protocol: azure-iothub, host: h.example, shared_access_key: \"not base64!\"}\n", `t.yaml:2:69: cloud.shared_access_key is not a base64 key`},
		{"azure bad identity", ok + "cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5, identity: each}\n", `t.yaml:2:85: cloud.identity: unknown identity "each" (want gateway or per-device)`},
		{"per-device without key", ok + "cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5, identity: per-device}\ndevices:\n  - id: d\n    other: {}\n", `t.yaml:4:5: devices[0] needs azure: {shared_access_key: ...} or {shared_access_key_file: ...} with cloud.identity: per-device (or set cloud.shared_access_key_name to sign with a policy key)`},
		{"client without password", ok + "hub:\n  clients:\n    - id: leaf\n", `t.yaml:4:7: hub.clients[0].password_hash is required (make one with ` + "`outpost passwd`" + `); no client connects anonymously`},
		{"client bad hash", ok + "hub:\n  clients:\n    - id: leaf\n      password_hash: \"$2a$10$...\"\n", `t.yaml:5:22: hub.clients[0].password_hash is not a bcrypt hash (make one with ` + "`outpost passwd`" + `)`},
		{"client bad priority", ok + "hub:\n  clients:\n    - {id: leaf, password_hash: \"" + hash + "\", priority: urgent}\n", `t.yaml:4:107: hub.clients[0].priority: want high, normal or low, got "urgent"`},
		{"client id twice", ok + "hub:\n  clients:\n    - {id: leaf, password_hash: \"" + hash + "\"}\n    - {id: leaf, password_hash: \"" + hash + "\"}\n", `t.yaml:5:12: hub.clients[1].id: id "leaf" is already used by hub.clients[0] at line 4`},
		{"client id is gateway id", ok + "hub:\n  clients:\n    - {id: gw-1, password_hash: \"" + hash + "\"}\n", `t.yaml:4:12: hub.clients[0].id: "gw-1" is gateway.id; a device needs an id of its own`},
		{"tls listen without cert", ok + "hub:\n  tls_listen: :8883\n", "t.yaml:2:1: hub.tls.cert_file is required with hub.tls_listen\nt.yaml:2:1: hub.tls.key_file is required with hub.tls_listen"},
		{"tls without listener", ok + "hub:\n  tls: {cert_file: c.pem}\n", "t.yaml:3:8: hub.tls is set but hub.tls_listen is empty: nothing would use it"},
		{"device without id", ok + "devices:\n  - fake: {url: u}\n", "t.yaml:3:5: devices[0].id is required"},
		{"device bad id", ok + "devices:\n  - id: \"meter#1\"\n    fake: {url: u}\n", `t.yaml:3:9: devices[0].id: device id "meter#1": character '#' not allowed`},
		{"device id twice", ok + "devices:\n  - id: m\n    fake: {url: u}\n  - id: m\n    other: {}\n", `t.yaml:5:9: devices[1].id: id "m" is already used by devices[0] at line 3`},
		{"device id is client id", ok + "hub: {clients: [{id: m, password_hash: \"" + hash + "\"}]}\ndevices:\n  - id: m\n    other: {}\n", `t.yaml:4:9: devices[0].id: id "m" is already used by hub.clients[0] at line 2`},
		{"device no kind", ok + "devices:\n  - id: m\n", "t.yaml:3:5: devices[0]: no adapter kind: a device needs exactly one of fake, other"},
		{"device two kinds", ok + "devices:\n  - id: m\n    fake: {url: u}\n    other: {}\n", "t.yaml:5:5: devices[0]: a device has exactly one adapter kind, but this one has fake and other"},
		{"device unknown kind", ok + "devices:\n  - id: m\n    modbsu: {}\n", `t.yaml:4:5: unknown key "modbsu" in devices[0] (a device has id, priority, azure, twin_interval and one adapter kind: fake, other)`},
		{"device misspelt kind", ok + "devices:\n  - id: m\n    fkae: {}\n", `t.yaml:4:5: unknown key "fkae" in devices[0] (did you mean "fake"? a device has id, priority, azure, twin_interval and one adapter kind: fake, other)`},
		{"device not a mapping", ok + "devices:\n  - meter\n", `t.yaml:3:5: devices[0]: want a device mapping (id and one of fake, other), got "meter"`},
		{"adapter unknown key", ok + "devices:\n  - id: m\n    fake:\n      url: u\n      intervall: 5s\n", `t.yaml:6:7: unknown key "intervall" in devices[0].fake (did you mean "interval"?)`},
		{"adapter wrong type", ok + "devices:\n  - id: m\n    fake:\n      url: u\n      points: [{name: a, address: x}]\n", `t.yaml:6:35: devices[0].fake.points[0].address: want an integer, got "x"`},
		{"adapter field error", ok + "devices:\n  - id: m\n    fake:\n      url: u\n      points:\n        - {name: a, type: int16}\n        - {name: b, type: int99}\n", `t.yaml:8:27: devices[0].fake.points[1].type: unknown type "int99"`},
		{"adapter field error on default", ok + "devices:\n  - id: m\n    fake:\n      interval: 0s\n", "t.yaml:4:5: devices[0].fake.url: url is required\nt.yaml:5:17: devices[0].fake.interval: interval must be positive"},
		{"adapter plain error", ok + "devices:\n  - id: m\n    fake: {url: plain-error}\n", "t.yaml:4:5: devices[0].fake: fake: not a field error"},
		{"adapter unmarshaler error", ok + "devices:\n  - id: m\n    fake: {url: u, label: bad}\n", "t.yaml:4:27: devices[0].fake.label: label must not be bad"},
		{"unknown alias", ok + "store: *nope\n", "t.yaml:2:8: unknown alias *nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error; parsed %+v", c)
			}
			if c != nil {
				t.Errorf("config returned with an error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestErrorsSortedAndUnwrap(t *testing.T) {
	es := Errors{{File: "f", Line: 3, Col: 1, Msg: "c"}, {File: "f", Line: 1, Col: 9, Msg: "b"}, {File: "f", Line: 1, Col: 2, Msg: "a"}, {File: "f", Line: 1, Col: 2, Msg: "a"}}
	got := es.sorted().Error()
	if want := "f:1:2: a\nf:1:9: b\nf:3:1: c"; got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	var e *Error
	if !errors.As(error(es), &e) || e.Msg != "c" {
		t.Errorf("errors.As found %v", e)
	}
}

// TestGolden parses every testdata/*.bad.yaml and compares all its errors
// with the .golden file next to it (go test -update rewrites them).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.bad.yaml"))
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("no error")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// A config with three different mistakes gives three errors.
func TestThreeMistakes(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "three.bad.yaml"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
	for _, e := range es {
		if e.File != "testdata/three.bad.yaml" || e.Line == 0 || e.Col == 0 {
			t.Errorf("error without a position: %+v", e)
		}
	}
}

func TestNullValues(t *testing.T) {
	// A section with nothing in it keeps its defaults.
	c, err := Parse("t.yaml", []byte("gateway: {id: gw-1}\nhub:\n  # nothing yet\nstore:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hub.Listen != hub.DefaultListen || c.Store.MaxBytes != store.DefaultMaxBytes {
		t.Errorf("null sections lost their defaults: %+v %+v", c.Hub, c.Store)
	}
	// An empty scalar is the zero value: "listen:" turns the listener off.
	c, err = Parse("t.yaml", []byte("gateway: {id: gw-1}\nhttp:\n  listen:\n"))
	if err != nil || c.HTTP.Listen != "" {
		t.Fatalf("http.listen = %q, %v", c.HTTP.Listen, err)
	}
	// A required key with no value is reported at the key.
	_, err = Parse("t.yaml", []byte("gateway:\n  data_dir: /x\n  id:\n"))
	if want := "t.yaml:3:3: gateway.id is required"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = Parse("t.yaml", []byte(ok+"devices:\n  -\n"))
	if want := "t.yaml:3:3: devices[0]: want a device mapping (id and one of fake, other), got nothing"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestPerDeviceWithPolicyKey(t *testing.T) {
	src := ok + "cloud: {protocol: azure-iothub, host: h.example, shared_access_key: a2V5, shared_access_key_name: device, identity: per-device}\n" +
		"hub: {clients: [{id: l, password_hash: \"" + hash + "\"}]}\ndevices:\n  - {id: d, other: {}}\n"
	if _, err := Parse("t.yaml", []byte(src)); err != nil {
		t.Errorf("a policy key should cover every leaf: %v", err)
	}
	_, err := Parse("t.yaml", []byte(strings.Replace(src, "shared_access_key: a2V5, ", "tls: {cert_file: c, key_file: k}, ", 1)))
	if want := "t.yaml:2:108: cloud.shared_access_key_name needs the policy's key in shared_access_key or shared_access_key_file"; err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}
