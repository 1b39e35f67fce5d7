package gateway

import (
	"testing"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/hub"
)

// A hub client's azure key reaches the hub as its SAS login key under every
// cloud protocol.
func TestHubOptionsSASKey(t *testing.T) {
	for _, p := range []cloudlink.Protocol{cloudlink.ProtocolNone, cloudlink.ProtocolMQTT, cloudlink.ProtocolAzure} {
		cfg := config.Default()
		cfg.Gateway.ID = "gw-1"
		cfg.Cloud.Protocol = p
		cfg.Hub.Clients = []config.Client{
			{Client: hub.Client{ID: "az-1"}, Azure: &config.DeviceAzure{SharedAccessKey: "bGVhZg=="}},
			{Client: hub.Client{ID: "az-2"}, Azure: &config.DeviceAzure{SharedAccessKeyFile: "/etc/outpost/az-2.key"}},
			{Client: hub.Client{ID: "leaf-1", PasswordHash: "$2a$10$x"}},
		}
		cs := New(cfg, nil).hubOptions().Clients
		if cs[0].SASKey != "bGVhZg==" || cs[1].SASKeyFile != "/etc/outpost/az-2.key" || cs[2].SASKey != "" || cs[2].SASKeyFile != "" {
			t.Errorf("%s: hub clients %+v", p, cs)
		}
	}
}
