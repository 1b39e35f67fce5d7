package cloudlink

import (
	"fmt"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/dialect"
	"github.com/outpost-iot/outpost/gateway/iothub"
)

// PropDevice names the leaf device in a message that travels under the
// gateway's identity (azure identity "gateway"): D2C records of a leaf carry
// it, and a C2D message carrying it is meant for that leaf.
const PropDevice = dialect.PropDevice

// SASToken returns an IoT Hub shared access signature for resourceURI
// (e.g. "myhub.azure-devices.net/devices/gw-01"), signed with the base64 key
// and valid until expiry. policy is the shared access policy name, empty for a
// device key (then no skn field is written).
func SASToken(resourceURI, key string, expiry time.Time, policy string) (string, error) {
	k, err := iothub.DecodeKey(key)
	if err != nil {
		return "", fmt.Errorf("cloudlink: sas key: %w", err)
	}
	return iothub.Sign(resourceURI, k, expiry, policy), nil
}

// AzureUsername is the MQTT username IoT Hub expects for a device
// (iothub.Username, at iothub.DefaultAPIVersion).
func AzureUsername(host, deviceID string) string {
	return iothub.Username{Host: host, DeviceID: deviceID}.String()
}
