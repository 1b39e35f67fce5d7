package cloudlink

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOptionsValidation(t *testing.T) {
	q := newMemQueue()
	_, err := New(Options{Protocol: "mqtt", URL: "mqtt://u:secretpw@h:1883/x", Password: "hunter2", CertFile: "c"}, q)
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"client_id is required", "only scheme://host:port", "cert_file and key_file go together"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password leaked: %v", err)
	}
	_, err = New(Options{Protocol: "azure-iothub", Azure: AzureOptions{Host: "h", DeviceID: "gw#1", SharedAccessKey: "!!", Identity: "per-device"}}, q)
	for _, want := range []string{"device_id", "shared_access_key", "per-device needs a Fleet"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("azure: missing %q in %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "!!") {
		t.Errorf("key leaked: %v", err)
	}
	s, err := New(Options{Protocol: "azure-iothub", Azure: AzureOptions{Host: "hub.azure-devices.net", DeviceID: "gw-1", SharedAccessKey: "c2VjcmV0"}}, q)
	if err != nil {
		t.Fatal(err)
	}
	if s.opt.URL != "mqtts://hub.azure-devices.net:8883" || s.opt.MaxInflight != 16 || s.opt.MaxMessageBytes != 256*1024 || s.tls == nil {
		t.Errorf("azure defaults: %+v", s.opt)
	}
	if _, err := New(Options{Protocol: "none"}, q); err != nil {
		t.Errorf("none: %v", err)
	}
	for _, p := range []PackOptions{{MaxBytes: 100}, {MaxBytes: 300 << 10}, {MaxBytes: 4096, MaxDelay: -1}} {
		_, err := New(Options{Protocol: "azure-iothub", Azure: AzureOptions{Host: "h", DeviceID: "gw-1", SharedAccessKey: "c2VjcmV0"}, Pack: p}, q)
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "pack") {
			t.Errorf("pack %+v: err = %v", p, err)
		}
	}
	s, err = New(Options{URL: "mqtt://h:1883", ClientID: "gw", Pack: PackOptions{MaxBytes: 4096}}, q)
	if err != nil || s.opt.Pack.MaxDelay != 2*time.Second {
		t.Errorf("pack defaults: %+v, %v", s.opt.Pack, err)
	}
}
