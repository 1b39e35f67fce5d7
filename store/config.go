package store

import (
	"errors"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Config is what a user configures of the store: the store section of the
// gateway's config file. The zero value is valid for Open (unlimited,
// drop-oldest, records kept until delivered); DefaultConfig holds the
// file's defaults, and Validate the file's rules.
type Config struct {
	// MaxBytes caps the outbox, counting msg.Record.Size() of its records;
	// 0 = unlimited. The file requires a positive value (default 512MiB).
	MaxBytes msg.Size `yaml:"max_bytes"`
	// WhenFull says what Append does when MaxBytes is reached. Default
	// drop-oldest.
	WhenFull FullPolicy `yaml:"when_full"`
	// TTL expires records older than this: counted, never leased. 0 keeps
	// records until delivered or evicted. Default 168h in the file.
	TTL time.Duration `yaml:"ttl"`
}

// Defaults of the store section.
const (
	DefaultMaxBytes = 512 * msg.MiB
	DefaultTTL      = 168 * time.Hour
)

// DefaultConfig returns the store section's defaults.
func DefaultConfig() Config {
	return Config{MaxBytes: DefaultMaxBytes, WhenFull: DropOldest, TTL: DefaultTTL}
}

// Validate checks c as the config file allows it and reports every problem
// (errors.Join), each an *adapters.FieldError whose Path is the key below
// store (such as "ttl") and whose message names the key as it is written in
// the file (store.ttl).
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes <= 0 {
		errs = append(errs, adapters.Errorf("max_bytes", "store.max_bytes must be positive, got %v", c.MaxBytes))
	}
	switch c.WhenFull {
	case DropOldest, Reject:
	default:
		errs = append(errs, adapters.Errorf("when_full", "store.when_full: unknown policy %q (want drop-oldest or reject)", string(c.WhenFull)))
	}
	if c.TTL < 0 {
		errs = append(errs, adapters.Errorf("ttl", "store.ttl must not be negative (0 keeps records until delivered), got %v", c.TTL))
	}
	return errors.Join(errs...)
}
