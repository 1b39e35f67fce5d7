package hub

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Config is what a user configures of the hub: the hub section of the
// gateway's config file. DefaultConfig holds the file's defaults and
// Validate the file's rules; New also takes a zero Config, each zero value
// standing for the default noted on Options.
type Config struct {
	// Listen is the plain TCP listener address, host:port. Default
	// 127.0.0.1:1883; "" disables plain TCP.
	Listen string `yaml:"listen"`
	// TLSListen is the TLS listener address ("" = none). It needs
	// TLS.CertFile and TLS.KeyFile.
	TLSListen string    `yaml:"tls_listen"`
	TLS       TLSConfig `yaml:"tls"`
	// MaxMessageBytes caps a leaf's publish, checked before storing.
	// Default 262144 (256 KiB, IoT Hub's cap).
	MaxMessageBytes msg.Size `yaml:"max_message_bytes"`
	// MaxInflight is the number of QoS 1 messages per client that may await
	// storage and PUBACK at once in each direction (MQTT 5 receive
	// maximum); a client that sends more is read no further until PUBACKs
	// go out. Default 256.
	MaxInflight int `yaml:"max_inflight"`
	// SessionExpiry bounds how long an offline client's persistent session
	// (and its pending C2D messages in the broker) is kept. Default 24h.
	// Pending commands live in the store, not in the session.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// ConnectRate is the number of new connections accepted per second
	// over all listeners (token bucket, ConnectBurst deep); connections
	// beyond it are closed at once. Default 20/s in the file, burst 100, so
	// a reconnect storm cannot starve the gateway; New takes 0 as 50/s.
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
	// ConnectRatePerAddress is the number of new connections accepted per
	// second from one source address (an IPv4 address or an IPv6 /64),
	// with ConnectBurst's burst, checked before ConnectRate: one host
	// reconnecting in a loop spends its own bucket, and leaves the rest of
	// ConnectRate to the others.
	// 0 (the default): half of ConnectRate.
	ConnectRatePerAddress float64 `yaml:"connect_rate_per_address"`
	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT and log in (TLS handshake included); it is closed then.
	// Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxConnections caps the open connections over all listeners,
	// logged in or not; a connection beyond it is closed at accept.
	// Default 1000.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectPacket caps the CONNECT packet: until the login succeeds
	// nothing larger is read (the connection is closed). Default 16 KiB.
	MaxConnectPacket msg.Size `yaml:"max_connect_packet"`
	// Clients are the MQTT leaf devices and local observers allowed to
	// connect. None can connect anonymously.
	Clients []Client `yaml:"clients"`
}

// TLSConfig configures the hub's TLS listener. With ClientCAFile, client
// certificates signed by that CA are verified and accepted as login: a
// verified certificate's CN is the client's id and needs no password.
type TLSConfig struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Client is one configured MQTT client of the hub: a leaf device (client id
// = username = device id, or an Azure IoT SDK device) or a local observer.
type Client struct {
	// ID is the device id = MQTT client id = username.
	ID string `yaml:"id"`
	// PasswordHash is a bcrypt hash (`outpost passwd`); "" = no password
	// login, TLS certificate or SAS token only. The file requires it unless
	// hub.tls.client_ca_file is set or the client has a SAS key.
	PasswordHash string `yaml:"password_hash"`
	// SASKey is the leaf's IoT Hub device key (base64), or SASKeyFile a
	// file holding it; the config file sets them from the client's
	// azure: {shared_access_key | shared_access_key_file}. With a key the
	// leaf may log in as an Azure IoT device SDK does: client id = id,
	// username "{any host}/{id}/?api-version=...", password a SAS token for
	// "{any host}/devices/{id}" signed with this key, checked locally and
	// valid until its expiry (the connection is closed then).
	SASKey     string `yaml:"-"`
	SASKeyFile string `yaml:"-"`
	// Priority is the outbox class of the client's D2C messages. The zero
	// value is msg.High; the file's default is normal.
	Priority msg.Priority `yaml:"priority"`
	// ReadAll lets a local observer (dashboard, Node-RED) subscribe to
	// every device's D2C topic.
	ReadAll bool `yaml:"read_all"`
	// Operator lets a local client (an HMI, a maintenance laptop) send
	// commands: it may publish to any device's devicebound topic, and each
	// such message goes to Options.Commands (and nowhere else) before its
	// PUBACK, becoming a command in the ledger like one from the cloud.
	Operator bool `yaml:"operator"`
}

// Defaults.
const (
	DefaultListen          = "127.0.0.1:1883"
	DefaultMaxMessageBytes = 256 * msg.KiB
	DefaultMaxInflight     = 256
	DefaultSessionExpiry   = 24 * time.Hour
	// DefaultConnectRate is the file's default; New takes a zero rate as
	// fallbackConnectRate.
	DefaultConnectRate  = 20
	DefaultConnectBurst = 100

	DefaultConnectTimeout   = 10 * time.Second
	DefaultMaxConnections   = 1000
	DefaultMaxConnectPacket = 16 * msg.KiB
)

// fallbackConnectRate is New's rate for a zero Config.ConnectRate
// (including the file's connect_rate: 0).
const fallbackConnectRate = 50

// DefaultConfig returns the hub section's defaults: a plain listener on
// DefaultListen and no clients.
func DefaultConfig() Config {
	return Config{
		Listen:          DefaultListen,
		MaxMessageBytes: DefaultMaxMessageBytes,
		MaxInflight:     DefaultMaxInflight,
		SessionExpiry:   DefaultSessionExpiry,
		ConnectRate:     DefaultConnectRate,
		ConnectBurst:    DefaultConnectBurst,

		ConnectTimeout:   DefaultConnectTimeout,
		MaxConnections:   DefaultMaxConnections,
		MaxConnectPacket: DefaultMaxConnectPacket,
	}
}

// Validate checks c as the config file allows it and reports every problem
// (errors.Join), each an *adapters.FieldError whose Path is the key below
// hub (such as "clients[1].password_hash") and whose message names the key
// as it is written in the file. Client ids are checked by the config loader,
// which knows every id in the file.
func (c Config) Validate() error {
	var errs []error
	bad := func(path, format string, a ...any) { errs = append(errs, adapters.Errorf(path, format, a...)) }
	if c.Listen != "" {
		if err := ValidListen(c.Listen); err != nil {
			bad("listen", "hub.listen: %v", err)
		}
	}
	if c.TLSListen != "" {
		if err := ValidListen(c.TLSListen); err != nil {
			bad("tls_listen", "hub.tls_listen: %v", err)
		}
		if c.TLSListen == c.Listen {
			bad("tls_listen", "hub.tls_listen: same address as hub.listen")
		}
		if c.TLS.CertFile == "" {
			bad("tls.cert_file", "hub.tls.cert_file is required with hub.tls_listen")
		}
		if c.TLS.KeyFile == "" {
			bad("tls.key_file", "hub.tls.key_file is required with hub.tls_listen")
		}
	} else if c.TLS != (TLSConfig{}) {
		bad("tls", "hub.tls is set but hub.tls_listen is empty: nothing would use it")
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes > 256*msg.MiB-1 {
		bad("max_message_bytes", "hub.max_message_bytes must be between 1 and 268435455 (MQTT's limit), got %d", c.MaxMessageBytes)
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		bad("max_inflight", "hub.max_inflight must be between 1 and 65535, got %d", c.MaxInflight)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry > math.MaxUint32*time.Second {
		bad("session_expiry", "hub.session_expiry must be between 0 and %v, got %v", math.MaxUint32*time.Second, c.SessionExpiry)
	}
	if c.ConnectRate < 0 || math.IsInf(c.ConnectRate, 0) || math.IsNaN(c.ConnectRate) {
		bad("connect_rate", "hub.connect_rate must be a positive rate per second (0: the built-in 50/s), got %v", c.ConnectRate)
	}
	if c.ConnectRate > 0 && c.ConnectBurst < 1 {
		bad("connect_burst", "hub.connect_burst must be at least 1 when hub.connect_rate is set, got %d", c.ConnectBurst)
	}
	errs = append(errs, c.validateGuard()...)
	for i, cl := range c.Clients {
		p := fmt.Sprintf("clients[%d]", i)
		switch {
		case cl.PasswordHash == "" && c.TLS.ClientCAFile == "" && cl.SASKey == "" && cl.SASKeyFile == "":
			bad(p+".password_hash", "hub.%s.password_hash is required (make one with `outpost passwd`); no client connects anonymously", p)
		case cl.PasswordHash != "":
			if _, err := bcrypt.Cost([]byte(cl.PasswordHash)); err != nil {
				bad(p+".password_hash", "hub.%s.password_hash is not a bcrypt hash (make one with `outpost passwd`)", p)
			}
		}
	}
	return errors.Join(errs...)
}

// ValidListen checks a host:port listen address as the config file writes
// it; port 0 picks a free port.
func ValidListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad listen address %q: want host:port, e.g. 127.0.0.1:1883 or :1883", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q in %q", port, addr)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("bad host %q in %q", host, addr)
	}
	return nil
}
