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
	"reflect"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// Config is one parsed and validated config file. It is plain data: the
// runtime state of the parts it configures lives elsewhere.
type Config struct {
	Gateway  Gateway          `yaml:"gateway"`
	Hub      Hub              `yaml:"hub"`
	HTTP     HTTP             `yaml:"http"`
	Store    store.Config     `yaml:"store"`
	Cloud    cloudlink.Config `yaml:"cloud"`
	Commands Commands         `yaml:"commands"`
	Devices  []Device         `yaml:"devices"`

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
	// StallTimeout is how long ingest (writes waiting for the store's sync)
	// or forwarding (records queued, the link up, no upstream
	// acknowledgement) may stand still before the gateway reports itself
	// unhealthy and stops feeding the watchdog. Default 2m, at least 1s.
	StallTimeout time.Duration `yaml:"stall_timeout"`
}

// Hub is the hub section: the local MQTT hub's own config (package hub
// owns its keys, defaults and checks), with clients that may also carry an
// IoT Hub identity.
type Hub struct {
	hub.Config `yaml:",inline"`
	// Clients are the hub's clients (they shadow hub.Config.Clients, which
	// HubConfig fills from them).
	Clients []Client `yaml:"clients"`
}

// HubConfig returns the hub's own config, clients included.
func (h Hub) HubConfig() hub.Config {
	c := h.Config
	c.Clients = make([]hub.Client, len(h.Clients))
	for i, cl := range h.Clients {
		c.Clients[i] = cl.Client
		if cl.Azure != nil {
			c.Clients[i].SASKey, c.Clients[i].SASKeyFile = cl.Azure.SharedAccessKey, cl.Azure.SharedAccessKeyFile
		}
	}
	return c
}

// Client is one hub.clients entry: the hub's client and its own IoT Hub
// identity, if any.
type Client struct {
	hub.Client `yaml:",inline"`
	// Azure carries the client's own IoT Hub key. With any cloud.protocol
	// the leaf may log in to the hub with SAS tokens signed with it (and
	// then needs no password_hash); with cloud.identity per-device it is
	// also the leaf's upstream identity.
	Azure *DeviceAzure `yaml:"azure"`
}

// IsDevice reports whether the client is a device that needs an IoT Hub
// identity of its own under cloud.identity per-device: observers
// (read_all) and operators are not, unless they carry an azure block.
func (c Client) IsDevice() bool { return !c.ReadAll && !c.Operator || c.Azure != nil }

// HTTP is the status, metrics and API endpoint.
type HTTP struct {
	// Listen is host:port. Default 127.0.0.1:9180; "" disables HTTP. A
	// listener that is not on a loopback address needs TokenFile.
	Listen string `yaml:"listen"`
	// TokenFile holds the API's bearer token (one line, at least 16
	// characters; read when HTTP starts). Every call that is not a GET or
	// HEAD must send "Authorization: Bearer <token>"; without TokenFile
	// such calls are refused. On a listener that is not on a loopback
	// address every call needs it, except /healthz.
	TokenFile string `yaml:"token_file"`
}

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
	// TwinInterval is the shortest time between two updates of the
	// device's twin's reported properties (its points and health, on
	// change). Default DefaultTwinInterval; 0 in a config built in code
	// means the default.
	TwinInterval time.Duration
}

// DeviceAzure is a device's own IoT Hub credentials (identity: per-device).
type DeviceAzure struct {
	SharedAccessKey     string `yaml:"shared_access_key"`
	SharedAccessKeyFile string `yaml:"shared_access_key_file"`
}

// Defaults.
const (
	DefaultDataDir    = "/var/lib/outpost"
	DefaultHTTPListen = "127.0.0.1:9180"
	DefaultCommandTTL = time.Hour
	// DefaultStallTimeout is gateway.stall_timeout's default.
	DefaultStallTimeout = 2 * time.Minute
	// DefaultTwinInterval is devices[].twin_interval's default, and
	// MinTwinInterval its smallest value.
	DefaultTwinInterval = 10 * time.Second
	MinTwinInterval     = 100 * time.Millisecond
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
	c.Gateway.StallTimeout = DefaultStallTimeout
	c.Hub.Config = hub.DefaultConfig()
	c.HTTP.Listen = DefaultHTTPListen
	c.Store = store.DefaultConfig()
	c.Cloud = cloudlink.DefaultConfig()
	c.Commands.TTL = DefaultCommandTTL
}

// setDefaults gives a new hub.clients entry its defaults.
func (cl *Client) setDefaults() { cl.Priority = msg.Normal }

// Load reads the file at path and parses it (see Parse).
func Load(path string) (*Config, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates one config file; file names it in errors.
// A file over the limits (MaxFileBytes, MaxDepth, MaxExpandedNodes) is
// refused before it is decoded.
// On failure the error is an Errors holding every problem found, sorted by
// position; the returned config is then nil.
func Parse(file string, data []byte) (*Config, error) {
	if err := checkLimits(file, data); err != nil {
		return nil, err
	}
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
func (c *Config) fillDerived() { c.Cloud = c.Cloud.WithDerived(c.Gateway.ID) }

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
	return d.ID == o.ID && d.Priority == o.Priority && d.Kind == o.Kind && d.TwinInterval == o.TwinInterval &&
		reflect.DeepEqual(d.Adapter, o.Adapter) && reflect.DeepEqual(d.Azure, o.Azure)
}
