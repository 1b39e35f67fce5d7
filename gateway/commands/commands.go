// Package commands is the gateway's command ledger. It turns every C2D
// message into a command with an id (its $.mid), a deadline ($.exp, or the
// ledger's TTL) and a durable state:
//
//	accepted -> executing -> done | failed | rejected | expired
//
// Commands run per device, in arrival order, one at a time: on an adapter
// device through its adapters.Sink, on an MQTT leaf by publishing on its
// devicebound topic and waiting for its PUBACK. A command for a device that
// is down (adapters.Down) or offline waits until the device is back or the
// deadline passes. The same id is never applied twice: the inbox refuses a
// second PutCommand of an id. Every command ends in exactly one D2C result
// (type=command-result, $.cid = the command id, $.mid = id + "/result"),
// queued in the same store transaction that makes the command final.
//
// After a restart, accepted commands run as usual. A command found
// "executing" may or may not have been actuated: a write (setting values)
// is idempotent and is applied again; a send or a pulse is not repeated
// and ends failed with that explanation; an MQTT leaf gets the message again
// (leaves de-duplicate on $.mid).
//
// The ledger sees the rest of the gateway through three small interfaces:
// Inbox (the store's command inbox), Targets (which devices exist) and
// Deliverer (the local hub). Commands come in through Accept, a msg.Intake
// shared by the hub, the cloud link and the HTTP API (Register).
package commands

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// Inbox is the store's command inbox, where the ledger keeps every command
// and its state durably; *store.Queue implements it.
type Inbox interface {
	PutCommand(ctx context.Context, c *store.Command) (dup bool, err error)
	PendingCommands(device string, max int) ([]store.Command, error)
	SetCommandState(ctx context.Context, id string, state store.CommandState, detail string) error
	FinishCommand(ctx context.Context, id string, state store.CommandState, detail string, result *msg.Record) error
	Command(id string) (store.Command, error)
}

// Targets says which devices a command can be for. Both methods are called
// from the ledger's goroutines and HTTP handlers at any time.
type Targets interface {
	// Adapter returns the running adapter device with that id and its
	// kind, or ok=false. The ledger applies commands through src's
	// adapters.Sink and waits while its adapters.HealthReporter says Down.
	Adapter(device string) (src adapters.Source, kind string, ok bool)
	// IsLeaf reports whether device is one of the hub's configured MQTT
	// clients; its commands go through the Deliverer.
	IsLeaf(device string) bool
}

// A Deliverer hands a command to an MQTT leaf: the local hub.
type Deliverer interface {
	// Deliver publishes payload with props on device's devicebound topic
	// and calls done once: nil on the leaf's PUBACK, an error wrapping
	// hub.ErrExpired when the $.exp deadline passed first, hub.ErrClosed
	// when the hub shuts down. An error return (unknown leaf) is final.
	// Deliver returns ErrNoHub while the hub cannot listen; the ledger
	// tries again each second.
	Deliver(device string, props msg.Props, payload []byte, done func(error)) error
}

// ErrNoHub is what a Deliverer returns while the local hub is not running.
var ErrNoHub = errors.New("commands: the local hub is not running")

// Options configure a Ledger.
type Options struct {
	Inbox   Inbox
	Targets Targets
	Leaves  Deliverer
	// TTL is the deadline of a command without $.exp (commands.ttl).
	TTL time.Duration
	// Finished, if set, is called once a command is final (its result
	// queued), from the device's worker: it must not block for long.
	Finished func(c store.Command, res msg.Result)
	Logger   *slog.Logger
}

// Ledger is the command ledger. Create it with New, take commands in with
// Accept (before or during Run) and run them with Run.
type Ledger struct {
	inbox   Inbox
	targets Targets
	leaves  Deliverer
	ttl     time.Duration
	done    func(store.Command, msg.Result)
	log     *slog.Logger

	mu      sync.Mutex
	ctx     context.Context // workers' context; nil until Run
	wg      sync.WaitGroup
	workers map[string]chan struct{} // device -> wake
	recent  []Status                 // newest last, at most maxRecent
}

const maxRecent = 50

// Status is one command as /api/status and the API show it.
type Status struct {
	ID       string             `json:"id"`
	Device   string             `json:"device"`
	State    store.CommandState `json:"state"`
	Received time.Time          `json:"received"`
	Deadline time.Time          `json:"deadline"`
	Error    string             `json:"error,omitempty"`
	Values   map[string]any     `json:"values,omitempty"`
}

// New returns a ledger over opt.Inbox. Nothing runs until Run.
func New(opt Options) *Ledger {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ledger{inbox: opt.Inbox, targets: opt.Targets, leaves: opt.Leaves, ttl: opt.TTL, done: opt.Finished, log: log, workers: map[string]chan struct{}{}}
}

// Run starts a worker for every device with open commands and keeps
// serving new ones until ctx is done; it returns when all workers have.
func (l *Ledger) Run(ctx context.Context) error {
	l.mu.Lock()
	l.ctx = ctx
	l.mu.Unlock()
	open, err := l.inbox.PendingCommands("", 0)
	if err != nil {
		return fmt.Errorf("commands: %w", err)
	}
	for _, c := range open {
		l.track(c, nil)
		l.wake(c.Device)
	}
	<-ctx.Done()
	l.wg.Wait()
	return nil
}

// Accept takes one C2D message in; it is the ledger's msg.Intake. It
// returns nil once the command is durably in the ledger (or is a duplicate
// of one that is or was), which is when the C2D message may be
// acknowledged. A message without $.mid gets a generated id.
func (l *Ledger) Accept(ctx context.Context, device string, props msg.Props, payload []byte) error {
	_, _, err := l.accept(ctx, device, props, payload)
	return err
}

var _ msg.Intake = (*Ledger)(nil).Accept

func (l *Ledger) accept(ctx context.Context, device string, props msg.Props, payload []byte) (store.Command, bool, error) {
	id, _ := props.Get(msg.PropMessageID)
	if id == "" {
		id = newID()
		props = append(msg.Props{{Key: msg.PropMessageID, Value: id}}, props...)
	}
	deadline := time.Now().Add(l.ttl)
	if s, ok := props.Get(msg.PropExpiry); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			deadline = t
		}
	}
	c := store.Command{ID: id, Device: device, Props: props, Payload: payload, Deadline: deadline, State: store.CmdAccepted}
	dup, err := l.inbox.PutCommand(ctx, &c)
	if err != nil {
		return c, false, fmt.Errorf("commands: accept command %s for %s: %w", id, device, err)
	}
	if dup {
		l.log.Info("duplicate command ignored", "id", id, "device", device)
		return c, true, nil
	}
	l.track(c, nil)
	l.wake(device)
	return c, false, nil
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// wake makes sure device's worker looks at its open commands.
func (l *Ledger) wake(device string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil || l.ctx.Err() != nil {
		return // Run picks the command up
	}
	if ch, ok := l.workers[device]; ok {
		select {
		case ch <- struct{}{}:
		default:
		}
		return
	}
	ch := make(chan struct{}, 1)
	l.workers[device] = ch
	ctx := l.ctx
	l.wg.Go(func() { l.work(ctx, device, ch) })
}

// work runs device's open commands in order until none is left.
func (l *Ledger) work(ctx context.Context, device string, wake chan struct{}) {
	for ctx.Err() == nil {
		cs, err := l.inbox.PendingCommands(device, 1)
		if err != nil {
			l.log.Error("list commands; will retry", "device", device, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if len(cs) == 0 {
			l.mu.Lock()
			select {
			case <-wake:
				l.mu.Unlock()
				continue
			default:
			}
			delete(l.workers, device)
			l.mu.Unlock()
			return
		}
		if err := l.execute(ctx, cs[0]); err != nil && ctx.Err() == nil {
			l.log.Error("command bookkeeping failed; will retry", "id", cs[0].ID, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// execute runs one command to its end (or until ctx is done, leaving it
// open for the next start).
func (l *Ledger) execute(ctx context.Context, c store.Command) error {
	if !c.Deadline.IsZero() && time.Now().After(c.Deadline) {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusExpired, Error: "deadline passed before the command could run"})
	}
	if src, kind, ok := l.targets.Adapter(c.Device); ok {
		return l.executeAdapter(ctx, c, src, kind)
	}
	if l.targets.IsLeaf(c.Device) {
		return l.executeLeaf(ctx, c)
	}
	return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: fmt.Sprintf("no device %q on this gateway", c.Device)})
}

func (l *Ledger) executeAdapter(ctx context.Context, c store.Command, src adapters.Source, kind string) error {
	cmd, err := msg.ParseCommand(c.ID, c.Device, c.Deadline, c.Payload)
	if err != nil {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: err.Error()})
	}
	sink, ok := src.(adapters.Sink)
	if !ok {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: fmt.Sprintf("device %s (%s) takes no commands", c.Device, kind)})
	}
	if c.State == store.CmdExecuting && cmd.Write == nil {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusFailed,
			Error: "interrupted by a gateway restart while executing; a send or pulse is not repeated, it may or may not have happened"})
	}
	// Apply, waiting while the device is down and retrying failures that
	// may pass (a timeout, a lost connection) with back-off, until the
	// deadline. A rejection is final at once.
	var lastErr error
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		for {
			if time.Now().After(c.Deadline) {
				if lastErr != nil {
					return l.finish(ctx, c, msg.Result{Status: msg.StatusFailed, Error: fmt.Sprintf("deadline passed after %d attempts: %v", attempt, lastErr)})
				}
				return l.finish(ctx, c, msg.Result{Status: msg.StatusExpired, Error: "device was down until the deadline"})
			}
			state := adapters.Up
			if h, ok := src.(adapters.HealthReporter); ok {
				state, _ = h.Health()
			}
			if state != adapters.Down {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
		}
		if c.State != store.CmdExecuting {
			if err := l.setState(ctx, &c, store.CmdExecuting, ""); err != nil {
				return err
			}
		}
		actx, cancel := context.WithDeadline(ctx, c.Deadline)
		res, err := sink.Apply(actx, cmd)
		cancel()
		switch {
		case err == nil:
			if res.Status == "" {
				res.Status = msg.StatusDone
			}
			return l.finish(ctx, c, res)
		case errors.Is(err, adapters.ErrRejected):
			return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: err.Error()})
		case ctx.Err() != nil:
			return nil // shutting down: the command stays executing for the next start
		}
		lastErr = err
		l.log.Warn("command failed; will retry until its deadline", "id", c.ID, "device", c.Device, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(backoff, max(time.Until(c.Deadline), 0)+10*time.Millisecond)):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (l *Ledger) executeLeaf(ctx context.Context, c store.Command) error {
	if err := l.setState(ctx, &c, store.CmdExecuting, ""); err != nil {
		return err
	}
	props := slices.Clone(c.Props)
	if !c.Deadline.IsZero() {
		props = props.Set(msg.PropExpiry, c.Deadline.UTC().Format(time.RFC3339Nano))
	}
	done := make(chan error, 1)
	for {
		err := l.leaves.Deliver(c.Device, props, c.Payload, func(err error) { done <- err })
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNoHub) {
			return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: err.Error()})
		}
		select { // the hub cannot listen yet: wait for it
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		switch {
		case err == nil:
			return l.finish(ctx, c, msg.Result{Status: msg.StatusDone})
		case errors.Is(err, hub.ErrExpired):
			return l.finish(ctx, c, msg.Result{Status: msg.StatusExpired, Error: "the leaf did not acknowledge it before the deadline"})
		case errors.Is(err, hub.ErrClosed):
			return nil // shutting down
		default:
			return l.finish(ctx, c, msg.Result{Status: msg.StatusFailed, Error: err.Error()})
		}
	}
}

func (l *Ledger) setState(ctx context.Context, c *store.Command, s store.CommandState, detail string) error {
	if err := l.inbox.SetCommandState(ctx, c.ID, s, detail); err != nil {
		return fmt.Errorf("commands: command %s: %w", c.ID, err)
	}
	c.State = s
	l.track(*c, nil)
	return nil
}

// finish closes the command in the ledger and queues its one result
// upstream, in one store transaction (store.FinishCommand): a command is
// never final without its result queued, nor its result queued twice.
func (l *Ledger) finish(ctx context.Context, c store.Command, res msg.Result) error {
	body, err := json.Marshal(res)
	if err != nil {
		return err
	}
	rec := &msg.Record{
		ID:       c.ID + "/result",
		Device:   c.Device,
		Priority: msg.High,
		Props: msg.Props{
			{Key: msg.PropCorrelationID, Value: c.ID},
			{Key: msg.PropContentType, Value: msg.ContentTypeJSON},
			{Key: msg.PropType, Value: "command-result"},
		},
		Payload: body,
	}
	if err := l.inbox.FinishCommand(ctx, c.ID, store.CommandState(res.Status), string(body), rec); err != nil && !errors.Is(err, store.ErrCommandFinal) {
		return fmt.Errorf("commands: command %s: finish: %w", c.ID, err)
	}
	c.State = store.CommandState(res.Status)
	l.track(c, &res)
	l.log.Info("command finished", "id", c.ID, "device", c.Device, "status", res.Status, "error", res.Error)
	if l.done != nil {
		l.done(c, res)
	}
	return nil
}

// track records c's latest state for Recent.
func (l *Ledger) track(c store.Command, res *msg.Result) {
	s := Status{ID: c.ID, Device: c.Device, State: c.State, Received: c.Received, Deadline: c.Deadline}
	if res != nil {
		s.Error, s.Values = res.Error, res.Values
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.IndexFunc(l.recent, func(r Status) bool { return r.ID == c.ID }); i >= 0 {
		l.recent = slices.Delete(l.recent, i, i+1)
	}
	l.recent = append(l.recent, s)
	if len(l.recent) > maxRecent {
		l.recent = l.recent[len(l.recent)-maxRecent:]
	}
}

// Recent returns up to n of the latest commands (at most the last 50 seen
// since the start), newest first; n <= 0 returns all of them.
func (l *Ledger) Recent(n int) []Status {
	l.mu.Lock()
	out := slices.Clone(l.recent)
	l.mu.Unlock()
	slices.Reverse(out)
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// Counts counts the commands Recent returns by state.
func (l *Ledger) Counts() map[store.CommandState]int {
	n := map[store.CommandState]int{}
	for _, c := range l.Recent(0) {
		n[c.State]++
	}
	return n
}
