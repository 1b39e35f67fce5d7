// Package adapters holds the field-device contract and the registry of
// adapter kinds. Each kind lives in its own folder (modbus, serial, gpio,
// sim) and registers itself from an init function.
//
// A device is a Source; it may also be a Sink (it takes commands). The
// gateway finds the optional parts by type assertion on the Source, like
// database/sql does on a driver's Conn: HealthReporter (the device's
// health), LinkObserver (the upstream link's state), PointLister (its
// points, for its twin), Reader (read on demand) and io.Closer (release
// what New acquired). Each is documented with when the gateway calls it.
// The conformance suite in adaptertest checks every kind against all of it.
//
// Adapters never import cloudlink, store or any MQTT library: they produce
// readings and apply commands, and the gateway does the rest.
package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// A Source produces readings. Run blocks until ctx is done (then returns
// nil); a non-nil error means the adapter cannot go on. The gateway calls Run
// again on the same Source after a failure, with back-off.
//
// If a Source implements io.Closer, Close is called once the device is
// stopped for good: after its last Run has returned, when a reload removes
// the device or rebuilds it with a changed config, and when the gateway
// shuts down. A Run that failed is restarted without Close. Close must also
// be safe to call more than once, and on a device whose Run was never called
// (a partial start); the conformance suite checks both.
type Source interface {
	Run(ctx context.Context, out Emitter) error
}

// An Emitter takes readings into the gateway. Emit returns nil only once the
// readings are durably queued: that return is the acknowledgement.
type Emitter interface {
	Emit(ctx context.Context, rs ...msg.Reading) error
}

// A Sink applies commands. Apply performs cmd. An error wrapping ErrRejected
// is final and means nothing was actuated; any other error may be retried
// with the same cmd.ID.
type Sink interface {
	Apply(ctx context.Context, cmd msg.Command) (msg.Result, error)
}

// Health is a device's state as the gateway shows it (/api/status, the
// outpost_device_health metric) and acts on it (a command waits while its
// device is Down). The zero value is Up. In text (JSON, logs) the states are
// "ok", "degraded" and "down".
type Health int

// Health states.
const (
	Up       Health = iota // working: the last poll read every point, the port is open, ...
	Degraded               // working in part: some points fail, or the device just stopped answering
	Down                   // not working: no answer, no port, pins not configured
)

var healthText = [...]string{Up: "ok", Degraded: "degraded", Down: "down"}

// String returns "ok", "degraded" or "down" ("Health(N)" for other values).
func (h Health) String() string {
	if h >= 0 && int(h) < len(healthText) {
		return healthText[h]
	}
	return fmt.Sprintf("Health(%d)", int(h))
}

// MarshalText returns the state's text, "ok", "degraded" or "down"; any
// other value is an error.
func (h Health) MarshalText() ([]byte, error) {
	if h < 0 || int(h) >= len(healthText) {
		return nil, fmt.Errorf("adapters: invalid health %d", int(h))
	}
	return []byte(healthText[h]), nil
}

// UnmarshalText parses "ok", "degraded" or "down" (a decoded /api/status).
func (h *Health) UnmarshalText(b []byte) error {
	if i := slices.Index(healthText[:], string(b)); i >= 0 {
		*h = Health(i)
		return nil
	}
	return fmt.Errorf("adapters: unknown health %q", b)
}

// If a Source implements HealthReporter, Health is called whenever the
// gateway reports on the device (each /api/status request, `outpost
// status`, each /metrics scrape) and, for a command to the device, before
// every attempt to apply it and about twice a second while it reports Down:
// a command waits while its device is down, until the device is back or the
// command's deadline passes. Health may be called from any goroutine, at
// the same time as Run and Apply, before Run starts, between a failed Run
// and its restart, and after Run returns; it must not block. It returns the
// device's state and a one-line detail (the last error, or what was read);
// when detail is empty the gateway shows the reason of the last failed Emit
// or Run instead. A Source that does not implement HealthReporter is shown
// as Up.
type HealthReporter interface {
	Health() (state Health, detail string)
}

// If a Source implements LinkObserver and the gateway has a cloud link,
// SetLinkState is called once with the link's state (connected or not, and
// since when) within about a second of the device's start, and then again
// each time the link goes up or down while the device runs (the gateway
// looks once a second). It is called from a goroutine of the gateway's, at
// the same time as Run (or just before Run starts), and must not block.
// Without a cloud link it is never called: the link counts as up. A device
// rebuilt by a reload is a new device and is told again.
type LinkObserver interface {
	SetLinkState(up bool, since time.Time)
}

// Point is one of a device's points as its twin shows it: reported
// properties carry the values of every point, and a Writable one is also a
// desired property (a desired value becomes a write command).
type Point struct {
	Name     string
	Writable bool
}

// If a Source implements PointLister, Points is called when the gateway
// builds the device's twin and for each desired change, from any
// goroutine; it returns the device's points (a fixed list, from its
// config) and must not block. A Source without it has no desired
// properties.
type PointLister interface {
	Points() []Point
}

// If a Source implements Reader, Read is called for the device's direct
// method "read" (from an HTTP request's goroutine, at the same time as Run
// and Apply): it reads every point from the device now and returns them
// as one reading, failed points in Errors. An error means nothing could
// be read. A Source without it answers "read" with its last reading.
type Reader interface {
	Read(ctx context.Context) (msg.Reading, error)
}

// ErrRejected marks a command that can never succeed (unknown point, not
// writable, bad value). Nothing was actuated.
var ErrRejected = errors.New("adapters: command rejected")

// Config is one device's adapter configuration, decoded strictly from the
// YAML under the device's kind key (devices[i].modbus, ...). Validate reports
// every problem at once (errors.Join), each as a *FieldError where it can
// name the key.
type Config interface {
	Validate() error
}

// FieldError ties a problem to a key below the adapter's config node, as a
// path such as "points[2].type" or "url". The config loader turns the path
// into FILE:LINE:COL.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a *FieldError for path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// Kind describes one adapter kind to the registry.
type Kind struct {
	// Name is the device key that selects the kind: "modbus", "serial", "gpio".
	Name string
	// NewConfig returns a pointer to a config holding the kind's defaults,
	// ready to decode YAML into.
	NewConfig func() Config
	// New builds a device from a validated config. The result is a Source;
	// it may also implement Sink if the device takes commands.
	New func(device string, cfg Config, log *slog.Logger) (Source, error)
}

var (
	mu    sync.RWMutex
	kinds = map[string]Kind{}
)

// Register makes a kind available by name. It panics if the name is taken
// or the kind is incomplete, like database/sql.Register.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	if k.Name == "" || k.NewConfig == nil || k.New == nil {
		panic("adapters: Register of an incomplete kind")
	}
	if _, dup := kinds[k.Name]; dup {
		panic("adapters: Register called twice for kind " + k.Name)
	}
	kinds[k.Name] = k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (Kind, bool) {
	mu.RLock()
	defer mu.RUnlock()
	k, ok := kinds[name]
	return k, ok
}

// Kinds lists the registered kind names, sorted.
func Kinds() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
