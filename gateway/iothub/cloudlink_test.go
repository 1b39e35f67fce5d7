package iothub_test

import (
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/iothub"
)

// Sign writes the same tokens as the upstream link's signer, so either can
// replace the other.
func TestSignMatchesCloudlink(t *testing.T) {
	for _, tc := range []struct{ resource, key, policy string }{
		{"myhub.azure-devices.net/devices/gw-01", "c2VjcmV0", ""},
		{"myhub.azure-devices.net/devices/leaf (1)", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", "device policy"},
	} {
		exp := time.Unix(1893456000, 0)
		want, err := cloudlink.SASToken(tc.resource, tc.key, exp, tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		k, err := iothub.DecodeKey(tc.key)
		if err != nil {
			t.Fatal(err)
		}
		if got := iothub.Sign(tc.resource, k, exp, tc.policy); got != want {
			t.Errorf("Sign = %s\ncloudlink.SASToken = %s", got, want)
		}
	}
}
