package twins_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/twins"
	"github.com/outpost-iot/outpost/store"
)

// leaves stands in for the hub's side of the seam: who is subscribed to
// what, and what was sent to whom.
type leaves struct {
	mu   sync.Mutex
	subs map[string]bool // device+" "+filter
	sent []sent
	// answer, when set, is called for each send (a leaf answering).
	answer func(device, topic string, payload []byte)
}

type sent struct{ device, topic, payload string }

func (l *leaves) subscribe(device string, filters ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range filters {
		l.subs[device+" "+f] = true
	}
}

func (l *leaves) drop(device string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.subs {
		if strings.HasPrefix(k, device+" ") {
			delete(l.subs, k)
		}
	}
}

func (l *leaves) subscribed(device, filter string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.subs[device+" "+filter]
}

func (l *leaves) send(device, topic string, payload []byte) error {
	l.mu.Lock()
	if !l.subs[device+" "+iothub.TwinDesiredFilter] && !l.subs[device+" "+iothub.MethodRequestFilter] {
		l.mu.Unlock()
		return fmt.Errorf("%s not connected", device)
	}
	l.sent = append(l.sent, sent{device, topic, string(payload)})
	answer := l.answer
	l.mu.Unlock()
	if answer != nil {
		go answer(device, topic, payload)
	}
	return nil
}

func (l *leaves) take() []sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sent
	l.sent = nil
	return s
}

type cloud struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *cloud) ReportedPending(device string) {
	c.mu.Lock()
	c.n[device]++
	c.mu.Unlock()
}

type env struct {
	dir    string
	q      *store.Queue
	m      *twins.Manager
	leaves *leaves
	cloud  *cloud
}

func newEnv(t *testing.T, dir string, tweak func(*twins.Options)) *env {
	t.Helper()
	q, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	e := &env{dir: dir, q: q, leaves: &leaves{subs: map[string]bool{}}, cloud: &cloud{n: map[string]int{}}}
	opt := twins.Options{
		Store:      q,
		Known:      func(d string) bool { return d == "az-1" || d == "az-2" },
		Send:       e.leaves.send,
		Subscribed: e.leaves.subscribed,
		Cloud:      e.cloud,
	}
	if tweak != nil {
		tweak(&opt)
	}
	e.m, err = twins.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// reopen closes the store and opens a new Manager on it: a gateway restart.
func (e *env) reopen(t *testing.T) *env {
	t.Helper()
	if err := e.q.Close(); err != nil {
		t.Fatal(err)
	}
	return newEnv(t, e.dir, nil)
}

func twinOf(t *testing.T, body []byte) iothub.Twin {
	t.Helper()
	tw, err := iothub.ParseTwin(body)
	if err != nil {
		t.Fatalf("twin %s: %v", body, err)
	}
	return tw
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func status(err error) int { return iothub.StatusOf(err) }

// Reported patches are answered with the next version, merged into the
// reported section, kept pending for upstream (merged, in order) and all of
// it survives a restart; GET answers from the store afterwards.
func TestReportedPatchPersists(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, t.TempDir(), nil)
	for i, p := range []string{`{"fw":"1.0","temp":20}`, `{"temp":21,"net":{"rssi":-70,"ssid":"x"}}`, `{"fw":null,"net":{"ssid":null}}`} {
		v, err := e.m.PatchReported(ctx, "az-1", []byte(p))
		if err != nil || v != int64(i+2) {
			t.Fatalf("patch %d: version %d, %v; want %d", i, v, err, i+2)
		}
	}
	if e.cloud.n["az-1"] != 3 {
		t.Errorf("cloud told %d times of pending patches, want 3", e.cloud.n["az-1"])
	}
	e = e.reopen(t)
	body, err := e.m.Get(ctx, "az-1")
	if err != nil {
		t.Fatal(err)
	}
	tw := twinOf(t, body)
	if tw.Reported.Version != 4 || jsonOf(tw.Reported.Props) != `{"net":{"rssi":-70},"temp":21}` {
		t.Errorf("reported after restart: %s", tw.Reported)
	}
	if tw.Desired.Version != 1 || len(tw.Desired.Props) != 0 {
		t.Errorf("desired of a twin never patched: %s", tw.Desired)
	}
	ps, err := e.m.TakeReported(ctx, "az-1")
	if err != nil || len(ps) != 1 || jsonOf(ps[0]) != `{"fw":null,"net":{"rssi":-70,"ssid":null},"temp":21}` {
		t.Fatalf("pending upstream after restart: %s, %v", jsonOf(ps), err)
	}
}

// Patches made while a batch is taken stay pending for the next batch; a
// batch not acknowledged is taken again, also after a restart.
func TestTakeReported(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, t.TempDir(), nil)
	if ps, err := e.m.TakeReported(ctx, "az-1"); ps != nil || err != nil {
		t.Fatalf("TakeReported with nothing pending = %v, %v", ps, err)
	}
	mustReport(t, e.m, `{"a":1}`)
	first, _ := e.m.TakeReported(ctx, "az-1")
	mustReport(t, e.m, `{"a":2,"b":1}`)
	again, _ := e.m.TakeReported(ctx, "az-1")
	if jsonOf(first) != `[{"a":1}]` || jsonOf(again) != jsonOf(first) {
		t.Fatalf("taken %s, then %s; want the same batch twice", jsonOf(first), jsonOf(again))
	}
	e = e.reopen(t)
	if ps, _ := e.m.TakeReported(ctx, "az-1"); jsonOf(ps) != `[{"a":1}]` {
		t.Fatalf("in flight after restart: %s", jsonOf(ps))
	}
	if n, _ := e.m.PendingReported("az-1"); n != 2 {
		t.Errorf("PendingReported = %d, want 2 (one taken, one not)", n)
	}
	if err := e.m.ReportedDone(ctx, "az-1"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := e.m.TakeReported(ctx, "az-1"); jsonOf(ps) != `[{"a":2,"b":1}]` {
		t.Fatalf("next batch %s: the patch made while the first was in flight is lost", jsonOf(ps))
	}
	e.m.ReportedDone(ctx, "az-1")
	if n, _ := e.m.PendingReported("az-1"); n != 0 {
		t.Errorf("PendingReported after all done = %d", n)
	}
}

func mustReport(t *testing.T, m *twins.Manager, p string) int64 {
	t.Helper()
	v, err := m.PatchReported(context.Background(), "az-1", []byte(p))
	if err != nil {
		t.Fatalf("report %s: %v", p, err)
	}
	return v
}

// Refusals carry IoT Hub's status and change nothing.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, t.TempDir(), func(o *twins.Options) { o.Rate, o.Burst = 0.001, 6 })
	mustReport(t, e.m, `{"ok":1}`)
	big := `{"big":"` + strings.Repeat("x", iothub.MaxStringBytes+1) + `"`
	var b strings.Builder
	b.WriteString("{")
	for i := range 9 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":"%s"`, i, strings.Repeat("y", 4000))
	}
	b.WriteString("}")
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"a":`, 400},
		{`[1]`, 400},
		{`{"a.b":1}`, 400},
		{big + `}`, 400},
		{b.String(), 413},
	} {
		_, err := e.m.PatchReported(ctx, "az-1", []byte(c.body))
		if status(err) != c.want {
			t.Errorf("patch %.40s: %v, want status %d", c.body, err, c.want)
		}
	}
	// The burst of 6 is spent: one patch and five refused ones.
	if _, err := e.m.Get(ctx, "az-1"); status(err) != 429 {
		t.Errorf("GET over the rate: %v, want 429", err)
	}
	if _, err := e.m.Get(ctx, "nobody"); status(err) != 404 {
		t.Errorf("GET of an unknown device: %v, want 404", err)
	}
	tw, _ := e.m.Twin("az-1")
	if tw.Reported.Version != 2 || jsonOf(tw.Reported.Props) != `{"ok":1}` {
		t.Errorf("a refused patch changed the twin: %.200s", tw.Reported)
	}
	if _, err := e.m.PatchDesired(ctx, "az-1", iothub.Patch{"$x": 1}, 0); status(err) != 400 {
		t.Errorf("desired patch with a bad name: %v", err)
	}
}

// A desired patch reaches a subscribed leaf at once with its version; a
// leaf that was away gets one patch (deletions included) when it
// subscribes again, also after a restart, and none when it has seen the
// version (a GET counts).
func TestDesiredPatches(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, t.TempDir(), nil)
	e.leaves.subscribe("az-1", iothub.TwinDesiredFilter)
	tw, err := e.m.PatchDesired(ctx, "az-1", iothub.Patch{"rate": json.Number("5"), "mode": "eco", "cfg": map[string]any{"a": json.Number("1"), "b": json.Number("2")}}, 0)
	if err != nil || tw.Desired.Version != 2 {
		t.Fatalf("PatchDesired: %v, %s", err, tw.Desired)
	}
	got := e.leaves.take()
	if len(got) != 1 || got[0].topic != "$iothub/twin/PATCH/properties/desired/?$version=2" ||
		got[0].payload != `{"$version":2,"cfg":{"a":1,"b":2},"mode":"eco","rate":5}` {
		t.Fatalf("sent %+v", got)
	}
	e.leaves.drop("az-1")
	e.m.PatchDesired(ctx, "az-1", iothub.Patch{"rate": json.Number("7")}, 0)
	e.m.PatchDesired(ctx, "az-1", iothub.Patch{"mode": nil, "cfg": map[string]any{"b": nil, "c": json.Number("3")}}, 0)
	if got := e.leaves.take(); len(got) != 0 {
		t.Fatalf("sent to an offline leaf: %+v", got)
	}
	e = e.reopen(t)
	e.leaves.subscribe("az-1", iothub.TwinDesiredFilter)
	e.m.Subscribed(ctx, "az-1")
	got = e.leaves.take()
	if len(got) != 1 || got[0].topic != "$iothub/twin/PATCH/properties/desired/?$version=4" ||
		got[0].payload != `{"$version":4,"cfg":{"b":null,"c":3},"mode":null,"rate":7}` {
		t.Fatalf("after reconnect sent %+v", got)
	}
	e.m.Subscribed(ctx, "az-1")
	if got := e.leaves.take(); len(got) != 0 {
		t.Fatalf("a leaf that is up to date got %+v", got)
	}
	e.leaves.drop("az-1")
	e.m.PatchDesired(ctx, "az-1", iothub.Patch{"rate": json.Number("8")}, 0)
	if _, err := e.m.Get(ctx, "az-1"); err != nil { // the leaf reads version 5
		t.Fatal(err)
	}
	e.leaves.subscribe("az-1", iothub.TwinDesiredFilter)
	e.m.Subscribed(ctx, "az-1")
	if got := e.leaves.take(); len(got) != 0 {
		t.Fatalf("a leaf that read the twin got %+v", got)
	}
	// A cloud's versions: an old one changes nothing, a new one is taken.
	if tw, _ := e.m.PatchDesired(ctx, "az-1", iothub.Patch{"rate": json.Number("1")}, 5); jsonOf(tw.Desired.Props["rate"]) != "8" {
		t.Errorf("a patch with a version seen before applied: %s", tw.Desired)
	}
	if tw, _ := e.m.PatchDesired(ctx, "az-1", iothub.Patch{"rate": json.Number("9")}, 40); tw.Desired.Version != 40 {
		t.Errorf("cloud version not taken: %s", tw.Desired)
	}
	if got := e.leaves.take(); len(got) != 1 || !strings.Contains(got[0].topic, "$version=40") {
		t.Errorf("sent %+v", got)
	}
}

// A method call reaches the leaf with a fresh $rid and returns the leaf's
// answer; an offline leaf is a 404 at once, a silent one a 504, an answer
// from another device does not complete the call.
func TestMethods(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, t.TempDir(), nil)
	start := time.Now()
	_, err := e.m.Call(ctx, "az-1", iothub.MethodCall{Name: "reboot", ResponseTimeout: 10 * time.Second})
	if status(err) != 404 || time.Since(start) > 2*time.Second {
		t.Fatalf("call to an offline leaf: %v after %v", err, time.Since(start))
	}
	e.leaves.subscribe("az-1", iothub.MethodRequestFilter)
	e.leaves.subscribe("az-2", iothub.MethodRequestFilter)
	e.leaves.answer = func(device, topic string, payload []byte) {
		mt, err := iothub.ParseMethodTopic(topic)
		if err != nil {
			t.Errorf("method topic %q: %v", topic, err)
			return
		}
		switch mt.Name {
		case "echo":
			e.m.MethodResponse(device, mt.RID, 201, append([]byte(`{"got":`), append(payload, '}')...))
		case "spoof": // az-2 answers az-1's call: ignored
			if e.m.MethodResponse("az-2", mt.RID, 200, nil) {
				t.Error("another device's answer completed the call")
			}
		}
	}
	res, err := e.m.Call(ctx, "az-1", iothub.MethodCall{Name: "echo", Payload: json.RawMessage(`{"x":1}`), ResponseTimeout: 5 * time.Second})
	if err != nil || res.Status != 201 || string(res.Payload) != `{"got":{"x":1}}` {
		t.Fatalf("echo: %+v, %v", res, err)
	}
	for _, name := range []string{"silent", "spoof"} {
		_, err = e.m.Call(ctx, "az-1", iothub.MethodCall{Name: name, ResponseTimeout: 300 * time.Millisecond})
		if status(err) != 504 {
			t.Errorf("%s: %v, want 504", name, err)
		}
	}
	if e.m.MethodResponse("az-1", "1", 200, nil) {
		t.Error("a late answer to a finished call was taken")
	}
	// connectTimeoutInSeconds: a leaf that subscribes within it is called.
	e.leaves.drop("az-1")
	go func() {
		time.Sleep(300 * time.Millisecond)
		e.leaves.subscribe("az-1", iothub.MethodRequestFilter)
	}()
	res, err = e.m.Call(ctx, "az-1", iothub.MethodCall{Name: "echo", ConnectTimeout: 5 * time.Second, ResponseTimeout: 5 * time.Second})
	if err != nil || res.Status != 201 {
		t.Fatalf("call waiting for the leaf to connect: %+v, %v", res, err)
	}
	if _, err := e.m.Call(ctx, "nobody", iothub.MethodCall{Name: "echo"}); status(err) != 404 {
		t.Errorf("unknown device: %v", err)
	}
}
