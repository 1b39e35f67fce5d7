package config

import (
	"math"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// mqttOnly and azureOnly are the cloud keys that belong to one protocol.
var (
	mqttOnly  = []string{"client_id", "username", "password_file"}
	azureOnly = []string{"host", "device_id", "shared_access_key", "shared_access_key_file", "shared_access_key_name", "sas_ttl", "identity"}
)

func (v *validator) cloud() {
	c := &v.c.Cloud
	if !v.ok("cloud.protocol") {
		return // the protocol decides everything else
	}
	switch c.Protocol {
	case cloudlink.ProtocolNone:
		v.cloudNone()
		return
	case cloudlink.ProtocolMQTT:
		v.cloudMQTT()
	case cloudlink.ProtocolAzure:
		v.cloudAzure()
	default:
		v.errorf("cloud.protocol", "cloud.protocol: unknown protocol %q (want mqtt, azure-iothub or none)", c.Protocol)
		return
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.errorf("cloud.tls", "cloud.tls: cert_file and key_file go together")
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		v.errorf("cloud.max_inflight", "cloud.max_inflight must be between 1 and 65535, got %d", c.MaxInflight)
	}
	if c.ReplayRate < 0 || math.IsNaN(c.ReplayRate) || math.IsInf(c.ReplayRate, 0) {
		v.errorf("cloud.replay_rate", "cloud.replay_rate must be 0 (unlimited) or a positive rate in messages/s, got %v", c.ReplayRate)
	}
	if c.Keepalive < time.Second || c.Keepalive > 65535*time.Second {
		v.errorf("cloud.keepalive", "cloud.keepalive must be between 1s and 18h12m15s (MQTT's limit), got %v", c.Keepalive)
	}
	switch {
	case c.Pack.MaxBytes < 0:
		v.errorf("cloud.pack.max_bytes", "cloud.pack.max_bytes must not be negative")
	case c.Pack.MaxBytes > 0 && c.Pack.MaxBytes < 512:
		v.errorf("cloud.pack.max_bytes", "cloud.pack.max_bytes %v is too small to pack readings: use at least 512B (IoT Hub meters messages in 4KB units, so 4KB is the usual choice)", c.Pack.MaxBytes)
	case c.Pack.MaxBytes == 0 && c.Pack.MaxDelay != 0:
		v.errorf("cloud.pack.max_delay", "cloud.pack.max_delay is set but packing is off (cloud.pack.max_bytes is 0)")
	case c.Pack.MaxBytes > 0 && c.Pack.MaxDelay <= 0:
		v.errorf("cloud.pack.max_delay", "cloud.pack.max_delay must be positive, got %v", c.Pack.MaxDelay)
	case c.Protocol == cloudlink.ProtocolAzure && c.Pack.MaxBytes > 256*msg.KiB:
		v.errorf("cloud.pack.max_bytes", "cloud.pack.max_bytes %v is over IoT Hub's 256 KiB message cap", c.Pack.MaxBytes)
	}
}

// cloudNone refuses upstream settings when nothing is sent upstream, so a
// forgotten protocol key does not silently turn the link off.
func (v *validator) cloudNone() {
	c := v.c.Cloud
	for _, k := range []struct {
		key string
		set bool
	}{
		{"url", c.URL != ""}, {"host", c.Host != ""}, {"client_id", c.ClientID != ""},
		{"username", c.Username != ""}, {"password_file", c.PasswordFile != ""},
		{"device_id", c.DeviceID != ""}, {"shared_access_key", c.SharedAccessKey != ""},
		{"shared_access_key_file", c.SharedAccessKeyFile != ""}, {"tls", c.TLS != CloudTLS{}},
	} {
		if k.set {
			v.errorf("cloud."+k.key, "cloud.%s is set but cloud.protocol is none, so nothing is sent upstream (set protocol: mqtt or azure-iothub)", k.key)
			return
		}
	}
}

func (v *validator) notFor(keys []string, proto cloudlink.Protocol) {
	for _, k := range keys {
		if v.c.where.has("cloud." + k) {
			v.errorf("cloud."+k, "cloud.%s is not used with protocol %s", k, proto)
		}
	}
}

func (v *validator) cloudMQTT() {
	c := v.c.Cloud
	v.notFor(azureOnly, cloudlink.ProtocolMQTT)
	if c.URL == "" {
		v.errorf("cloud.url", "cloud.url is required with protocol mqtt (e.g. mqtts://broker.example:8883)")
		return
	}
	secure := v.cloudURL("cloud.url", c.URL)
	if !secure && c.TLS != (CloudTLS{}) {
		v.errorf("cloud.tls", "cloud.tls is set but cloud.url is plain %s; use mqtts://", strings.SplitN(c.URL, "//", 2)[0]+"//")
	}
	if c.ClientID != "" {
		if err := msg.ValidDeviceID(c.ClientID); err != nil {
			v.errorf("cloud.client_id", "cloud.client_id: %s", trimPkg(err))
		}
	}
	if c.PasswordFile != "" && c.Username == "" {
		v.errorf("cloud.username", "cloud.username is required with cloud.password_file")
	}
}

func (v *validator) cloudAzure() {
	c := v.c.Cloud
	v.notFor(mqttOnly, cloudlink.ProtocolAzure)
	switch {
	case c.Host == "":
		v.errorf("cloud.host", "cloud.host is required with protocol azure-iothub (e.g. myhub.azure-devices.net)")
	case strings.ContainsAny(c.Host, "/: "):
		v.errorf("cloud.host", "cloud.host: want a bare host name such as myhub.azure-devices.net, got %q", c.Host)
	}
	if c.URL != "" {
		v.cloudURL("cloud.url", c.URL)
	}
	if c.DeviceID != "" {
		if err := msg.ValidDeviceID(c.DeviceID); err != nil {
			v.errorf("cloud.device_id", "cloud.device_id: %s", trimPkg(err))
		}
	}
	var auth []string
	if c.SharedAccessKey != "" {
		auth = append(auth, "shared_access_key")
		v.checkKey("cloud.shared_access_key", c.SharedAccessKey)
	}
	if c.SharedAccessKeyFile != "" {
		auth = append(auth, "shared_access_key_file")
	}
	if c.TLS.CertFile != "" {
		auth = append(auth, "tls")
	}
	switch len(auth) {
	case 0:
		v.errorf("cloud.shared_access_key", "cloud: protocol azure-iothub needs shared_access_key, shared_access_key_file or an X.509 certificate in tls.cert_file/key_file")
	case 1:
	default:
		v.errorf("cloud."+auth[1], "cloud: use one of shared_access_key, shared_access_key_file or tls.cert_file, not %s", strings.Join(auth, " and "))
	}
	if c.SharedAccessKeyName != "" && c.SharedAccessKey == "" && c.SharedAccessKeyFile == "" {
		v.errorf("cloud.shared_access_key_name", "cloud.shared_access_key_name needs the policy's key in shared_access_key or shared_access_key_file")
	}
	if c.SASTTL != 0 && c.SASTTL < time.Minute {
		v.errorf("cloud.sas_ttl", "cloud.sas_ttl must be at least 1m, got %v", c.SASTTL)
	}
	switch c.Identity {
	case cloudlink.IdentityGateway, cloudlink.IdentityPerDevice:
	default:
		v.errorf("cloud.identity", "cloud.identity: unknown identity %q (want gateway or per-device)", c.Identity)
	}
}
