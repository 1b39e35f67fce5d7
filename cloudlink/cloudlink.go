// Package cloudlink owns the upstream side of the gateway: one session to a
// generic MQTT broker or to Azure IoT Hub that drains the store's outbox at
// least once and takes cloud-to-device (C2D) messages in safely.
//
// Forwarding: the session leases the oldest records from the outbox, publishes
// each with QoS 1 on its D2C topic (payload unchanged), acknowledges a record
// to the store only on its PUBACK, and releases every record still in flight
// when a connection ends, so a crash or an outage anywhere means redelivery
// with the same $.mid, never loss.
//
// Reconnect: the session runs its own reconnect loop (paho's auto-reconnect is
// off). Every connection is a fresh client with nothing queued inside it; all
// state that matters (what is leased, what is in flight) is owned by the
// session and reset in one place when a connection ends. That is what makes
// "stalled after an outage until restarted" impossible by construction: the
// loop either holds a live connection that is moving records, or it is
// waiting out a back-off that always ends in another attempt.
//
// C2D: a message arriving on the C2D subscription is handed to Options.Inbox
// and acknowledged (PUBACK) only after Inbox returned nil, in receive order.
package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Link is an upstream link the gateway runs: a Session, or a Fleet when
// each leaf has its own IoT Hub identity.
type Link interface {
	Run(ctx context.Context) error
	Status() Status
}

// Open returns the link opt asks for: a Fleet for azure identity
// "per-device", else a Session.
func Open(opt Options, q queue) (Link, error) {
	if opt.Protocol == ProtocolAzure && opt.Azure.Identity == IdentityPerDevice {
		return NewFleet(opt, q)
	}
	return New(opt, q)
}

// queue is the slice of the store the forwarder needs; *store.Queue
// satisfies it.
type queue interface {
	// Lease blocks until at least one record is available, ctx is done or the
	// store is closed, and returns up to max of the oldest unleased records.
	Lease(ctx context.Context, max int) ([]*msg.Record, error)
	// Ack removes delivered records.
	Ack(seqs ...uint64) error
	// Release makes leased records available again, at their place in the queue.
	Release(seqs ...uint64) error
	// Reject moves a record that can never be delivered to dead letters.
	Reject(seq uint64, reason string) error
}

// Protocol names an upstream dialect: the cloud.protocol key.
type Protocol string

// Protocols.
const (
	ProtocolMQTT  Protocol = "mqtt"
	ProtocolAzure Protocol = "azure-iothub"
	// ProtocolNone sends nothing upstream: the gateway only buffers.
	ProtocolNone Protocol = "none"
)

// Identity says how leaf devices appear in IoT Hub: the cloud.identity key.
type Identity string

// Identities.
const (
	// IdentityGateway sends the leaves' messages on the gateway's own
	// connection, their id in a property.
	IdentityGateway Identity = "gateway"
	// IdentityPerDevice gives every leaf its own IoT Hub identity and
	// connection (a Fleet).
	IdentityPerDevice Identity = "per-device"
)

// AzureOptions configures the Azure IoT Hub dialect.
type AzureOptions struct {
	Host            string // myhub.azure-devices.net
	DeviceID        string // the gateway's identity
	SharedAccessKey string // base64; empty with X.509 (Options.CertFile/KeyFile)
	// KeyName, when set, makes SharedAccessKey a shared access policy key
	// (with DeviceConnect) rather than the device's own: tokens carry
	// skn=KeyName and are signed with it for sr={host}/devices/{id}.
	KeyName  string
	Identity Identity // IdentityGateway (default) or IdentityPerDevice
	// DeviceKeys holds each leaf's key for IdentityPerDevice.
	DeviceKeys map[string]string
	// Leaves are the leaves known at start (IdentityPerDevice): those
	// with an identity (a key, or the policy key) connect at once, so C2D
	// reaches them before their first D2C. Others connect on their first
	// record.
	Leaves []string
	// NotDevices are local clients that are not devices (observers,
	// operators): without a key of their own, whatever they publish goes
	// under the gateway's identity, even when a policy key could sign for
	// them (IoT Hub does not know them).
	NotDevices []string
	// TokenTTL is the SAS token lifetime (default 1 h); the session reconnects
	// with a fresh token RenewBefore (default 5 min, at most TTL/2) before expiry.
	TokenTTL, RenewBefore time.Duration
}

// Options configures a Session. Zero values take the defaults noted.
type Options struct {
	Protocol Protocol // ProtocolMQTT (default), ProtocolAzure or ProtocolNone
	URL      string   // mqtt://host:port or mqtts://host:port (azure: default mqtts://{Host}:8883)

	ClientID, Username, Password string

	CAFile, CertFile, KeyFile string
	InsecureSkipVerify        bool
	// ServerName is the name the server certificate must carry (default:
	// the URL's host).
	ServerName string

	MaxInflight int           // unacknowledged publishes (default 64; azure 16)
	KeepAlive   time.Duration // MQTT keep-alive, detects half-open links (default 60 s)
	ReplayRate  float64       // backlog messages/s after an outage; 0 = unlimited

	// StrictOrder turns live-first replay off: every record goes in queue
	// order, so each device's messages arrive in sequence order.
	StrictOrder bool

	// CleanSession asks the broker to forget the session on connect. The
	// default (false) keeps the C2D subscription and queued C2D messages
	// across disconnects, as IoT Hub's SDKs do.
	CleanSession bool

	// C2DTopic is the C2D subscription for generic MQTT
	// (default devices/+/messages/devicebound/#); azure uses its fixed topic.
	C2DTopic string

	// RetryMin and RetryMax bound the reconnect back-off (full jitter,
	// doubling from RetryMin; defaults 500 ms and 60 s). StableAfter is how
	// long a connection must last for the back-off to reset (default 30 s).
	RetryMin, RetryMax, StableAfter time.Duration

	// StallTimeout drops a connection whose oldest publish has waited this
	// long for its PUBACK (default max(3×KeepAlive, 30 s)).
	StallTimeout time.Duration

	// MaxMessageBytes caps a record's size (payload + properties); larger
	// records are rejected to dead letters. Default 256 KiB for azure,
	// unlimited (0) for mqtt.
	MaxMessageBytes int

	// Pack packs small readings of one device into one message; off when
	// Pack.MaxBytes is 0.
	Pack PackOptions

	Azure AzureOptions

	// Inbox receives C2D messages; nil disables the C2D subscription. It
	// is called from one goroutine per connection, in receive order; the
	// message's PUBACK is sent only after it returns nil. After an error
	// the session sends no further PUBACKs on that connection and
	// reconnects, so the broker delivers the message again.
	Inbox msg.Intake

	// connectGate, when set, is waited on before each connection attempt
	// (a Fleet's shared connection rate limit).
	connectGate func(context.Context) error

	Logger *slog.Logger
}

const (
	defaultMaxInflight      = 64
	defaultAzureMaxInflight = 16
	azureMaxMessageBytes    = 256 * 1024
	minPackBytes            = 512
	azureAPIVersion         = "2021-04-12"
	defaultC2DTopic         = "devices/+/messages/devicebound/#"
)

// ErrOptions wraps every option error.
var ErrOptions = errors.New("cloudlink: invalid options")

// withDefaults returns a copy of o with defaults filled in, or every problem.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrOptions}, a...)...))
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolMQTT
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 60 * time.Second
	}
	if o.KeepAlive < time.Second {
		bad("keep_alive %v: at least 1s", o.KeepAlive)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 60 * time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.StableAfter <= 0 {
		o.StableAfter = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = max(3*o.KeepAlive, 30*time.Second)
	}
	if o.ReplayRate < 0 {
		bad("replay_rate %v: must be ≥ 0", o.ReplayRate)
	}
	if o.MaxInflight != 0 && !inflightOK(o.MaxInflight) { // 0: the protocol's default
		bad("max_inflight %d: want 1..65535", o.MaxInflight)
	}
	if o.C2DTopic == "" {
		o.C2DTopic = defaultC2DTopic
	}
	switch o.Protocol {
	case ProtocolNone:
		return o, errors.Join(errs...)
	case ProtocolMQTT:
		if o.MaxInflight == 0 {
			o.MaxInflight = defaultMaxInflight
		}
		if o.ClientID == "" {
			bad("client_id is required")
		}
		if o.URL == "" {
			bad("url is required")
		}
	case ProtocolAzure:
		a := &o.Azure
		if a.Host == "" {
			bad("azure host is required")
		}
		if err := msg.ValidDeviceID(a.DeviceID); err != nil {
			bad("azure device_id: %v", err)
		}
		if a.Identity == "" {
			a.Identity = IdentityGateway
		}
		switch a.Identity {
		case IdentityGateway:
		case IdentityPerDevice:
			// One connection per leaf is a Fleet (Open, NewFleet); a single
			// Session would send leaves under the gateway's identity.
			bad("azure identity per-device needs a Fleet (cloudlink.Open), not a Session")
		default:
			bad("azure identity %q: want gateway or per-device", a.Identity)
		}
		if a.SharedAccessKey == "" && (o.CertFile == "" || o.KeyFile == "") {
			bad("azure needs shared_access_key or tls cert_file and key_file")
		}
		if a.SharedAccessKey != "" {
			if _, err := decodeKey(a.SharedAccessKey); err != nil {
				bad("azure shared_access_key: %v", err)
			}
		}
		for dev, k := range a.DeviceKeys {
			if _, err := decodeKey(k); err != nil {
				bad("azure key of device %q: %v", dev, err)
			}
		}
		if a.TokenTTL <= 0 {
			a.TokenTTL = time.Hour
		}
		if a.RenewBefore <= 0 {
			a.RenewBefore = 5 * time.Minute
		}
		a.RenewBefore = min(a.RenewBefore, a.TokenTTL/2)
		if o.URL == "" {
			o.URL = "mqtts://" + a.Host + ":8883"
		}
		if o.ClientID == "" {
			o.ClientID = a.DeviceID
		}
		if o.MaxInflight == 0 {
			o.MaxInflight = defaultAzureMaxInflight
		}
		if o.MaxMessageBytes == 0 {
			o.MaxMessageBytes = azureMaxMessageBytes
		}
	default:
		bad("protocol %q: want mqtt, azure-iothub or none", o.Protocol)
	}
	if o.URL != "" {
		if _, _, err := brokerAddr(o.URL); err != nil {
			bad("%v", err)
		}
		if _, tls, _ := brokerAddr(o.URL); !tls && (o.CertFile != "" || o.CAFile != "") {
			bad("url %q is plain TCP but tls files are set (use mqtts://)", o.URL)
		}
	}
	if !tlsPairOK(o.CertFile, o.KeyFile) {
		bad("tls cert_file and key_file go together")
	}
	if p := &o.Pack; p.MaxBytes != 0 {
		if p.MaxBytes < minPackBytes || (o.MaxMessageBytes > 0 && p.MaxBytes > o.MaxMessageBytes) {
			if o.MaxMessageBytes > 0 {
				bad("pack max_bytes %d: want %d..%d (the upstream's message cap)", p.MaxBytes, minPackBytes, o.MaxMessageBytes)
			} else {
				bad("pack max_bytes %d: want at least %d", p.MaxBytes, minPackBytes)
			}
		}
		if p.MaxDelay < 0 {
			bad("pack max_delay %v: must be ≥ 0", p.MaxDelay)
		}
		if p.MaxDelay == 0 {
			p.MaxDelay = defaultPackDelay
		}
	}
	return o, errors.Join(errs...)
}

// brokerAddr turns mqtt://host[:port] or mqtts://host[:port] into host:port
// and whether TLS is used. tcp://, ssl:// and tls:// are accepted too.
func brokerAddr(raw string) (addr string, useTLS bool, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("url %q: %w", raw, err)
	}
	useTLS, known := brokerScheme(u.Scheme)
	if !known {
		return "", false, fmt.Errorf("url %q: scheme %q: want mqtt:// or mqtts://", raw, u.Scheme)
	}
	port := "1883"
	if useTLS {
		port = "8883"
	}
	if u.Hostname() == "" {
		return "", false, fmt.Errorf("url %q: no host", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.User != nil {
		return "", false, fmt.Errorf("url %q: only scheme://host:port is allowed (credentials go in username/password_file)", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return "", false, fmt.Errorf("url %q: bad port", raw)
		}
		port = p
	}
	return u.Hostname() + ":" + port, useTLS, nil
}
