// Package adapters holds the field-device contract (Source, Sink, Emitter)
// and the registry of adapter kinds. Each kind lives in its own folder
// (modbus, serial, gpio, sim) and registers itself from an init function.
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

	"github.com/outpost-iot/outpost/gateway/msg"
)

// A Source produces readings. Run blocks until ctx is done (then returns
// nil); a non-nil error means the adapter cannot go on.
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
