package cloudlink

import (
	"errors"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/cloudlink/internal/wire"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Config is what a user configures of the upstream link: the cloud section
// of the gateway's config file. DefaultConfig holds the file's defaults,
// WithDerived the defaults that depend on other keys, and Validate the
// file's rules.
type Config struct {
	// Protocol is mqtt, azure-iothub or none. Default none: buffer only,
	// nothing is sent (then no other cloud key may be set).
	Protocol Protocol `yaml:"protocol"`
	// URL is the broker, mqtt://host:port (plain TCP) or mqtts://host:port
	// (TLS; tcp://, ssl:// and tls:// are accepted too). Required for mqtt;
	// optional for azure-iothub, where it defaults to mqtts://HOST:8883. It
	// never carries a password: use PasswordFile.
	URL      string `yaml:"url"`
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	// PasswordFile holds the MQTT password (trailing newline ignored).
	PasswordFile string    `yaml:"password_file"`
	TLS          TLSConfig `yaml:"tls"`
	// MaxInflight is the number of unacknowledged QoS 1 publishes.
	// Default 64, or 16 for azure-iothub.
	MaxInflight int `yaml:"max_inflight"`
	// ReplayRate caps the backlog drain after an outage, in messages/s;
	// 0 = unlimited. Live messages are not counted against it.
	ReplayRate float64 `yaml:"replay_rate"`
	// Pack packs small readings of one device into one message; off
	// unless Pack.MaxBytes > 0.
	Pack PackConfig `yaml:"pack"`
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
	Identity Identity `yaml:"identity"`
}

// TLSConfig configures TLS to the upstream. The server is verified against
// CAFile, or the system roots when CAFile is empty.
type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name the server certificate is checked
	// against (default: the URL's host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off server verification. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// PackConfig turns packing on (MaxBytes > 0): several small JSON readings of one device
// go up as one message whose body is a JSON array of their bodies, up to
// MaxBytes (IoT Hub meters messages in 4 KB units, so four 1 KB readings
// sent alone cost four units and packed cost one). A reading waits at most
// MaxDelay for others to join it.
//
// A pack carries $.mid derived from its readings' ids (the same readings
// always make the same $.mid, so a pack sent again after a reconnect is
// recognisable), outpost-seq of its first reading, outpost-pack with the
// number of readings, and the readings' common properties. Readings pack
// together only when their properties are equal; a reading whose body is
// not JSON, or that is too large to share a message, goes alone,
// unchanged, and so does a pack of one.
type PackConfig struct {
	// MaxBytes is the largest packed message; 0 turns packing off.
	MaxBytes msg.Size `yaml:"max_bytes"`
	// MaxDelay is how long a reading may wait for company. Default 2s
	// when packing is on.
	MaxDelay time.Duration `yaml:"max_delay"`
}

// Defaults of the cloud section.
const (
	DefaultKeepalive     = 30 * time.Second
	DefaultCloudInflight = 64
	DefaultAzureInflight = 16
	DefaultSASTTL        = time.Hour
	DefaultPackMaxDelay  = 2 * time.Second
	AzurePort            = "8883"
	minPackBytes         = 512
)

// DefaultConfig returns the cloud section's defaults: protocol none
// (buffer only).
func DefaultConfig() Config {
	return Config{Protocol: ProtocolNone, Keepalive: DefaultKeepalive, Identity: IdentityGateway}
}

// WithDerived returns c with the defaults that depend on other keys: the
// max_inflight of its protocol, pack.max_delay when packing is on and, for
// azure-iothub, device_id (gatewayID), the url from host and the SAS
// lifetime when a key is configured.
func (c Config) WithDerived(gatewayID string) Config {
	if c.Pack.MaxBytes > 0 && c.Pack.MaxDelay == 0 {
		c.Pack.MaxDelay = DefaultPackMaxDelay
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultCloudInflight
		if c.Protocol == ProtocolAzure {
			c.MaxInflight = DefaultAzureInflight
		}
	}
	if c.Protocol != ProtocolAzure {
		return c
	}
	if c.DeviceID == "" {
		c.DeviceID = gatewayID
	}
	if c.URL == "" && c.Host != "" {
		c.URL = "mqtts://" + c.Host + ":" + AzurePort
	}
	if c.SASTTL == 0 && (c.SharedAccessKey != "" || c.SharedAccessKeyFile != "") {
		c.SASTTL = DefaultSASTTL
	}
	return c
}

// Validate checks c (with WithDerived applied) as the config file allows it
// and reports every problem (errors.Join), each an *adapters.FieldError
// whose Path is the key below cloud (such as "pack.max_bytes") and whose
// message names the key as it is written in the file. Which keys a protocol
// does not use is the config loader's check: it knows which keys are
// written.
func (c Config) Validate() error {
	v := &checker{c: c}
	v.cloud()
	return errors.Join(v.errs...)
}

// checker collects the problems of one Config.
type checker struct {
	c    Config
	errs []error
}

// errorf reports a problem at path, a key below cloud.
func (v *checker) errorf(path, format string, a ...any) {
	v.errs = append(v.errs, adapters.Errorf(path, format, a...))
}

func (v *checker) cloud() {
	c := v.c
	switch c.Protocol {
	case ProtocolNone:
		v.cloudNone()
		return
	case ProtocolMQTT:
		v.cloudMQTT()
	case ProtocolAzure:
		v.cloudAzure()
	default:
		v.errorf("protocol", "cloud.protocol: unknown protocol %q (want mqtt, azure-iothub or none)", c.Protocol)
		return
	}
	if !tlsPairOK(c.TLS.CertFile, c.TLS.KeyFile) {
		v.errorf("tls", "cloud.tls: cert_file and key_file go together")
	}
	if !inflightOK(c.MaxInflight) {
		v.errorf("max_inflight", "cloud.max_inflight must be between 1 and 65535, got %d", c.MaxInflight)
	}
	if c.ReplayRate < 0 || math.IsNaN(c.ReplayRate) || math.IsInf(c.ReplayRate, 0) {
		v.errorf("replay_rate", "cloud.replay_rate must be 0 (unlimited) or a positive rate in messages/s, got %v", c.ReplayRate)
	}
	if c.Keepalive < time.Second || c.Keepalive > 65535*time.Second {
		v.errorf("keepalive", "cloud.keepalive must be between 1s and 18h12m15s (MQTT's limit), got %v", c.Keepalive)
	}
	switch {
	case c.Pack.MaxBytes < 0:
		v.errorf("pack.max_bytes", "cloud.pack.max_bytes must not be negative")
	case c.Pack.MaxBytes > 0 && c.Pack.MaxBytes < minPackBytes:
		v.errorf("pack.max_bytes", "cloud.pack.max_bytes %v is too small to pack readings: use at least 512B (IoT Hub meters messages in 4KB units, so 4KB is the usual choice)", c.Pack.MaxBytes)
	case c.Pack.MaxBytes == 0 && c.Pack.MaxDelay != 0:
		v.errorf("pack.max_delay", "cloud.pack.max_delay is set but packing is off (cloud.pack.max_bytes is 0)")
	case c.Pack.MaxBytes > 0 && c.Pack.MaxDelay <= 0:
		v.errorf("pack.max_delay", "cloud.pack.max_delay must be positive, got %v", c.Pack.MaxDelay)
	case c.Protocol == ProtocolAzure && c.Pack.MaxBytes > 256*msg.KiB:
		v.errorf("pack.max_bytes", "cloud.pack.max_bytes %v is over IoT Hub's 256 KiB message cap", c.Pack.MaxBytes)
	}
}

// cloudNone refuses upstream settings when nothing is sent upstream, so a
// forgotten protocol key does not silently turn the link off.
func (v *checker) cloudNone() {
	c := v.c
	for _, k := range []struct {
		key string
		set bool
	}{
		{"url", c.URL != ""}, {"host", c.Host != ""}, {"client_id", c.ClientID != ""},
		{"username", c.Username != ""}, {"password_file", c.PasswordFile != ""},
		{"device_id", c.DeviceID != ""}, {"shared_access_key", c.SharedAccessKey != ""},
		{"shared_access_key_file", c.SharedAccessKeyFile != ""}, {"tls", c.TLS != TLSConfig{}},
	} {
		if k.set {
			v.errorf(k.key, "cloud.%s is set but cloud.protocol is none, so nothing is sent upstream (set protocol: mqtt or azure-iothub)", k.key)
			return
		}
	}
}

func (v *checker) cloudMQTT() {
	c := v.c
	if c.URL == "" {
		v.errorf("url", "cloud.url is required with protocol mqtt (e.g. mqtts://broker.example:8883)")
		return
	}
	secure := v.cloudURL("url", c.URL)
	if !secure && c.TLS != (TLSConfig{}) {
		v.errorf("tls", "cloud.tls is set but cloud.url is plain %s; use mqtts://", strings.SplitN(c.URL, "//", 2)[0]+"//")
	}
	if c.ClientID != "" {
		if err := msg.ValidDeviceID(c.ClientID); err != nil {
			v.errorf("client_id", "cloud.client_id: %s", strings.TrimPrefix(err.Error(), "msg: "))
		}
	}
	if c.PasswordFile != "" && c.Username == "" {
		v.errorf("username", "cloud.username is required with cloud.password_file")
	}
}

func (v *checker) cloudAzure() {
	c := v.c
	switch {
	case c.Host == "":
		v.errorf("host", "cloud.host is required with protocol azure-iothub (e.g. myhub.azure-devices.net)")
	case strings.ContainsAny(c.Host, "/: "):
		v.errorf("host", "cloud.host: want a bare host name such as myhub.azure-devices.net, got %q", c.Host)
	}
	if c.URL != "" {
		v.cloudURL("url", c.URL)
	}
	if c.DeviceID != "" {
		if err := msg.ValidDeviceID(c.DeviceID); err != nil {
			v.errorf("device_id", "cloud.device_id: %s", strings.TrimPrefix(err.Error(), "msg: "))
		}
	}
	var auth []string
	if c.SharedAccessKey != "" {
		auth = append(auth, "shared_access_key")
		v.checkKey("shared_access_key", c.SharedAccessKey)
	}
	if c.SharedAccessKeyFile != "" {
		auth = append(auth, "shared_access_key_file")
	}
	if c.TLS.CertFile != "" {
		auth = append(auth, "tls")
	}
	switch len(auth) {
	case 0:
		v.errorf("shared_access_key", "cloud: protocol azure-iothub needs shared_access_key, shared_access_key_file or an X.509 certificate in tls.cert_file/key_file")
	case 1:
	default:
		v.errorf(auth[1], "cloud: use one of shared_access_key, shared_access_key_file or tls.cert_file, not %s", strings.Join(auth, " and "))
	}
	if c.SharedAccessKeyName != "" && c.SharedAccessKey == "" && c.SharedAccessKeyFile == "" {
		v.errorf("shared_access_key_name", "cloud.shared_access_key_name needs the policy's key in shared_access_key or shared_access_key_file")
	}
	if c.SASTTL != 0 && c.SASTTL < time.Minute {
		v.errorf("sas_ttl", "cloud.sas_ttl must be at least 1m, got %v", c.SASTTL)
	}
	switch c.Identity {
	case IdentityGateway:
	case IdentityPerDevice:
		// Each device's connection drains its own backlog in queue order:
		// there is no live-first and no replay budget to apply a rate to.
		if c.ReplayRate != 0 {
			v.errorf("replay_rate", "cloud.replay_rate is not supported with cloud.identity: per-device (each device's connection drains its backlog in queue order); remove it")
		}
	default:
		v.errorf("identity", "cloud.identity: unknown identity %q (want gateway or per-device)", c.Identity)
	}
}

func (v *checker) checkKey(path, key string) {
	if err := ValidKey(key); err != nil {
		v.errorf(path, "cloud.%s %v", path, err)
	}
}

// ValidKey checks an IoT Hub shared access key as the config file writes
// it: non-empty standard base64.
func ValidKey(key string) error {
	if _, err := iothub.DecodeKey(key); err != nil {
		return errors.New("is not a base64 key")
	}
	return nil
}

// cloudURL checks an upstream broker URL and reports whether it uses TLS.
func (v *checker) cloudURL(key, raw string) (secure bool) {
	path := key
	key = "cloud." + key
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		v.errorf(path, "%s: bad broker URL %q: want mqtts://host:port or mqtt://host:port", key, RedactURL(raw))
		return true
	}
	secure, known := wire.BrokerScheme(u.Scheme)
	if !known {
		v.errorf(path, "%s: unknown scheme %q in %q (want mqtts://, or mqtt:// for plain TCP)", key, u.Scheme, RedactURL(raw))
		return true
	}
	if _, pw := u.User.Password(); pw {
		v.errorf(path, "%s must not carry a password: put it in cloud.password_file", key)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			v.errorf(path, "%s: bad port %q", key, p)
		}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		v.errorf(path, "%s: a broker URL has no path or query, got %q", key, RedactURL(raw))
	}
	return secure
}

// inflightOK reports whether n unacknowledged publishes is a valid window
// (MQTT's packet ids allow 65535).
func inflightOK(n int) bool { return n >= 1 && n <= 65535 }

// tlsPairOK reports whether a client certificate and its key are given
// together (or neither).
func tlsPairOK(cert, key string) bool { return (cert == "") == (key == "") }

// RedactURL drops a URL's user info, query and fragment, for logs and
// summaries.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Cut anything that could hold a secret.
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			raw = raw[i+1:]
		}
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i]
		}
		return raw
	}
	u.User = nil
	u.RawQuery, u.Fragment, u.RawFragment = "", "", ""
	return u.String()
}
