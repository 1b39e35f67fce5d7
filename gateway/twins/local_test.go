package twins_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/twins"
)

// adapterSide is a twins.Local for device "plc-1": it records the desired
// changes it is given and answers every method with its name.
type adapterSide struct {
	mu      sync.Mutex
	desired []string // jsonOf(patch) + " v" + version
	calls   []iothub.MethodCall
}

func (a *adapterSide) Has(device string) bool { return device == "plc-1" }

func (a *adapterSide) Desired(_ context.Context, _ string, p iothub.Patch, version int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, _ := json.Marshal(p)
	a.desired = append(a.desired, string(b)+" v"+jsonOf(version))
}

func (a *adapterSide) Call(_ context.Context, _ string, c iothub.MethodCall) (iothub.MethodResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, c)
	return iothub.MethodResult{Status: 200, Payload: []byte(`"` + c.Name + `"`)}, nil
}

func (a *adapterSide) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.desired...)
}

func newLocalEnv(t *testing.T) (*env, *adapterSide) {
	a := &adapterSide{}
	e := newEnv(t, t.TempDir(), func(o *twins.Options) {
		o.Local = a
		known := o.Known
		o.Known = func(d string) bool { return known(d) || a.Has(d) }
	})
	return e, a
}

// A desired change of a Local device goes to Local once it is durable,
// with its version, and never to a leaf; a cloud patch seen before does
// not go again; a replaced desired section gives Local the difference.
func TestLocalDesired(t *testing.T) {
	e, a := newLocalEnv(t)
	ctx := context.Background()
	e.leaves.subscribe("plc-1", iothub.TwinDesiredFilter) // must not matter
	tw, err := e.m.PatchDesired(ctx, "plc-1", iothub.Patch{"setpoint": json.Number("21.5")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	v := tw.Desired.Version
	if got := a.seen(); len(got) != 1 || got[0] != `{"setpoint":21.5} v`+jsonOf(v) {
		t.Fatalf("Local got %q, want the patch with version %d", got, v)
	}
	if s := e.leaves.take(); len(s) != 0 {
		t.Fatalf("a Local device's desired patch was sent to a leaf: %v", s)
	}
	// From the cloud, with its $version; then the same version again.
	if _, err := e.m.PatchDesired(ctx, "plc-1", iothub.Patch{"setpoint": json.Number("22")}, 10); err != nil {
		t.Fatal(err)
	}
	tw, err = e.m.PatchDesired(ctx, "plc-1", iothub.Patch{"setpoint": json.Number("22")}, 10)
	if err != nil || tw.Desired.Version != 10 {
		t.Fatalf("repeated cloud patch: %v, version %d, want 10", err, tw.Desired.Version)
	}
	if got := a.seen(); len(got) != 2 || got[1] != `{"setpoint":22} v10` {
		t.Fatalf("Local got %q, want the cloud patch once", got)
	}
	// A full desired section: only what changed.
	if err := e.m.ReplaceDesired(ctx, "plc-1", iothub.Section{Props: map[string]any{"setpoint": json.Number("22"), "mode": "eco"}, Version: 12}); err != nil {
		t.Fatal(err)
	}
	if got := a.seen(); len(got) != 3 || got[2] != `{"mode":"eco"} v12` {
		t.Fatalf("Local got %q, want the difference {mode: eco} at v12", got)
	}
	// A leaf's desired patch does not reach Local.
	if _, err := e.m.PatchDesired(ctx, "az-1", iothub.Patch{"x": json.Number("1")}, 0); err != nil {
		t.Fatal(err)
	}
	if got := a.seen(); len(got) != 3 {
		t.Fatalf("a leaf's patch reached Local: %q", got)
	}
}

// Report applies a Local device's reported patch (any JSON-encodable
// values), keeps it pending for upstream, survives a restart, and is not
// throttled like a leaf's requests.
func TestLocalReport(t *testing.T) {
	e, _ := newLocalEnv(t)
	ctx := context.Background()
	var last int64
	for i := range 3 * twins.DefaultBurst {
		v, err := e.m.Report(ctx, "plc-1", iothub.Patch{"points": map[string]any{"temp": 20.5 + float64(i)}, "health": "ok"})
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		if v <= last {
			t.Fatalf("reported version %d after %d", v, last)
		}
		last = v
	}
	if n, _ := e.m.PendingReported("plc-1"); n == 0 {
		t.Error("reported patches of a Local device are not pending upstream")
	}
	if _, err := e.m.Report(ctx, "plc-1", iothub.Patch{"bad": func() {}}); iothub.StatusOf(err) != iothub.StatusBadRequest {
		t.Errorf("a value JSON cannot encode: %v, want 400", err)
	}
	tw, err := e.m.Twin("plc-1")
	if err != nil {
		t.Fatal(err)
	}
	want := 20.5 + float64(3*twins.DefaultBurst-1)
	if got := jsonOf(tw.Reported.Props["points"]); got != `{"temp":`+jsonOf(want)+`}` {
		t.Fatalf("reported points %s, want temp %v", got, want)
	}
	if _, err := e.m.Report(ctx, "nope", iothub.Patch{"x": 1}); iothub.StatusOf(err) != iothub.StatusNotFound {
		t.Errorf("unknown device: %v, want 404", err)
	}
}

// A Local device's direct method goes to Local at once, connected or not,
// with the default response timeout set; a bad method name is refused
// before.
func TestLocalCall(t *testing.T) {
	e, a := newLocalEnv(t)
	res, err := e.m.Call(context.Background(), "plc-1", iothub.MethodCall{Name: "read"})
	if err != nil || res.Status != 200 || string(res.Payload) != `"read"` {
		t.Fatalf("Call = %+v, %v", res, err)
	}
	if len(a.calls) != 1 || a.calls[0].ResponseTimeout != iothub.DefaultMethodTimeout {
		t.Fatalf("Local got %+v, want one call with the default timeout", a.calls)
	}
	if _, err := e.m.Call(context.Background(), "plc-1", iothub.MethodCall{Name: "$bad name"}); iothub.StatusOf(err) != iothub.StatusBadRequest {
		t.Errorf("bad method name: %v, want 400", err)
	}
	// A leaf's call still needs the leaf.
	if _, err := e.m.Call(context.Background(), "az-1", iothub.MethodCall{Name: "read"}); iothub.StatusOf(err) != iothub.StatusNotFound {
		t.Errorf("offline leaf: %v, want 404", err)
	}
}
