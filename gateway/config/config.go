// Package config owns the gateway's one YAML config file: its typed
// sections (gateway, hub, http, store, cloud, commands, devices), their
// defaults, strict decoding and validation.
//
// Decoding is strict: an unknown key anywhere is an error, a value of the
// wrong type is an error, and every problem in a file is reported at once,
// each as "FILE:LINE:COL: message" (see Errors). Each device's adapter
// configuration is decoded into the config type its kind registers with
// package adapters, and that config's Validate errors are placed the same way.
//
// The key names are the public contract (DESIGN.md, "Config"). Parse does no
// I/O: it does not open the files a config names (TLS keys, password files);
// the parts that use them report those problems when they start.
package config

import (
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Config is one parsed and validated config file. It is plain data: the
// runtime state of the parts it configures lives elsewhere.
type Config struct {
	Gateway  Gateway  `yaml:"gateway"`
	Hub      Hub      `yaml:"hub"`
	HTTP     HTTP     `yaml:"http"`
	Store    Store    `yaml:"store"`
	Cloud    Cloud    `yaml:"cloud"`
	Commands Commands `yaml:"commands"`
	Devices  []Device `yaml:"devices"`

	// File is the name the config was parsed under ("" for Default).
	File string `yaml:"-"`

	// where maps key paths ("hub.clients[1].id") to their positions in
	// File; nil for a config built in code.
	where *index
}

// Gateway identifies this gateway.
type Gateway struct {
	// ID is required; it must be a valid device id (msg.ValidDeviceID).
	ID string `yaml:"id"`
	// DataDir holds the store. Default /var/lib/outpost.
	DataDir string `yaml:"data_dir"`
}

// Hub is the local MQTT hub that leaf devices connect to.
type Hub struct {
	// Listen is the plain TCP listener address, host:port. Default
	// 127.0.0.1:1883; "" disables plain TCP.
	Listen string `yaml:"listen"`
	// TLSListen is the TLS listener address ("" = none). It needs
	// TLS.CertFile and TLS.KeyFile.
	TLSListen string `yaml:"tls_listen"`
	TLS       HubTLS `yaml:"tls"`
	// MaxMessageBytes caps a leaf's publish, checked before storing.
	// Default 262144 (256 KiB, IoT Hub's cap).
	MaxMessageBytes msg.Size `yaml:"max_message_bytes"`
	// MaxInflight is the number of unacknowledged QoS 1 messages a client
	// may have in flight in each direction (MQTT 5 receive maximum).
	// Default 256.
	MaxInflight int `yaml:"max_inflight"`
	// SessionExpiry bounds how long an offline client's session is kept.
	// Default 24h. Pending commands live in the store, not in the session.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// ConnectRate is the number of new connections accepted per second
	// (token bucket, ConnectBurst deep); 0 means unlimited. Default 20/s,
	// burst 100, so a reconnect storm cannot starve the gateway.
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
	// Clients are the MQTT leaf devices and local observers allowed to
	// connect. None can connect anonymously.
	Clients []Client `yaml:"clients"`
}

// HubTLS configures the hub's TLS listener.
type HubTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, makes the TLS listener verify client
	// certificates against it; a verified certificate's CN is the client's
	// id and needs no password.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Client is one MQTT client of the local hub: a leaf device (client id =
// username = device id) or a local observer.
type Client struct {
	ID string `yaml:"id"`
	// PasswordHash is a bcrypt hash (`outpost passwd`). Required unless
	// hub.tls.client_ca_file is set (client certificates).
	PasswordHash string `yaml:"password_hash"`
	// Priority is the outbox class of the client's D2C messages. Default
	// normal.
	Priority msg.Priority `yaml:"priority"`
	// ReadAll lets a local observer (dashboard, Node-RED) subscribe to
	// every device's D2C topic.
	ReadAll bool `yaml:"read_all"`
	// Operator lets a local client (an HMI, a maintenance laptop) send
	// commands: it may publish to any device's devicebound topic, and each
	// such message becomes a command in the ledger, like one from the cloud.
	Operator bool `yaml:"operator"`
	// Azure carries the client's own IoT Hub identity when
	// cloud.identity is per-device.
	Azure *DeviceAzure `yaml:"azure"`
}

// IsDevice reports whether the client is a device that needs an IoT Hub
// identity of its own under cloud.identity per-device: observers
// (read_all) and operators are not, unless they carry an azure block.
func (c Client) IsDevice() bool { return !c.ReadAll && !c.Operator || c.Azure != nil }

// HTTP is the status, metrics and API endpoint.
type HTTP struct {
	// Listen is host:port. Default 127.0.0.1:9180; "" disables HTTP.
	Listen string `yaml:"listen"`
}

// Store bounds the durable queues.
type Store struct {
	// MaxBytes caps the outbox. Default 512MiB.
	MaxBytes msg.Size `yaml:"max_bytes"`
	// WhenFull says what an append does when MaxBytes is reached.
	// Default drop-oldest.
	WhenFull WhenFull `yaml:"when_full"`
	// TTL removes records older than this, counted, never sent.
	// Default 168h; 0 keeps records until delivered or evicted.
	TTL time.Duration `yaml:"ttl"`
}

// WhenFull is the store's full policy.
type WhenFull string

// Full policies.
const (
	// DropOldest evicts the oldest records, lowest priority first.
	DropOldest WhenFull = "drop-oldest"
	// Reject fails the append (store.ErrFull); the producer gets no ack.
	Reject WhenFull = "reject"
)

// Commands configures the C2D command ledger.
type Commands struct {
	// TTL is a command's deadline when it carries no $.exp. Default 1h.
	TTL time.Duration `yaml:"ttl"`
}

// Device is one field device served by an adapter.
type Device struct {
	ID string
	// Priority is the outbox class of the device's readings. Default
	// normal.
	Priority msg.Priority
	// Kind is the adapter kind ("modbus", "serial", "gpio"), the one kind
	// key the device entry carries.
	Kind string
	// Adapter is the kind's config (from its Kind.NewConfig), decoded
	// strictly and validated.
	Adapter adapters.Config
	// Azure carries the device's own IoT Hub identity when
	// cloud.identity is per-device.
	Azure *DeviceAzure
}

// DeviceAzure is a device's own IoT Hub credentials (identity: per-device).
type DeviceAzure struct {
	SharedAccessKey     string `yaml:"shared_access_key"`
	SharedAccessKeyFile string `yaml:"shared_access_key_file"`
}

// Defaults.
const (
	DefaultDataDir         = "/var/lib/outpost"
	DefaultHubListen       = "127.0.0.1:1883"
	DefaultHTTPListen      = "127.0.0.1:9180"
	DefaultMaxMessageBytes = 256 * msg.KiB
	DefaultHubInflight     = 256
	DefaultSessionExpiry   = 24 * time.Hour
	DefaultConnectRate     = 20
	DefaultConnectBurst    = 100
	DefaultStoreMaxBytes   = 512 * msg.MiB
	DefaultStoreTTL        = 168 * time.Hour
	DefaultCommandTTL      = time.Hour
	DefaultCloudInflight   = 64
	DefaultAzureInflight   = 16
	DefaultKeepalive       = 30 * time.Second
)

// Default returns a config holding every default. Gateway.ID is empty:
// set it before use. Cloud.Protocol is none (buffer only).
func Default() *Config {
	c := &Config{}
	c.setDefaults()
	c.fillDerived()
	return c
}

func (c *Config) setDefaults() {
	c.Gateway.DataDir = DefaultDataDir
	c.Hub.Listen = DefaultHubListen
	c.Hub.MaxMessageBytes = DefaultMaxMessageBytes
	c.Hub.MaxInflight = DefaultHubInflight
	c.Hub.SessionExpiry = DefaultSessionExpiry
	c.Hub.ConnectRate = DefaultConnectRate
	c.Hub.ConnectBurst = DefaultConnectBurst
	c.HTTP.Listen = DefaultHTTPListen
	c.Store.MaxBytes = DefaultStoreMaxBytes
	c.Store.WhenFull = DropOldest
	c.Store.TTL = DefaultStoreTTL
	c.Cloud.Protocol = ProtocolNone
	c.Cloud.Keepalive = DefaultKeepalive
	c.Cloud.Identity = IdentityGateway
	c.Commands.TTL = DefaultCommandTTL
}

// setDefaults gives a new hub.clients entry its defaults.
func (cl *Client) setDefaults() { cl.Priority = msg.Normal }

// Load reads the file at path and parses it (see Parse).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates one config file; file names it in errors.
// On failure the error is an Errors holding every problem found, sorted by
// position; the returned config is then nil.
func Parse(file string, data []byte) (*Config, error) {
	c := &Config{File: file}
	c.setDefaults()
	d := newDecoder(file)
	root := d.parse(data)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted() // malformed YAML: nothing more to say
	}
	c.where = d.idx
	if root != nil {
		d.decodeValue("", root, reflectValue(c))
	}
	c.fillDerived()
	d.errs = append(d.errs, c.validate(d.failed)...)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	return c, nil
}

// fillDerived sets defaults that depend on other keys.
func (c *Config) fillDerived() {
	if c.Cloud.Pack.MaxBytes > 0 && c.Cloud.Pack.MaxDelay == 0 {
		c.Cloud.Pack.MaxDelay = DefaultPackMaxDelay
	}
	if c.Cloud.MaxInflight == 0 {
		c.Cloud.MaxInflight = DefaultCloudInflight
		if c.Cloud.Protocol == ProtocolAzure {
			c.Cloud.MaxInflight = DefaultAzureInflight
		}
	}
	if c.Cloud.Protocol != ProtocolAzure {
		return
	}
	if c.Cloud.DeviceID == "" {
		c.Cloud.DeviceID = c.Gateway.ID
	}
	if c.Cloud.URL == "" && c.Cloud.Host != "" {
		c.Cloud.URL = "mqtts://" + c.Cloud.Host + ":" + AzurePort
	}
	if c.Cloud.SASTTL == 0 && (c.Cloud.SharedAccessKey != "" || c.Cloud.SharedAccessKeyFile != "") {
		c.Cloud.SASTTL = DefaultSASTTL
	}
}

// Pos returns "FILE:LINE:COL" for a key path such as "devices[2]" or
// "hub.listen" (the nearest enclosing key written in the file), or just
// FILE for a config built in code. Use it to place problems found later,
// when a part starts with the config.
func (c *Config) Pos(path string) string {
	p := c.where.lookup(path, false)
	if p.line == 0 {
		return c.File
	}
	return fmt.Sprintf("%s:%d:%d", c.File, p.line, p.col)
}

// ErrorAt returns err as an *Error placed at path (see Pos), for problems
// found after parsing, e.g. an adapter that cannot open its port:
//
//	cfg.ErrorAt(fmt.Sprintf("devices[%d]", i), err)
func (c *Config) ErrorAt(path string, err error) *Error {
	p := c.where.lookup(path, false)
	return &Error{File: c.File, Line: p.line, Col: p.col, Path: path, Msg: err.Error()}
}

// Equal reports whether d and o configure the same device the same way,
// so a reload can leave an unchanged device running.
func (d Device) Equal(o Device) bool {
	return d.ID == o.ID && d.Priority == o.Priority && d.Kind == o.Kind &&
		reflect.DeepEqual(d.Adapter, o.Adapter) && reflect.DeepEqual(d.Azure, o.Azure)
}
