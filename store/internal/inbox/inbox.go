// Package inbox is the store's cloud-to-device command ledger: the Command
// and its states, and the reads and writes that keep a command, its
// pending index and its finished index consistent inside one Badger
// transaction. The store (package store) owns the transactions and their
// syncs and re-exports Command, its states and errors; this package knows
// nothing of the outbox.
//
// The inbox keeps commands from the moment they arrive until a retention
// window after they finish, in the same Badger database as the outbox and
// with the same durability. It is a ledger, not a queue: dispatch lists
// pending commands and moves them through their states.
//
//	'c' id                       the command (JSON)
//	'p' device 0x00 seq          pending index: arrival order per device
//	'f' finished-ns id           finished index, for the retention sweep
package inbox

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// State is where a command is in its life.
type State string

// Command states. Pending, Accepted and Executing are open; the others are
// final (msg.Status* values).
const (
	Pending   State = "pending"
	Accepted  State = "accepted"
	Executing State = "executing"
	Done      State = msg.StatusDone
	Failed    State = msg.StatusFailed
	Rejected  State = msg.StatusRejected
	Expired   State = msg.StatusExpired
)

// Final reports whether s ends the command.
func (s State) Final() bool {
	return s == Done || s == Failed || s == Rejected || s == Expired
}

// Valid reports whether s is one of the states.
func (s State) Valid() bool {
	return s == Pending || s == Accepted || s == Executing || s.Final()
}

// Command is one C2D command in the inbox.
type Command struct {
	ID       string    `json:"id"`     // the C2D message's $.mid: the dedupe key
	Device   string    `json:"device"` // target device
	Props    msg.Props `json:"props,omitempty"`
	Payload  []byte    `json:"payload,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"` // zero = none
	Seq      uint64    `json:"seq"`               // arrival order, set by PutCommand
	Received time.Time `json:"received"`          // set by PutCommand
	State    State     `json:"state"`
	Updated  time.Time `json:"updated"`          // last state change
	Detail   string    `json:"detail,omitempty"` // error text or result JSON of the last change
}

var (
	// ErrNoCommand is returned for a command id the inbox does not hold
	// (never put, or removed after its retention window).
	ErrNoCommand = errors.New("store: no such command")
	// ErrCommandFinal is returned when changing the state of a finished
	// command to a different state.
	ErrCommandFinal = errors.New("store: command already finished")
)

// Tx is the write transaction a change goes into: the store's batch, which
// counts what it writes. Set and Delete errors fail the whole transaction.
type Tx interface {
	Txn() *badger.Txn
	Set(k, v []byte) error
	Delete(k []byte) error
}

// Estimate is about what putting c takes of a transaction, in bytes.
func Estimate(c *Command) int64 {
	est := int64(len(c.Payload)*4/3 + len(c.ID)*3 + len(c.Device) + 512)
	for _, p := range c.Props {
		est += int64(len(p.Key) + len(p.Value) + 16)
	}
	return est
}

// Put writes c, arrived at now, unless its ID is already in the inbox
// (dup). It sets c.Seq to seq(), called only when c is new, and
// c.Received and c.Updated to now.
func Put(tx Tx, c *Command, now time.Time, seq func() uint64) (dup bool, err error) {
	_, err = tx.Txn().Get(layout.CmdKey(c.ID))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, badger.ErrKeyNotFound) {
		return false, err
	}
	c.Seq, c.Received, c.Updated = seq(), now, now
	v, err := json.Marshal(c)
	if err != nil {
		return false, err
	}
	if err := tx.Set(layout.CmdKey(c.ID), v); err != nil {
		return false, err
	}
	if c.State.Final() {
		return false, tx.Set(layout.FinishedKey(c.Updated, c.ID), nil)
	}
	return false, tx.Set(layout.PendingKey(c.Device, c.Seq), []byte(c.ID))
}

// Get returns the command with id, or an error wrapping ErrNoCommand.
func Get(txn *badger.Txn, id string) (Command, error) {
	var c Command
	item, err := txn.Get(layout.CmdKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return c, fmt.Errorf("store: command %s: %w", id, ErrNoCommand)
	}
	if err != nil {
		return c, fmt.Errorf("store: command %s: %w", id, err)
	}
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &c) })
	if err != nil {
		return c, fmt.Errorf("store: command %s: %w", id, err)
	}
	return c, nil
}

// List returns the open commands of device in arrival order; device ""
// lists every device's, in arrival order. max <= 0: all.
func List(txn *badger.Txn, device string, max int) ([]Command, error) {
	var out []Command
	prefix := []byte{layout.Pending}
	if device != "" {
		prefix = layout.PendingPrefix(device)
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if device != "" && max > 0 && len(out) >= max {
			break
		}
		id, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		c, err := Get(txn, string(id))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if device == "" {
		slices.SortFunc(out, func(a, b Command) int { return cmp.Compare(a.Seq, b.Seq) })
		if max > 0 && len(out) > max {
			out = out[:max]
		}
	}
	return out, nil
}

// Open reads command id for a move to state: done when it is in that
// final state already (a repeat is no error), ErrCommandFinal when it is
// in another final state.
func Open(txn *badger.Txn, id string, state State) (c Command, done bool, err error) {
	if c, err = Get(txn, id); err != nil {
		return c, false, err
	}
	if c.State.Final() {
		if c.State == state {
			return c, true, nil
		}
		return c, false, fmt.Errorf("store: command %s is %s: %w", id, c.State, ErrCommandFinal)
	}
	return c, false, nil
}

// SetState writes command id, read as c, in its new state, changed at now;
// a final state moves it from the pending index to the finished one.
func SetState(tx Tx, id string, c Command, state State, detail string, now time.Time) error {
	c.State, c.Detail, c.Updated = state, detail, now
	v, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	if err := tx.Set(layout.CmdKey(id), v); err != nil {
		return err
	}
	if !state.Final() {
		return nil
	}
	if err := tx.Delete(layout.PendingKey(c.Device, c.Seq)); err != nil {
		return err
	}
	return tx.Set(layout.FinishedKey(c.Updated, id), nil)
}

// Sweep deletes commands finished before cutoff, as many as room allows
// (room reports whether n more entries of size bytes fit tx); more says
// that some are left for another transaction.
func Sweep(tx Tx, cutoff time.Time, room func(n, size int64) bool) (more bool, err error) {
	end := layout.FinishedKey(cutoff, "")
	it := tx.Txn().NewIterator(badger.IteratorOptions{Prefix: []byte{layout.Finished}})
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		if string(k) >= string(end) {
			break
		}
		if !room(int64(2*len(keys)+2), int64(len(keys)+1)*128) {
			more = true
			break
		}
		keys = append(keys, k)
	}
	it.Close()
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return more, err
		}
		if err := tx.Delete(layout.CmdKey(layout.FinishedID(k))); err != nil {
			return more, err
		}
	}
	return more, nil
}
