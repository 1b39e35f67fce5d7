package cloudlink_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

const (
	e2eHost    = "myhub.azure-devices.net"
	e2eGWKey   = "Z2F0ZXdheS1rZXktZm9yLXRoZS1zdGFuZC1pbi1odWI="
	e2eLeafKey = "dHdpbi1sZWFmLWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
)

// waitOutput waits up to 60 s for the leaf to print a line containing all
// of parts.
func waitOutput(t *testing.T, l *peertest.Proc, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	lines:
		for line := range strings.SplitSeq(l.Output(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return
		}
	}
	t.Fatalf("the leaf never printed a line with %q:\n%s", parts, l.Output())
}

// TestGatewayTwinsUpstream runs a gateway with cloud identity per-device
// against the stand-in IoT Hub and Microsoft's Node.js device SDK as the
// leaf (gateway/testdata/twinleaf.js): the leaf's reported update reaches
// the hub; a desired change made on the hub reaches the leaf; a direct
// method invoked on the hub is answered by the leaf, and one the leaf
// leaves unanswered is the hub's 504.
func TestGatewayTwinsUpstream(t *testing.T) {
	sdk := peertest.NeedNodeSDK(t)
	h, err := hubtest.Start(hubtest.Options{Host: e2eHost, Devices: map[string]string{"gw-twin": e2eGWKey, "az-1": e2eLeafKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ca, crt, key := cloudlink.PKIForTest(t)

	cfg := config.Default()
	cfg.Gateway.ID = "gw-twin"
	cfg.Gateway.DataDir = t.TempDir()
	cfg.Hub.Listen = ""
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	cfg.Hub.TLSListen = tlsAddr
	cfg.Hub.TLS.CertFile, cfg.Hub.TLS.KeyFile = crt, key
	cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))
	cfg.Hub.Clients = []config.Client{{Client: hub.Client{ID: "az-1"}, Azure: &config.DeviceAzure{SharedAccessKey: e2eLeafKey}}}
	cfg.Cloud.Protocol = cloudlink.ProtocolAzure
	cfg.Cloud.URL = "mqtt://" + h.Addr()
	cfg.Cloud.Host, cfg.Cloud.DeviceID, cfg.Cloud.SharedAccessKey = e2eHost, "gw-twin", e2eGWKey
	cfg.Cloud.Identity = cloudlink.IdentityPerDevice
	g := gateway.New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	// The leaf's own IoT Hub connection has fetched its twin.
	if !h.Wait(20*time.Second, func(h *hubtest.Hub) bool { return h.TwinRequests("az-1", iothub.TwinGet, 200) > 0 }) {
		t.Fatalf("az-1's connection never fetched its twin: %v", h.Events())
	}

	conn := fmt.Sprintf("HostName=%s;DeviceId=az-1;SharedAccessKey=%s;GatewayHostName=%s", e2eHost, e2eLeafKey, tlsAddr)
	leaf := peertest.Start(t, sdk.Command(filepath.Join("..", "gateway", "testdata", "twinleaf.js"), []string{"LEAF_CONN=" + conn, "LEAF_CA=" + ca},
		"twin", `report:{"fw":"1.2","net":{"rssi":-61}}`, "wait"), nil)
	waitOutput(t, leaf, `"ev":"waiting"`)

	if !h.Wait(20*time.Second, func(h *hubtest.Hub) bool {
		r := h.Twin("az-1").Reported.Props
		return r["fw"] != nil && fmt.Sprint(r["fw"]) == "1.2"
	}) {
		t.Fatalf("the leaf's reported update never reached the hub: %v\n%s", h.Twin("az-1").Reported, leaf.Output())
	}

	if _, err := h.SetDesired("az-1", map[string]any{"rate": 9}); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, leaf, `"ev":"desired"`, `"rate":9`)

	r, err := h.InvokeMethod(context.Background(), "az-1", "echo", []byte(`{"x":1}`), 10)
	if err != nil || r.Status != 200 || string(r.Payload) != `{"echo":{"x":1}}` {
		t.Fatalf("echo from the hub: %+v %s, %v\n%s", r, r.Payload, err, leaf.Output())
	}
	if _, err := h.InvokeMethod(context.Background(), "az-1", "slow", nil, 5); iothub.StatusOf(err) != iothub.StatusTimeout {
		t.Fatalf("unanswered method from the hub: %v, want 504", err)
	}
	waitOutput(t, leaf, `"ev":"method"`, `"name":"slow"`)
}
