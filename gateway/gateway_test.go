package gateway

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters/sim"
	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func start(t *testing.T, dir string, devices ...config.Device) *Gateway {
	t.Helper()
	cfg := config.Default()
	cfg.Gateway.ID = "gw-test"
	cfg.Gateway.DataDir = dir
	cfg.Hub.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = ""
	cfg.Devices = devices
	g := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return g
}

// The watchdog's liveness ignores a quarantined store (a restart would only
// hide it) but not a failed part; /healthz reports both.
func TestAliveVersusHealthy(t *testing.T) {
	dir := t.TempDir()
	func() { // make a store, then damage it while stopped
		g := start(t, dir)
		_ = g
	}()
	// The cleanup above runs at test end; use a second dir for the damaged case.
	dir2 := t.TempDir()
	os.MkdirAll(filepath.Join(dir2, "queue"), 0o755)
	os.WriteFile(filepath.Join(dir2, "queue", "MANIFEST"), []byte("this is not a badger manifest"), 0o644)
	g := start(t, dir2)
	if err := g.Alive(); err != nil {
		t.Errorf("Alive with a quarantined store = %v, want nil", err)
	}
	st := g.Status()
	if st.Healthy || !strings.Contains(strings.Join(st.Problems, " "), "quarantine") {
		t.Errorf("Status = %+v, want unhealthy naming the quarantine", st)
	}
	g.fail("cloudlink", errors.New("boom"))
	if err := g.Alive(); err == nil || !strings.Contains(err.Error(), "cloudlink: boom") {
		t.Errorf("Alive after a failed part = %v", err)
	}
}

// Readings from adapters are stored before Emit returns and counted.
func TestEmitStores(t *testing.T) {
	g := start(t, t.TempDir(), config.Device{ID: "m1", Priority: msg.Low, Kind: "sim", Adapter: &sim.Config{Interval: 10 * time.Millisecond}})
	deadline := time.Now().Add(5 * time.Second)
	for g.Status().Stored < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", g.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := g.Status()
	if st.Queue.Depth < 5 || st.Queue.Classes[msg.Low].Depth != st.Queue.Depth {
		t.Errorf("queue %+v: readings should sit in the low class (cloud none)", st.Queue)
	}
	if len(st.Devices) != 1 || st.Devices[0].Values["voltage"] == nil {
		t.Errorf("devices %+v", st.Devices)
	}
}

// The cloud section reaches the cloud link: secrets read from their files
// (trailing newline dropped), TLS names, the Azure identity.
func TestLinkOptions(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "cloud.secret")
	key := filepath.Join(dir, "sas.key")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	os.WriteFile(key, []byte("a2V5\n"), 0o600)

	cfg := config.Default()
	cfg.Gateway.ID = "gw-1"
	cfg.Cloud.Protocol = cloudlink.ProtocolMQTT
	cfg.Cloud.URL = "mqtts://broker:8883"
	cfg.Cloud.PasswordFile = pw
	cfg.Cloud.TLS.ServerName = "broker.example"
	// The cloud section goes to cloudlink whole (it reads the secret files
	// and derives the defaults: cloudlink's TestOptionsFiles).
	opt, err := New(cfg, nil).linkOptions()
	if err != nil || opt.Config != cfg.Cloud || opt.GatewayID != "gw-1" || opt.DeviceKeys != nil {
		t.Fatalf("mqtt linkOptions = %+v, %v", opt, err)
	}
	if _, err := cloudlink.New(opt, nil); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("mqtt link with nil queue: %v", err)
	}

	cfg.Cloud.Protocol = cloudlink.ProtocolAzure
	cfg.Cloud.PasswordFile = ""
	cfg.Cloud.Host, cfg.Cloud.DeviceID = "hub.example", "gw-1"
	cfg.Cloud.SharedAccessKeyFile, cfg.Cloud.SharedAccessKeyName = key, "gateways"
	cfg.Cloud.Pack.MaxBytes, cfg.Cloud.Pack.MaxDelay = 4096, time.Second
	opt, err = New(cfg, nil).linkOptions()
	if err != nil || opt.Config != cfg.Cloud {
		t.Fatalf("azure linkOptions = %+v, %v", opt.Config, err)
	}
	cfg.Cloud.Pack.MaxBytes, cfg.Cloud.Pack.MaxDelay = 0, 0

	// identity per-device: each leaf's own key, from a device entry and
	// from a hub client (a key file); a leaf without one is signed with the
	// policy key.
	leafKey := filepath.Join(dir, "leaf.key")
	os.WriteFile(leafKey, []byte("bGVhZg==\n"), 0o600)
	cfg.Cloud.Identity = cloudlink.IdentityPerDevice
	cfg.Devices = []config.Device{{ID: "meter-1", Azure: &config.DeviceAzure{SharedAccessKey: "bWV0ZXI="}}, {ID: "meter-2"}}
	cfg.Hub.Clients = []config.Client{{Client: hub.Client{ID: "leaf-1"}, Azure: &config.DeviceAzure{SharedAccessKeyFile: leafKey}}, {Client: hub.Client{ID: "dash", ReadAll: true}}}
	opt, err = New(cfg, nil).linkOptions()
	if err != nil || len(opt.DeviceKeys) != 2 || opt.DeviceKeys["meter-1"] != "bWV0ZXI=" || opt.DeviceKeys["leaf-1"] != "bGVhZg==" || opt.Identity != "per-device" {
		t.Fatalf("per-device linkOptions = %+v, %v", opt, err)
	}
	if !slices.Equal(opt.Leaves, []string{"meter-1", "meter-2", "leaf-1"}) || !slices.Equal(opt.NotDevices, []string{"dash"}) {
		t.Fatalf("leaves %v, not devices %v", opt.Leaves, opt.NotDevices)
	}
	if l, err := cloudlink.Open(opt, nil); err == nil {
		t.Fatalf("Open with a nil queue: %T", l)
	}
	cfg.Hub.Clients[0].Azure.SharedAccessKeyFile = filepath.Join(dir, "missing")
	if _, err := New(cfg, nil).linkOptions(); err == nil || !strings.Contains(err.Error(), "hub.clients[0].azure.shared_access_key_file") {
		t.Fatalf("missing leaf key file: %v", err)
	}
	cfg.Devices, cfg.Hub.Clients, cfg.Cloud.Identity = nil, nil, cloudlink.IdentityGateway

	cfg.Cloud.SharedAccessKeyFile = filepath.Join(dir, "missing")
	opt, err = New(cfg, nil).linkOptions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cloudlink.New(opt, nil); err == nil || !strings.Contains(err.Error(), "shared_access_key_file") {
		t.Fatalf("missing key file: %v", err)
	}
}
