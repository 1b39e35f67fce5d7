package gateway

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

// The command ledger turns every C2D message into a command with an id (its
// $.mid), a deadline ($.exp, or commands.ttl) and a durable state:
//
//	accepted -> executing -> done | failed | rejected | expired
//
// Commands run per device, in arrival order, one at a time: on an adapter
// device through its Sink, on an MQTT leaf by publishing on its devicebound
// topic and waiting for its PUBACK. A command for a device that is down or
// offline waits until the device is back or the deadline passes. The same id
// is never applied twice: the store refuses a second PutCommand of an id.
// Every command ends in exactly one D2C result (type=command-result,
// $.cid = the command id, $.mid = id + "/result"), queued in the same store
// transaction that makes the command final.
//
// After a restart, accepted commands run as usual. A command found
// "executing" may or may not have been actuated: a write (setting values)
// is idempotent and is applied again; a send or a pulse is not repeated
// and ends failed with that explanation; an MQTT leaf gets the message again
// (leaves de-duplicate on $.mid).
type ledger struct {
	g   *Gateway
	q   *store.Queue
	ttl time.Duration
	log *slog.Logger

	mu      sync.Mutex
	ctx     context.Context // workers' context; nil until run
	wg      sync.WaitGroup
	workers map[string]chan struct{} // device -> wake
	recent  []CommandStatus          // newest last, at most maxRecent
}

const maxRecent = 50

// CommandStatus is one command as /api/status and the API show it.
type CommandStatus struct {
	ID       string         `json:"id"`
	Device   string         `json:"device"`
	State    string         `json:"state"`
	Received time.Time      `json:"received"`
	Deadline time.Time      `json:"deadline"`
	Error    string         `json:"error,omitempty"`
	Values   map[string]any `json:"values,omitempty"`
}

func newLedger(g *Gateway, q *store.Queue, ttl time.Duration) *ledger {
	return &ledger{g: g, q: q, ttl: ttl, log: g.log.With("part", "commands"), workers: map[string]chan struct{}{}}
}

// run starts a worker for every device with open commands and keeps
// serving new ones until ctx is done; it returns when all workers have.
func (l *ledger) run(ctx context.Context) error {
	l.mu.Lock()
	l.ctx = ctx
	l.mu.Unlock()
	open, err := l.q.PendingCommands("", 0)
	if err != nil {
		return fmt.Errorf("gateway: commands: %w", err)
	}
	for _, c := range open {
		l.track(c, nil)
		l.wake(c.Device)
	}
	<-ctx.Done()
	l.wg.Wait()
	return nil
}

// Accept takes one C2D message in. It returns nil once the command is
// durably in the ledger (or is a duplicate of one that is or was), which is
// when the C2D message may be acknowledged to the cloud.
func (l *ledger) Accept(ctx context.Context, device string, props msg.Props, payload []byte) error {
	_, _, err := l.accept(ctx, device, props, payload)
	return err
}

func (l *ledger) accept(ctx context.Context, device string, props msg.Props, payload []byte) (store.Command, bool, error) {
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
	dup, err := l.q.PutCommand(ctx, &c)
	if err != nil {
		return c, false, fmt.Errorf("gateway: accept command %s for %s: %w", id, device, err)
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
func (l *ledger) wake(device string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil || l.ctx.Err() != nil {
		return // run picks the command up
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
func (l *ledger) work(ctx context.Context, device string, wake chan struct{}) {
	for ctx.Err() == nil {
		cs, err := l.q.PendingCommands(device, 1)
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
func (l *ledger) execute(ctx context.Context, c store.Command) error {
	if !c.Deadline.IsZero() && time.Now().After(c.Deadline) {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusExpired, Error: "deadline passed before the command could run"})
	}
	if d := l.g.device(c.Device); d != nil {
		return l.executeAdapter(ctx, c, d)
	}
	if l.g.isLeaf(c.Device) {
		return l.executeLeaf(ctx, c)
	}
	return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: fmt.Sprintf("no device %q on this gateway", c.Device)})
}

func (l *ledger) executeAdapter(ctx context.Context, c store.Command, d *device) error {
	cmd, err := msg.ParseCommand(c.ID, c.Device, c.Deadline, c.Payload)
	if err != nil {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: err.Error()})
	}
	if d.sink == nil {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: fmt.Sprintf("device %s (%s) takes no commands", c.Device, d.cfg.Kind)})
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
			if h, ok := d.src.(adapters.HealthReporter); ok {
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
		res, err := d.sink.Apply(actx, cmd)
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

func (l *ledger) executeLeaf(ctx context.Context, c store.Command) error {
	if err := l.setState(ctx, &c, store.CmdExecuting, ""); err != nil {
		return err
	}
	props := slices.Clone(c.Props)
	if !c.Deadline.IsZero() {
		props = props.Set(msg.PropExpiry, c.Deadline.UTC().Format(time.RFC3339Nano))
	}
	done := make(chan error, 1)
	h := l.g.hub()
	for h == nil { // the hub cannot listen yet: wait for it
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		h = l.g.hub()
	}
	if err := h.Deliver(c.Device, props, c.Payload, func(err error) { done <- err }); err != nil {
		return l.finish(ctx, c, msg.Result{Status: msg.StatusRejected, Error: err.Error()})
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

func (l *ledger) setState(ctx context.Context, c *store.Command, s store.CommandState, detail string) error {
	if err := l.q.SetCommandState(ctx, c.ID, s, detail); err != nil {
		return fmt.Errorf("gateway: command %s: %w", c.ID, err)
	}
	c.State = s
	l.track(*c, nil)
	return nil
}

// finish closes the command in the ledger and queues its one result
// upstream, in one store transaction (store.FinishCommand): a command is
// never final without its result queued, nor its result queued twice.
func (l *ledger) finish(ctx context.Context, c store.Command, res msg.Result) error {
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
	if err := l.q.FinishCommand(ctx, c.ID, store.CommandState(res.Status), string(body), rec); err != nil && !errors.Is(err, store.ErrCommandFinal) {
		return fmt.Errorf("gateway: command %s: finish: %w", c.ID, err)
	}
	c.State = store.CommandState(res.Status)
	l.track(c, &res)
	l.log.Info("command finished", "id", c.ID, "device", c.Device, "status", res.Status, "error", res.Error)
	return nil
}

// track records c's latest state for the status page.
func (l *ledger) track(c store.Command, res *msg.Result) {
	s := CommandStatus{ID: c.ID, Device: c.Device, State: string(c.State), Received: c.Received, Deadline: c.Deadline}
	if res != nil {
		s.Error, s.Values = res.Error, res.Values
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.IndexFunc(l.recent, func(r CommandStatus) bool { return r.ID == c.ID }); i >= 0 {
		l.recent = slices.Delete(l.recent, i, i+1)
	}
	l.recent = append(l.recent, s)
	if len(l.recent) > maxRecent {
		l.recent = l.recent[len(l.recent)-maxRecent:]
	}
}

// recentCommands returns the latest commands, newest first.
func (g *Gateway) recentCommands() []CommandStatus {
	if g.ledger == nil {
		return nil
	}
	g.ledger.mu.Lock()
	defer g.ledger.mu.Unlock()
	out := slices.Clone(g.ledger.recent)
	slices.Reverse(out)
	return out
}

// commandCounts counts the recent commands by state.
func (g *Gateway) commandCounts() map[string]int {
	n := map[string]int{}
	for _, c := range g.recentCommands() {
		n[c.State]++
	}
	return n
}
