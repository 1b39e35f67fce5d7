package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// The inbox keeps cloud-to-device commands from the moment they arrive until
// a retention window after they finish, in the same Badger database as the
// outbox and with the same durability (every change is synced before it
// returns). It is a ledger, not a queue: the gateway's command dispatch
// lists pending commands and moves them through their states.
//
//	'c' id                       the command (JSON)
//	'p' device 0x00 seq          pending index: arrival order per device
//	'f' finished-ns id           finished index, for the retention sweep

// CommandState is where a command is in its life.
type CommandState string

// Command states. Pending, Accepted and Executing are open; the others are
// final (msg.Status* values).
const (
	CmdPending   CommandState = "pending"
	CmdAccepted  CommandState = "accepted"
	CmdExecuting CommandState = "executing"
	CmdDone      CommandState = msg.StatusDone
	CmdFailed    CommandState = msg.StatusFailed
	CmdRejected  CommandState = msg.StatusRejected
	CmdExpired   CommandState = msg.StatusExpired
)

// Final reports whether s ends the command.
func (s CommandState) Final() bool {
	return s == CmdDone || s == CmdFailed || s == CmdRejected || s == CmdExpired
}

func (s CommandState) valid() bool {
	return s == CmdPending || s == CmdAccepted || s == CmdExecuting || s.Final()
}

// Command is one C2D command in the inbox.
type Command struct {
	ID       string       `json:"id"`     // the C2D message's $.mid: the dedupe key
	Device   string       `json:"device"` // target device
	Props    msg.Props    `json:"props,omitempty"`
	Payload  []byte       `json:"payload,omitempty"`
	Deadline time.Time    `json:"deadline,omitzero"` // zero = none
	Seq      uint64       `json:"seq"`               // arrival order, set by PutCommand
	Received time.Time    `json:"received"`          // set by PutCommand
	State    CommandState `json:"state"`
	Updated  time.Time    `json:"updated"`          // last state change
	Detail   string       `json:"detail,omitempty"` // error text or result JSON of the last change
}

var (
	// ErrNoCommand is returned for a command id the inbox does not hold
	// (never put, or removed after its retention window).
	ErrNoCommand = errors.New("store: no such command")
	// ErrCommandFinal is returned when changing the state of a finished
	// command to a different state.
	ErrCommandFinal = errors.New("store: command already finished")
)

// PutCommand stores c durably and returns after the sync. A command whose ID
// is already in the inbox (also a finished one, within its retention) is a
// duplicate: PutCommand returns dup=true and changes nothing, so the caller
// can acknowledge the redelivery upstream and drop it. On a nearly full disk
// it fails with ErrFull (see Options.MinFreeDisk). PutCommand sets c.Seq,
// c.Received, c.Updated, and c.State (to CmdPending when empty).
func (q *Queue) PutCommand(ctx context.Context, c *Command) (dup bool, err error) {
	if c.ID == "" || c.Device == "" {
		return false, errors.New("store: command needs an id and a device")
	}
	if c.State == "" {
		c.State = CmdPending
	}
	if !c.State.valid() {
		return false, fmt.Errorf("store: command %s: unknown state %q", c.ID, c.State)
	}
	in := *c
	est := int64(len(in.Payload)*4/3 + len(in.ID)*3 + len(in.Device) + 512)
	for _, p := range in.Props {
		est += int64(len(p.Key) + len(p.Value) + 16)
	}
	if est >= q.db.MaxBatchSize()/2 {
		return false, fmt.Errorf("%w: command %s (~%d bytes)", ErrTooLarge, c.ID, est)
	}
	err = q.doSized(ctx, est, func(b *batch) error {
		if err := q.diskLow(); err != nil {
			return err
		}
		_, err := b.txn.Get(layout.CmdKey(in.ID))
		if err == nil {
			dup = true
			return nil
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		q.m.CmdSeq++
		in.Seq, in.Received, in.Updated = q.m.CmdSeq, b.now, b.now
		v, err := json.Marshal(&in)
		if err != nil {
			return err
		}
		if err := b.set(layout.CmdKey(in.ID), v); err != nil {
			return err
		}
		if in.State.Final() {
			return b.set(layout.FinishedKey(in.Updated, in.ID), nil)
		}
		return b.set(layout.PendingKey(in.Device, in.Seq), []byte(in.ID))
	})
	if err != nil {
		return false, fmt.Errorf("store: put command %s: %w", c.ID, err)
	}
	if !dup {
		*c = in
	}
	return dup, nil
}

// Command returns the command with id, or ErrNoCommand.
func (q *Queue) Command(id string) (Command, error) {
	var c Command
	err := q.view(func(txn *badger.Txn) error {
		var err error
		c, err = getCommand(txn, id)
		return err
	})
	return c, err
}

func getCommand(txn *badger.Txn, id string) (Command, error) {
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

// PendingCommands lists the open (not final) commands of device in arrival
// order; device "" lists every device's, in arrival order. max <= 0: all.
func (q *Queue) PendingCommands(device string, max int) ([]Command, error) {
	var out []Command
	prefix := []byte{layout.Pending}
	if device != "" {
		prefix = layout.PendingPrefix(device)
	}
	err := q.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if device != "" && max > 0 && len(out) >= max {
				break
			}
			id, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			c, err := getCommand(txn, string(id))
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: pending commands: %w", err)
	}
	if device == "" {
		slices.SortFunc(out, func(a, b Command) int { return cmpUint(a.Seq, b.Seq) })
		if max > 0 && len(out) > max {
			out = out[:max]
		}
	}
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SetCommandState moves command id to state with detail (an error text or
// a result), durably; it returns after the sync. Setting a finished command
// to its own state again is a no-op (nil); to any other state,
// ErrCommandFinal. A final state removes the command from PendingCommands;
// it is deleted CommandRetention after it finished.
func (q *Queue) SetCommandState(ctx context.Context, id string, state CommandState, detail string) error {
	if !state.valid() {
		return fmt.Errorf("store: command %s: unknown state %q", id, state)
	}
	return q.doSized(ctx, 256<<10, func(b *batch) error {
		c, done, err := openCommand(b, id, state)
		if err != nil || done {
			return err
		}
		return putState(b, id, c, state, detail)
	})
}

// openCommand reads command id for a move to state: done when it is in
// that final state already (a repeat is no error), ErrCommandFinal when it
// is in another final state.
func openCommand(b *batch, id string, state CommandState) (c Command, done bool, err error) {
	if c, err = getCommand(b.txn, id); err != nil {
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

// putState writes c in its new state; a final state moves it from the
// pending index to the finished one.
func putState(b *batch, id string, c Command, state CommandState, detail string) error {
	c.State, c.Detail, c.Updated = state, detail, b.now
	v, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	if err := b.set(layout.CmdKey(id), v); err != nil {
		return err
	}
	if !state.Final() {
		return nil
	}
	if err := b.del(layout.PendingKey(c.Device, c.Seq)); err != nil {
		return err
	}
	return b.set(layout.FinishedKey(c.Updated, id), nil)
}

// sweepCommands deletes finished commands older than CommandRetention.
func (q *Queue) sweepCommands(ctx context.Context, now time.Time) error {
	cutoff := layout.FinishedKey(now.Add(-q.opt.CommandRetention), "")
	for {
		more := false
		err := q.do(ctx, func(b *batch) error {
			it := b.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{layout.Finished}})
			var keys [][]byte
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().KeyCopy(nil)
				if string(k) >= string(cutoff) {
					break
				}
				if !q.room(b, int64(2*len(keys)+2), int64(len(keys)+1)*128) {
					more = true
					break
				}
				keys = append(keys, k)
			}
			it.Close()
			for _, k := range keys {
				if err := b.del(k); err != nil {
					return err
				}
				if err := b.del(layout.CmdKey(layout.FinishedID(k))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || !more {
			return err
		}
	}
}

// FinishCommand closes command id in a final state and queues its result
// record in the outbox in one synced transaction: the command is never
// final without its result queued, nor its result queued twice. It assigns
// result.Seq (and result.ID when empty) like Append. A command already
// final in the same state is a no-op (nil, nothing queued); in another
// state, ErrCommandFinal. A full outbox under the reject policy returns
// ErrFull and changes nothing.
func (q *Queue) FinishCommand(ctx context.Context, id string, state CommandState, detail string, result *msg.Record) error {
	if !state.Final() {
		return fmt.Errorf("store: command %s: %q is not a final state", id, state)
	}
	est := int64(result.Size()) + 2*int64(len(detail)) + 1024
	return q.doSized(ctx, est, func(b *batch) error {
		c, done, err := openCommand(b, id, state)
		if err != nil || done {
			return err
		}
		if err := q.diskLow(); err != nil {
			return err
		}
		o := &op{kind: opAppend, recs: []*msg.Record{result}}
		if err := q.applyAppend(b, o); err != nil {
			return err
		}
		if o.err != nil {
			return o.err
		}
		return putState(b, id, c, state, detail)
	})
}
