package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedWorkers(); leaked != "" {
			fmt.Fprintln(os.Stderr, "ledger goroutines left running after the tests:\n"+leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedWorkers returns the stacks of ledger goroutines still running a
// moment after every test stopped its ledger.
func leakedWorkers() string {
	var leaked []string
	for range 50 {
		buf := make([]byte, 1<<20)
		leaked = leaked[:0]
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "commands.(*Ledger)") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Join(leaked, "\n\n")
}

// fakeAdapter is an adapter device: a Sink whose health the test sets.
type fakeAdapter struct {
	health  atomic.Int32 // adapters.Health
	mu      sync.Mutex
	applied []msg.Command
	err     error // returned by Apply
}

func (a *fakeAdapter) Run(ctx context.Context, _ adapters.Emitter) error { <-ctx.Done(); return nil }
func (a *fakeAdapter) Health() (adapters.Health, string) {
	return adapters.Health(a.health.Load()), ""
}
func (a *fakeAdapter) Apply(_ context.Context, cmd msg.Command) (msg.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = append(a.applied, cmd)
	return msg.Result{Values: cmd.Write}, a.err
}
func (a *fakeAdapter) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.applied)
}

// sourceOnly is an adapter device that takes no commands.
type sourceOnly struct{}

func (sourceOnly) Run(ctx context.Context, _ adapters.Emitter) error { <-ctx.Done(); return nil }

// fakeGateway implements Targets and Deliverer.
type fakeGateway struct {
	adapters map[string]adapters.Source
	leaves   map[string]bool
	hubUp    atomic.Bool
	mu       sync.Mutex
	sent     []string // devices delivered to
	outcome  error    // passed to done
}

func (f *fakeGateway) Adapter(id string) (adapters.Source, string, bool) {
	src, ok := f.adapters[id]
	return src, "fake", ok
}
func (f *fakeGateway) IsLeaf(id string) bool { return f.leaves[id] }
func (f *fakeGateway) Deliver(device string, props msg.Props, payload []byte, done func(error)) error {
	if !f.hubUp.Load() {
		return ErrNoHub
	}
	if !f.leaves[device] {
		return hub.ErrUnknownLeaf
	}
	f.mu.Lock()
	f.sent = append(f.sent, device)
	f.mu.Unlock()
	go done(f.outcome)
	return nil
}

// rig is a ledger over a real store in t.TempDir(), running until the
// test ends.
type rig struct {
	l *Ledger
	q *store.Queue
	f *fakeGateway
}

func newRig(t *testing.T, ttl time.Duration) *rig {
	t.Helper()
	q, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeGateway{adapters: map[string]adapters.Source{}, leaves: map[string]bool{}}
	f.hubUp.Store(true)
	l := New(Options{Inbox: q, Targets: f, Leaves: f, TTL: ttl})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		if err := q.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	return &rig{l: l, q: q, f: f}
}

func (r *rig) accept(t *testing.T, device, id, body string) {
	t.Helper()
	if err := r.l.Accept(context.Background(), device, msg.Props{{Key: msg.PropMessageID, Value: id}}, []byte(body)); err != nil {
		t.Fatalf("Accept %s: %v", id, err)
	}
}

// waitFinal waits for command id to be final and returns it with its result.
func (r *rig) waitFinal(t *testing.T, id string, within time.Duration) (store.Command, msg.Result) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := r.q.Command(id)
		if err == nil && c.State.Final() {
			var res msg.Result
			if err := json.Unmarshal([]byte(c.Detail), &res); err != nil {
				t.Fatalf("result of %s: %v (%q)", id, err, c.Detail)
			}
			return c, res
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s not final within %v: %+v, %v", id, within, c, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A command for an adapter device that reports Down waits, in state
// accepted, until the device is back; then it is applied once and done.
func TestAdapterCommandWaitsWhileDown(t *testing.T) {
	r := newRig(t, time.Minute)
	a := &fakeAdapter{}
	a.health.Store(int32(adapters.Down))
	r.f.adapters["plc-1"] = a
	r.accept(t, "plc-1", "c1", `{"write":{"setpoint":19.5}}`)
	time.Sleep(700 * time.Millisecond)
	if n := a.count(); n != 0 {
		t.Fatalf("applied %d times while the device was down", n)
	}
	if c, err := r.q.Command("c1"); err != nil || c.State != store.CmdAccepted {
		t.Fatalf("while down: %+v, %v; want accepted", c, err)
	}
	a.health.Store(int32(adapters.Up))
	c, res := r.waitFinal(t, "c1", 5*time.Second)
	if c.State != store.CmdDone || res.Values["setpoint"] != 19.5 || a.count() != 1 {
		t.Fatalf("after recovery: %+v %+v, applied %d", c, res, a.count())
	}
	rs := r.l.Recent(1)
	if len(rs) != 1 || rs[0].ID != "c1" || rs[0].State != store.CmdDone || r.l.Counts()[store.CmdDone] != 1 {
		t.Errorf("Recent = %+v, Counts = %v", rs, r.l.Counts())
	}
}

// A command still waiting for its device when the deadline passes expires.
func TestAdapterCommandExpiresWhileDown(t *testing.T) {
	r := newRig(t, 300*time.Millisecond)
	a := &fakeAdapter{}
	a.health.Store(int32(adapters.Down))
	r.f.adapters["plc-1"] = a
	r.accept(t, "plc-1", "c1", `{"write":{"setpoint":1}}`)
	c, res := r.waitFinal(t, "c1", 5*time.Second)
	if c.State != store.CmdExpired || !strings.Contains(res.Error, "down until the deadline") || a.count() != 0 {
		t.Fatalf("%+v %+v, applied %d", c, res, a.count())
	}
}

// The same $.mid twice is one command, applied once.
func TestDuplicateAppliedOnce(t *testing.T) {
	r := newRig(t, time.Minute)
	a := &fakeAdapter{}
	r.f.adapters["plc-1"] = a
	r.accept(t, "plc-1", "c1", `{"write":{"setpoint":1}}`)
	r.waitFinal(t, "c1", 5*time.Second)
	_, dup, err := r.l.accept(context.Background(), "plc-1", msg.Props{{Key: msg.PropMessageID, Value: "c1"}}, []byte(`{"write":{"setpoint":2}}`))
	if err != nil || !dup {
		t.Fatalf("second accept: dup %v, %v", dup, err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := a.count(); n != 1 {
		t.Fatalf("applied %d times", n)
	}
}

// Final outcomes without the device doing anything: no such device, a
// device that takes no commands, a body that is no command, a rejection.
func TestRejections(t *testing.T) {
	r := newRig(t, time.Minute)
	r.f.adapters["sensor"] = sourceOnly{}
	rej := &fakeAdapter{err: fmt.Errorf("no point: %w", adapters.ErrRejected)}
	r.f.adapters["plc-1"] = rej
	for _, tc := range []struct{ device, body, want string }{
		{"nobody", `{"write":{"x":1}}`, `no device "nobody"`},
		{"sensor", `{"write":{"x":1}}`, "takes no commands"},
		{"plc-1", `not json`, ""},
		{"plc-1", `{"write":{"nope":1}}`, "no point"},
	} {
		id := tc.device + "-" + tc.body
		r.accept(t, tc.device, id, tc.body)
		c, res := r.waitFinal(t, id, 5*time.Second)
		if c.State != store.CmdRejected || !strings.Contains(res.Error, tc.want) {
			t.Errorf("%s %s: %s %q, want rejected with %q", tc.device, tc.body, c.State, res.Error, tc.want)
		}
	}
}

// A command for an MQTT leaf waits while the hub cannot listen, then is
// delivered; the leaf's PUBACK makes it done, a passed deadline expired.
func TestLeafDelivery(t *testing.T) {
	r := newRig(t, time.Minute)
	r.f.leaves["leaf-1"] = true
	r.f.hubUp.Store(false)
	r.accept(t, "leaf-1", "c1", `anything`)
	time.Sleep(300 * time.Millisecond)
	if c, err := r.q.Command("c1"); err != nil || c.State != store.CmdExecuting {
		t.Fatalf("hub down: %+v, %v; want executing", c, err)
	}
	r.f.hubUp.Store(true)
	if c, res := r.waitFinal(t, "c1", 5*time.Second); c.State != store.CmdDone || res.Error != "" {
		t.Fatalf("%+v %+v", c, res)
	}

	r.f.mu.Lock()
	r.f.outcome = fmt.Errorf("leaf-1: %w", hub.ErrExpired)
	r.f.mu.Unlock()
	r.accept(t, "leaf-1", "c2", `anything`)
	if c, _ := r.waitFinal(t, "c2", 5*time.Second); c.State != store.CmdExpired {
		t.Fatalf("%+v", c)
	}
	r.f.mu.Lock()
	r.f.outcome = errors.New("session taken over")
	r.f.mu.Unlock()
	r.accept(t, "leaf-1", "c3", `anything`)
	if c, res := r.waitFinal(t, "c3", 5*time.Second); c.State != store.CmdFailed || res.Error != "session taken over" {
		t.Fatalf("%+v %+v", c, res)
	}
}
