package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/inbox"
)

// The inbox keeps cloud-to-device commands from the moment they arrive until
// a retention window after they finish, in the same Badger database as the
// outbox and with the same durability (every change is synced before it
// returns). The ledger itself (the command, its indexes) is in
// internal/inbox; these are its types and the methods that run it in the
// store's transactions.

// CommandState is where a command is in its life.
type CommandState = inbox.State

// Command states. Pending, Accepted and Executing are open; the others are
// final (msg.Status* values).
const (
	CmdPending   = inbox.Pending
	CmdAccepted  = inbox.Accepted
	CmdExecuting = inbox.Executing
	CmdDone      = inbox.Done
	CmdFailed    = inbox.Failed
	CmdRejected  = inbox.Rejected
	CmdExpired   = inbox.Expired
)

// Command is one C2D command in the inbox. The caller fills ID (the C2D
// message's $.mid: the dedupe key), Device, Props, Payload and Deadline
// (zero = none); the store sets Seq (arrival order), Received, State,
// Updated and Detail (the error text or result JSON of the last change).
type Command = inbox.Command

var (
	// ErrNoCommand is returned for a command id the inbox does not hold
	// (never put, or removed after its retention window).
	ErrNoCommand = inbox.ErrNoCommand
	// ErrCommandFinal is returned when changing the state of a finished
	// command to a different state.
	ErrCommandFinal = inbox.ErrCommandFinal
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
	if !c.State.Valid() {
		return false, fmt.Errorf("store: command %s: unknown state %q", c.ID, c.State)
	}
	in := *c
	est := inbox.Estimate(&in)
	if est >= q.db.MaxBatchSize()/2 {
		return false, fmt.Errorf("%w: command %s (~%d bytes)", ErrTooLarge, c.ID, est)
	}
	err = q.doSized(ctx, est, func(b *batch) error {
		if err := q.diskLow(); err != nil {
			return err
		}
		var err error
		dup, err = inbox.Put(b, &in, b.now, func() uint64 { q.m.CmdSeq++; return q.m.CmdSeq })
		return err
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
		c, err = inbox.Get(txn, id)
		return err
	})
	return c, err
}

// PendingCommands lists the open (not final) commands of device in arrival
// order; device "" lists every device's, in arrival order. max <= 0: all.
func (q *Queue) PendingCommands(device string, max int) ([]Command, error) {
	var out []Command
	err := q.view(func(txn *badger.Txn) error {
		var err error
		out, err = inbox.List(txn, device, max)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: pending commands: %w", err)
	}
	return out, nil
}

// SetCommandState moves command id to state with detail (an error text or
// a result), durably; it returns after the sync. Setting a finished command
// to its own state again is a no-op (nil); to any other state,
// ErrCommandFinal. A final state removes the command from PendingCommands;
// it is deleted CommandRetention after it finished.
func (q *Queue) SetCommandState(ctx context.Context, id string, state CommandState, detail string) error {
	if !state.Valid() {
		return fmt.Errorf("store: command %s: unknown state %q", id, state)
	}
	return q.doSized(ctx, 256<<10, func(b *batch) error {
		c, done, err := inbox.Open(b.txn, id, state)
		if err != nil || done {
			return err
		}
		return inbox.SetState(b, id, c, state, detail, b.now)
	})
}

// sweepCommands deletes finished commands older than CommandRetention.
func (q *Queue) sweepCommands(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-q.opt.CommandRetention)
	for {
		more := false
		err := q.do(ctx, func(b *batch) error {
			var err error
			more, err = inbox.Sweep(b, cutoff, func(n, size int64) bool { return q.room(b, n, size) })
			return err
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
		c, done, err := inbox.Open(b.txn, id, state)
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
		return inbox.SetState(b, id, c, state, detail, b.now)
	})
}
