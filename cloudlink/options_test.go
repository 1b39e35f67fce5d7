package cloudlink

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOptionsValidation(t *testing.T) {
	q := newMemQueue()
	_, err := New(Options{Config: Config{Protocol: "mqtt", URL: "mqtt://u:secretpw@h:1883/x", TLS: TLSConfig{CertFile: "c"}}, password: "hunter2"}, q)
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"client_id is required", "must not carry a password", "a broker URL has no path", "cert_file and key_file go together"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password leaked: %v", err)
	}
	_, err = New(Options{Config: Config{Protocol: "azure-iothub", Host: "h", DeviceID: "gw#1", SharedAccessKey: "!!", Identity: "per-device"}}, q)
	for _, want := range []string{"device_id", "shared_access_key", "per-device needs a Fleet"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("azure: missing %q in %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "!!") {
		t.Errorf("key leaked: %v", err)
	}
	s, err := New(Options{Config: Config{Protocol: "azure-iothub", Host: "hub.azure-devices.net", DeviceID: "gw-1", SharedAccessKey: "c2VjcmV0"}}, q)
	if err != nil {
		t.Fatal(err)
	}
	if s.opt.URL != "mqtts://hub.azure-devices.net:8883" || s.opt.MaxInflight != 16 || s.opt.MaxMessageBytes != 256*1024 || s.tls == nil {
		t.Errorf("azure defaults: %+v", s.opt)
	}
	if _, err := New(Options{Config: Config{Protocol: "none"}}, q); err != nil {
		t.Errorf("none: %v", err)
	}
	for _, p := range []PackConfig{{MaxBytes: 100}, {MaxBytes: 300 << 10}, {MaxBytes: 4096, MaxDelay: -1}} {
		_, err := New(Options{Config: Config{Protocol: "azure-iothub", Host: "h", DeviceID: "gw-1", SharedAccessKey: "c2VjcmV0", Pack: p}}, q)
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "pack") {
			t.Errorf("pack %+v: err = %v", p, err)
		}
	}
	s, err = New(Options{Config: Config{URL: "mqtt://h:1883", ClientID: "gw", Pack: PackConfig{MaxBytes: 4096}}}, q)
	if err != nil || s.opt.Pack.MaxDelay != 2*time.Second {
		t.Errorf("pack defaults: %+v, %v", s.opt.Pack, err)
	}
}

// TestOptionsFiles: the session reads the cloud section's secret files
// itself (trailing newline dropped), and a missing file is an option error.
func TestOptionsFiles(t *testing.T) {
	dir := t.TempDir()
	pw, key := filepath.Join(dir, "cloud.secret"), filepath.Join(dir, "sas.key")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	os.WriteFile(key, []byte("a2V5\n"), 0o600)
	q := newMemQueue()
	s, err := New(Options{Config: Config{Protocol: ProtocolMQTT, URL: "mqtts://broker:8883", Username: "gw", PasswordFile: pw}, GatewayID: "gw-1"}, q)
	if err != nil || s.opt.password != "s3cret" || s.opt.ClientID != "gw-1" || s.opt.Keepalive != DefaultKeepalive {
		t.Fatalf("mqtt: %+v, %v", s.opt, err)
	}
	s, err = New(Options{Config: Config{Protocol: ProtocolAzure, Host: "hub.example", SharedAccessKeyFile: key, SharedAccessKeyName: "gateways"}, GatewayID: "gw-1"}, q)
	if err != nil || s.opt.SharedAccessKey != "a2V5" || s.opt.DeviceID != "gw-1" || s.opt.SASTTL != DefaultSASTTL {
		t.Fatalf("azure: %+v, %v", s.opt, err)
	}
	for _, o := range []Options{
		{Config: Config{Protocol: ProtocolMQTT, URL: "mqtt://b", Username: "gw", PasswordFile: filepath.Join(dir, "missing")}, GatewayID: "gw-1"},
		{Config: Config{Protocol: ProtocolAzure, Host: "hub.example", SharedAccessKeyFile: filepath.Join(dir, "missing")}, GatewayID: "gw-1"},
	} {
		if _, err := New(o, q); !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "_file") {
			t.Errorf("missing file: %v", err)
		}
	}
}
