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
	"os"
	"strings"
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
	if opt.Protocol == ProtocolAzure && opt.Identity == IdentityPerDevice {
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

// Options configures a Session or a Fleet: the cloud section of the config
// file (Config) and what the gateway resolves around it. Zero values take
// the defaults noted.
type Options struct {
	// Config is the cloud section as the file writes it. New and NewFleet
	// derive its defaults (Config.WithDerived with GatewayID), refuse it
	// unless Config.Validate passes, and read its PasswordFile and
	// SharedAccessKeyFile. A zero Protocol means ProtocolMQTT here (the
	// file's default is none) and a zero Keepalive DefaultKeepalive.
	Config

	// GatewayID is the gateway's id: the default client_id (mqtt) and
	// device_id (azure-iothub).
	GatewayID string

	// Identity per-device (a Fleet):
	//
	// DeviceKeys holds each leaf's own IoT Hub key (base64), from the
	// leaves' azure sections. Leaves are the leaves known at start: those
	// with an identity (a key, or the policy key) connect at once, so C2D
	// reaches them before their first D2C; others connect on their first
	// record. NotDevices are local clients that are not devices (observers,
	// operators): without a key of their own, whatever they publish goes
	// under the gateway's identity, even when a policy key could sign for
	// them (IoT Hub does not know them).
	DeviceKeys         map[string]string
	Leaves, NotDevices []string

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
	// long for its PUBACK (default max(3×Keepalive, 30 s)).
	StallTimeout time.Duration

	// RenewBefore is how long before its SAS token expires a session
	// reconnects with a fresh one (default 5 min, at most SASTTL/2).
	RenewBefore time.Duration

	// MaxMessageBytes caps a record's size (payload + properties); larger
	// records are rejected to dead letters. Default 256 KiB for azure,
	// unlimited (0) for mqtt.
	MaxMessageBytes int

	// Inbox receives C2D messages; nil disables the C2D subscription. It
	// is called from one goroutine per connection, in receive order; the
	// message's PUBACK is sent only after it returns nil. After an error
	// the session sends no further PUBACKs on that connection and
	// reconnects, so the broker delivers the message again.
	Inbox msg.Intake

	// Twins, with identity per-device, are the leaves' device twins and
	// direct methods, carried over each leaf's own connection (see Twins);
	// nil: none. A Session of one identity (New) does not use it.
	Twins Twins

	Logger *slog.Logger

	// password is the MQTT password, read from Config.PasswordFile.
	password string
	// tokenTTL, set by tests, is a SAS lifetime below the file's minimum.
	tokenTTL time.Duration
	// connectGate, when set, is waited on before each connection attempt
	// (a Fleet's shared connection rate limit).
	connectGate func(context.Context) error
	// twins is Twins on a leaf's connection of a Fleet.
	twins Twins
}

const (
	azureMaxMessageBytes = 256 * 1024
	defaultC2DTopic      = "devices/+/messages/devicebound/#"
)

// ErrOptions wraps every option error.
var ErrOptions = errors.New("cloudlink: invalid options")

// withDefaults returns a copy of o with defaults filled in and its secret
// files read, or every problem: Config.Validate's, and those of the options
// the file does not have.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrOptions}, a...)...))
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolMQTT
	}
	if o.Keepalive == 0 {
		o.Keepalive = DefaultKeepalive
	}
	if o.Identity == "" {
		o.Identity = IdentityGateway
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Protocol == ProtocolMQTT && o.ClientID == "" {
		o.ClientID = o.GatewayID
	}
	o.Config = o.Config.WithDerived(o.GatewayID)
	if o.PasswordFile != "" {
		pw, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			bad("password_file: %v", err)
		}
		o.password, o.PasswordFile = strings.TrimRight(string(pw), "\r\n"), ""
	}
	if o.SharedAccessKeyFile != "" {
		k, err := os.ReadFile(o.SharedAccessKeyFile)
		switch {
		case err != nil:
			bad("shared_access_key_file: %v", err)
		case o.SharedAccessKey != "":
			bad("shared_access_key and shared_access_key_file: use one")
		default:
			o.SharedAccessKey = strings.TrimSpace(string(k))
		}
		o.SharedAccessKeyFile = ""
	}
	if err := o.Config.Validate(); err != nil {
		bad("%v", err)
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
		o.StallTimeout = max(3*o.Keepalive, 30*time.Second)
	}
	if o.C2DTopic == "" {
		o.C2DTopic = defaultC2DTopic
	}
	switch o.Protocol {
	case ProtocolMQTT:
		if o.ClientID == "" {
			bad("client_id is required (or GatewayID)")
		}
	case ProtocolAzure:
		if o.DeviceID == "" {
			bad("device_id is required (or GatewayID)")
		}
		if o.Identity == IdentityPerDevice {
			// One connection per leaf is a Fleet (Open, NewFleet); a single
			// Session would send leaves under the gateway's identity.
			bad("identity per-device needs a Fleet (cloudlink.Open), not a Session")
		}
		for dev, k := range o.DeviceKeys {
			if err := ValidKey(k); err != nil {
				bad("azure key of device %q %v", dev, err)
			}
		}
		if o.tokenTTL > 0 {
			o.SASTTL = o.tokenTTL
		}
		if o.SASTTL <= 0 {
			o.SASTTL = DefaultSASTTL
		}
		if o.RenewBefore <= 0 {
			o.RenewBefore = 5 * time.Minute
		}
		o.RenewBefore = min(o.RenewBefore, o.SASTTL/2)
		if o.ClientID == "" {
			o.ClientID = o.DeviceID
		}
		if o.MaxMessageBytes == 0 {
			o.MaxMessageBytes = azureMaxMessageBytes
		}
	}
	if p := o.Pack; p.MaxBytes > 0 && o.MaxMessageBytes > 0 && int(p.MaxBytes) > o.MaxMessageBytes {
		bad("pack max_bytes %d: over the upstream's message cap %d", p.MaxBytes, o.MaxMessageBytes)
	}
	return o, errors.Join(errs...)
}
