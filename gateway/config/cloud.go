package config

import (
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Cloud is the upstream link.
type Cloud struct {
	// Protocol is mqtt, azure-iothub or none. Default none: buffer only,
	// nothing is sent (then no other cloud key may be set).
	Protocol cloudlink.Protocol `yaml:"protocol"`
	// URL is the broker, mqtt://host:port (plain TCP) or mqtts://host:port
	// (TLS; tcp://, ssl:// and tls:// are accepted too). Required for mqtt;
	// optional for azure-iothub, where it defaults to mqtts://HOST:8883. It
	// never carries a password: use PasswordFile.
	URL      string `yaml:"url"`
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	// PasswordFile holds the MQTT password (trailing newline ignored).
	PasswordFile string   `yaml:"password_file"`
	TLS          CloudTLS `yaml:"tls"`
	// MaxInflight is the number of unacknowledged QoS 1 publishes.
	// Default 64, or 16 for azure-iothub.
	MaxInflight int `yaml:"max_inflight"`
	// ReplayRate caps the backlog drain after an outage, in messages/s;
	// 0 = unlimited. Live messages are not counted against it.
	ReplayRate float64 `yaml:"replay_rate"`
	// Pack packs small readings of one device into one message; off
	// unless Pack.MaxBytes > 0.
	Pack Pack `yaml:"pack"`
	// Keepalive is the MQTT keep-alive that detects half-open links.
	// Default 30s.
	Keepalive time.Duration `yaml:"keepalive"`

	// Azure IoT Hub (protocol: azure-iothub).

	// Host is the hub's host name (myhub.azure-devices.net), used in the
	// username and the SAS resource URI. Required for azure-iothub.
	Host string `yaml:"host"`
	// DeviceID is the gateway's IoT Hub device id. Default gateway.id.
	DeviceID string `yaml:"device_id"`
	// SharedAccessKey (base64) or SharedAccessKeyFile, or an X.509
	// client certificate in TLS.CertFile/KeyFile: exactly one.
	SharedAccessKey     string `yaml:"shared_access_key"`
	SharedAccessKeyFile string `yaml:"shared_access_key_file"`
	// SharedAccessKeyName, when set, makes the key a shared access policy
	// key (skn) with DeviceConnect rather than the device's own key: it
	// signs tokens for the gateway and, with identity per-device, for every
	// leaf (sr={host}/devices/{id}), so leaves need no keys of their own.
	SharedAccessKeyName string `yaml:"shared_access_key_name"`
	// SASTTL is the lifetime of a SAS token; the link reconnects with a
	// fresh one before it expires. Default 1h when a key is configured.
	SASTTL time.Duration `yaml:"sas_ttl"`
	// Identity is gateway (leaves' messages go on the gateway's own
	// connection, their id in a property) or per-device (each device and
	// hub client carries its own azure: {shared_access_key...} and gets its
	// own connection). Default gateway.
	Identity cloudlink.Identity `yaml:"identity"`
}

// CloudTLS configures TLS to the upstream. The server is verified against
// CAFile, or the system roots when CAFile is empty.
type CloudTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name the server certificate is checked
	// against (default: the URL's host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off server verification. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Pack configures packing of small readings (IoT Hub bills in 4 KB units).
type Pack struct {
	// MaxBytes is the largest packed message; 0 turns packing off.
	MaxBytes msg.Size `yaml:"max_bytes"`
	// MaxDelay is how long a reading may wait for company. Default 2s
	// when packing is on.
	MaxDelay time.Duration `yaml:"max_delay"`
}

// Derived defaults for the cloud section.
const (
	DefaultSASTTL       = time.Hour
	DefaultPackMaxDelay = 2 * time.Second
	AzurePort           = "8883"
)
