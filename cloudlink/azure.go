package cloudlink

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// PropDevice names the leaf device in a message that travels under the
// gateway's identity (azure identity "gateway"): D2C records of a leaf carry
// it, and a C2D message carrying it is meant for that leaf.
const PropDevice = "outpost-device"

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

// azureDialect speaks IoT Hub's MQTT 3.1.1 endpoint for one identity.
type azureDialect struct {
	host, device string
	key          string // base64; empty with X.509
	keyName      string // shared access policy name; empty for a device key
	ttl          time.Duration
}

func newAzureDialect(o Options) (dialect, error) {
	return azureDialect{host: o.Host, device: o.DeviceID, key: o.SharedAccessKey, keyName: o.SharedAccessKeyName, ttl: o.SASTTL}, nil
}

func (d azureDialect) clientID() string { return d.device }

func (d azureDialect) credentials(now time.Time) (string, string, time.Time, error) {
	user := AzureUsername(d.host, d.device)
	if d.key == "" { // X.509: the TLS handshake authenticates
		return user, "", time.Time{}, nil
	}
	exp := now.Add(d.ttl).Truncate(time.Second)
	tok, err := SASToken(d.host+"/devices/"+d.device, d.key, exp, d.keyName)
	return user, tok, exp, err
}

// topic sends every record under the gateway's identity; a leaf's id goes in
// the outpost-device property.
func (d azureDialect) topic(r *msg.Record) string {
	ps := make(msg.Props, 0, len(r.Props)+3)
	ps = append(ps, msg.Prop{Key: msg.PropMessageID, Value: r.ID})
	ps = append(ps, r.Props...)
	ps = append(ps, msg.Prop{Key: msg.PropSeq, Value: strconv.FormatUint(r.Seq, 10)})
	if r.Device != d.device {
		ps = ps.Set(PropDevice, r.Device)
	}
	// IoT Hub routes on the body only with a JSON $.ct and $.ce=utf-8.
	if ct, _ := ps.Get(msg.PropContentType); isJSON(ct) {
		if _, ok := ps.Get(msg.PropContentEncoding); !ok {
			ps = append(ps, msg.Prop{Key: msg.PropContentEncoding, Value: "utf-8"})
		}
	}
	return msg.EventsTopic(d.device, ps)
}

func (d azureDialect) c2dTopic() string { return "devices/" + d.device + "/messages/devicebound/#" }

func (d azureDialect) c2d(topic string) (string, msg.Props, error) {
	dev, ps, err := msg.ParseDeviceboundTopic(topic)
	if err != nil {
		return "", nil, err
	}
	if dev != d.device {
		return "", nil, fmt.Errorf("cloudlink: C2D for %q on %q's connection", dev, d.device)
	}
	if leaf, ok := ps.Get(PropDevice); ok {
		if err := msg.ValidDeviceID(leaf); err != nil {
			return "", nil, err
		}
		return leaf, ps, nil
	}
	return dev, ps, nil
}

func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
