// Package twins keeps the device twins of the gateway's leaves and runs
// their direct methods, as IoT Hub does for devices connected to it: the
// local hub routes a leaf's $iothub/twin and $iothub/methods traffic here,
// the HTTP API (Register) acts as the service side, and the twins answer
// with IoT Hub's status codes, versions, limits and timeouts.
//
// A twin is a desired and a reported section, each with its $version
// (iothub.Twin). The whole state of one device's twin, with its reported
// patches not yet synced upstream and the desired version the leaf last
// saw, is one document in the store, written (and synced) before any
// answer that depends on it: a twin GET answers from it while the cloud is
// down and after a restart.
//
// Reported patches (PatchReported) are applied locally at once (204 with
// the new $version) and kept pending for upstream, merged with
// iothub.Pending. Desired patches (PatchDesired) come from the local API
// now and from a cloud link later; a leaf subscribed to desired updates
// gets each at once on $iothub/twin/PATCH/properties/desired/?$version=n,
// and a leaf that was away gets one patch, from what it saw last to what
// is desired now, when it subscribes again (Subscribed).
//
// # Upstream
//
// A cloud link plugs in as Options.Cloud, a sink of reported patches, and
// as a source of desired ones: the Manager calls Cloud.ReportedPending
// when a device has reported patches to sync; the link then takes them
// (TakeReported, in order, one batch in flight), sends them and drops them
// (ReportedDone) once IoT Hub has acknowledged; desired patches from the
// cloud go to PatchDesired with IoT Hub's $version, and a full desired
// section fetched after a reconnect to ReplaceDesired. With cloud
// identity per-device the cloud link does this over each leaf's own IoT
// Hub connection (cloudlink.Twins); otherwise pending patches wait,
// durably, in the store.
//
// # Devices the gateway answers for
//
// The gateway's adapter devices (Modbus, serial, GPIO) have twins too,
// kept the same way, but no MQTT connection: Options.Local stands for
// them. Their desired changes go to Local.Desired (never pushed to a
// leaf), their direct methods to Local.Call, and Local reports their state
// and its acknowledgements through Report.
//
// The package sees neither MQTT nor the store's types: the hub and the
// store reach it through the Store interface and the Send and Subscribed
// functions of Options.
package twins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"sort"
	"sync"

	"golang.org/x/time/rate"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// Store keeps one twin document per device; *store.Queue satisfies it.
// PutTwin returns once doc is durable; Twin returns the last doc put, ok
// false when there is none.
type Store interface {
	PutTwin(ctx context.Context, device string, doc []byte) error
	Twin(device string) (doc []byte, ok bool, err error)
}

// Cloud is the upstream side of the twins (see the package comment).
// ReportedPending is called after device's pending reported patches grew,
// with no Manager lock held; it must not block.
type Cloud interface {
	ReportedPending(device string)
}

// Local is the side of the devices the gateway answers for itself (its
// adapter devices): their desired changes and direct methods go to it, not
// to an MQTT leaf, and they report through Manager.Report.
type Local interface {
	// Has reports whether device is one of them.
	Has(device string) bool
	// Desired is called once a desired change of device is durable (a
	// patch, or the difference a replaced desired section made), with the
	// new desired $version and no twin lock held.
	Desired(ctx context.Context, device string, p iothub.Patch, version int64)
	// Call runs direct method c on device (c.ResponseTimeout set); errors
	// are *iothub.Error or ctx's.
	Call(ctx context.Context, device string, c iothub.MethodCall) (iothub.MethodResult, error)
}

// Options configure a Manager. Store, Known, Send and Subscribed are
// required.
type Options struct {
	Store Store
	// Known reports whether device has a twin: a configured leaf.
	Known func(device string) bool
	// Send writes payload on topic to device's current connection (QoS 0,
	// nothing stored); an error when it is not connected.
	Send func(device, topic string, payload []byte) error
	// Subscribed reports whether device is connected now with a
	// subscription to filter (one of iothub's *Filter constants).
	Subscribed func(device, filter string) bool
	// Cloud is told of pending reported patches; nil: nobody is.
	Cloud Cloud
	// Local takes the desired changes and method calls of the devices it
	// Has; nil: every device is an MQTT leaf.
	Local Local
	// Rate and Burst bound one device's twin requests (GETs and reported
	// patches) per second, as IoT Hub throttles them; more are answered
	// 429. Defaults 10/s and 20.
	Rate  float64
	Burst int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultRate  = 10
	DefaultBurst = 20
)

// Manager holds the twins and the method calls in flight. All methods are
// safe for concurrent use; the operations on one device's twin are
// serialized.
type Manager struct {
	opt Options
	log *slog.Logger

	mu    sync.Mutex
	twins map[string]*twin

	calls calls
}

// twin is one device's state; mu serializes its operations, including
// their store writes, so patches apply in the order they arrive.
type twin struct {
	mu     sync.Mutex
	loaded bool
	d      doc
	lim    *rate.Limiter
}

// doc is the stored document of one twin.
type doc struct {
	Desired  iothub.Section `json:"desired"`
	Reported iothub.Section `json:"reported"`
	// Pending are reported patches not yet taken upstream, Inflight those
	// taken and not yet acknowledged (iothub.Pending's patches, in order).
	Pending  []iothub.Patch `json:"pending,omitempty"`
	Inflight []iothub.Patch `json:"inflight,omitempty"`
	// Seen is the desired $version the leaf last saw (in a GET answer or a
	// pushed patch) and SeenDesired the desired properties at that version:
	// a leaf that was away gets the difference.
	Seen        int64          `json:"seen"`
	SeenDesired map[string]any `json:"seen_desired"`
}

func freshDoc() doc {
	t := iothub.NewTwin()
	return doc{Desired: t.Desired, Reported: t.Reported, Seen: t.Desired.Version, SeenDesired: map[string]any{}}
}

// New returns a Manager; it reads nothing until a twin is first used.
func New(opt Options) (*Manager, error) {
	if opt.Store == nil || opt.Known == nil || opt.Send == nil || opt.Subscribed == nil {
		return nil, errors.New("twins: Store, Known, Send and Subscribed are required")
	}
	if opt.Rate <= 0 {
		opt.Rate = DefaultRate
	}
	if opt.Burst <= 0 {
		opt.Burst = DefaultBurst
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{opt: opt, log: opt.Logger, twins: map[string]*twin{}, calls: calls{m: map[string]*call{}}}, nil
}

func errorf(status int, format string, a ...any) error {
	return &iothub.Error{Status: status, Msg: fmt.Sprintf(format, a...)}
}

// ErrorBody is the body of a twin response with a failure status, as IoT
// Hub words it: {"errorCode":status×1000+1,"message":...}. The device SDKs
// report a response with an errorCode as a failed request.
func ErrorBody(err error) []byte {
	b, _ := json.Marshal(struct {
		Code int    `json:"errorCode"`
		Msg  string `json:"message"`
	}{iothub.StatusOf(err)*1000 + 1, err.Error()})
	return b
}

// lock returns device's twin, loaded and locked; the caller unlocks it.
// An unknown device is a 404, a document that cannot be read a 500.
func (m *Manager) lock(device string) (*twin, error) {
	if !m.opt.Known(device) {
		return nil, errorf(iothub.StatusNotFound, "no device %q on this gateway", device)
	}
	m.mu.Lock()
	t := m.twins[device]
	if t == nil {
		t = &twin{lim: rate.NewLimiter(rate.Limit(m.opt.Rate), m.opt.Burst)}
		m.twins[device] = t
	}
	m.mu.Unlock()
	t.mu.Lock()
	if t.loaded {
		return t, nil
	}
	raw, ok, err := m.opt.Store.Twin(device)
	if err != nil {
		t.mu.Unlock()
		return nil, fmt.Errorf("twins: %s: %w", device, err)
	}
	d := freshDoc()
	if ok {
		if d, err = decodeDoc(raw); err != nil {
			t.mu.Unlock()
			return nil, fmt.Errorf("twins: %s: stored twin unreadable (left as it is): %w", device, err)
		}
	}
	t.d, t.loaded = d, true
	return t, nil
}

func decodeDoc(b []byte) (doc, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var d doc
	if err := dec.Decode(&d); err != nil {
		return doc{}, err
	}
	if d.SeenDesired == nil {
		d.SeenDesired = map[string]any{}
	}
	return d, nil
}

// put stores d as device's document and, once it is durable, makes it
// the twin's state; on failure the state stays as it was. t is locked.
func (m *Manager) put(ctx context.Context, device string, t *twin, d doc) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("twins: %s: encode: %w", device, err)
	}
	if err := m.opt.Store.PutTwin(ctx, device, b); err != nil {
		return fmt.Errorf("twins: %s: %w", device, err)
	}
	t.d = d
	return nil
}

func (t *twin) throttle(device string) error {
	if !t.lim.Allow() {
		return errorf(iothub.StatusThrottled, "twin requests of %s over %.4g/s", device, float64(t.lim.Limit()))
	}
	return nil
}

// Get answers a leaf's twin GET: the body
// {"desired":{...,"$version":n},"reported":{...,"$version":m}}. Errors are
// *iothub.Error (404 unknown device, 429 throttled) or others (500).
func (m *Manager) Get(ctx context.Context, device string) ([]byte, error) {
	t, err := m.lock(device)
	if err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if err := t.throttle(device); err != nil {
		return nil, err
	}
	body, err := json.Marshal(iothub.Twin{Desired: t.d.Desired, Reported: t.d.Reported})
	if err != nil {
		return nil, fmt.Errorf("twins: %s: %w", device, err)
	}
	if t.d.Seen != t.d.Desired.Version {
		d := t.d
		d.Seen, d.SeenDesired = d.Desired.Version, d.Desired.Props
		if err := m.put(ctx, device, t, d); err != nil {
			// The answer stands; the leaf may get a patch it already has.
			m.log.Warn("twins: cannot record the desired version a leaf saw", "device", device, "err", err)
		}
	}
	return body, nil
}

// Twin returns device's twin as the service side sees it (the HTTP API).
func (m *Manager) Twin(device string) (iothub.Twin, error) {
	t, err := m.lock(device)
	if err != nil {
		return iothub.Twin{}, err
	}
	defer t.mu.Unlock()
	return iothub.Twin{Desired: t.d.Desired, Reported: t.d.Reported}, nil
}

// PatchReported applies a leaf's reported patch (body: a JSON object, null
// deleting a member), keeps it pending for upstream and returns the new
// reported $version, all once it is durable. Errors are *iothub.Error: 400
// malformed or against IoT Hub's rules, 413 section over 32 KB, 429
// throttled, 404 unknown device; or others (500), and then nothing changed.
func (m *Manager) PatchReported(ctx context.Context, device string, body []byte) (int64, error) {
	t, err := m.lock(device)
	if err != nil {
		return 0, err
	}
	if err := t.throttle(device); err != nil {
		t.mu.Unlock()
		return 0, err
	}
	p, err := iothub.ParsePatch(body)
	if err != nil {
		t.mu.Unlock()
		return 0, err
	}
	return m.applyReported(ctx, device, t, p)
}

// applyReported applies p to device's reported section and its pending
// patches, makes it durable, unlocks t (locked by the caller) and tells
// the cloud; it returns the new reported $version.
func (m *Manager) applyReported(ctx context.Context, device string, t *twin, p iothub.Patch) (int64, error) {
	d := t.d
	if err := d.Reported.Apply(p); err != nil {
		t.mu.Unlock()
		return 0, err
	}
	d.Pending = pendingPlus(d.Pending, p)
	err := m.put(ctx, device, t, d)
	v := t.d.Reported.Version
	t.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if m.opt.Cloud != nil {
		m.opt.Cloud.ReportedPending(device)
	}
	return v, nil
}

// pendingPlus returns a fresh list of the patches in ps followed by p,
// merged as iothub.Pending merges them; ps is not changed.
func pendingPlus(ps []iothub.Patch, more ...iothub.Patch) []iothub.Patch {
	var q iothub.Pending
	for _, p := range ps {
		q.Add(p)
	}
	for _, p := range more {
		q.Add(p)
	}
	return q.Patches()
}

// TakeReported returns device's reported patches for upstream, oldest
// first: the ones taken before and not yet ReportedDone (to be sent
// again), else the pending ones, which it marks taken. Patches made after
// this call stay pending for the next batch. nil when there are none.
func (m *Manager) TakeReported(ctx context.Context, device string) ([]iothub.Patch, error) {
	t, err := m.lock(device)
	if err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if len(t.d.Inflight) > 0 || len(t.d.Pending) == 0 {
		return t.d.Inflight, nil
	}
	d := t.d
	d.Inflight, d.Pending = d.Pending, nil
	if err := m.put(ctx, device, t, d); err != nil {
		return nil, err
	}
	return t.d.Inflight, nil
}

// ReportedDone drops the patches TakeReported returned, once upstream has
// acknowledged them all.
func (m *Manager) ReportedDone(ctx context.Context, device string) error {
	t, err := m.lock(device)
	if err != nil {
		return err
	}
	defer t.mu.Unlock()
	if len(t.d.Inflight) == 0 {
		return nil
	}
	d := t.d
	d.Inflight = nil
	return m.put(ctx, device, t, d)
}

// PendingReported is the number of reported patches not yet acknowledged
// upstream (taken or not).
func (m *Manager) PendingReported(device string) (int, error) {
	t, err := m.lock(device)
	if err != nil {
		return 0, err
	}
	defer t.mu.Unlock()
	return len(t.d.Pending) + len(t.d.Inflight), nil
}

// PatchDesired merges p into device's desired properties and returns the
// twin, once durable; a leaf subscribed to desired updates gets the patch
// at once. version 0 counts the local version up by one (the local API);
// a cloud passes its own $version, and a version not above the current one
// changes nothing (a patch seen before). Errors are *iothub.Error (400,
// 413, 404 unknown device) or others (500).
func (m *Manager) PatchDesired(ctx context.Context, device string, p iothub.Patch, version int64) (iothub.Twin, error) {
	if err := iothub.ValidatePatch(p); err != nil {
		return iothub.Twin{}, err
	}
	if m.local(device) {
		tw, changed, err := m.patchDesired(ctx, device, p, version, false)
		if changed {
			m.opt.Local.Desired(ctx, device, p, tw.Desired.Version)
		}
		return tw, err
	}
	tw, _, err := m.patchDesired(ctx, device, p, version, true)
	return tw, err
}

// local reports whether device is one of Options.Local's.
func (m *Manager) local(device string) bool {
	return m.opt.Local != nil && m.opt.Local.Has(device)
}

// patchDesired is PatchDesired without the call to Local; push sends the
// change to the leaf. changed is false for a patch seen before.
func (m *Manager) patchDesired(ctx context.Context, device string, p iothub.Patch, version int64, push bool) (tw iothub.Twin, changed bool, err error) {
	t, err := m.lock(device)
	if err != nil {
		return iothub.Twin{}, false, err
	}
	defer t.mu.Unlock()
	if version > 0 && version <= t.d.Desired.Version {
		return iothub.Twin{Desired: t.d.Desired, Reported: t.d.Reported}, false, nil
	}
	d := t.d
	if err := d.Desired.Apply(p); err != nil {
		return iothub.Twin{}, false, err
	}
	if version > 0 {
		d.Desired.Version = version
	}
	prev := t.d.Desired.Version
	if err := m.put(ctx, device, t, d); err != nil {
		return iothub.Twin{}, false, err
	}
	if push {
		send := p
		if t.d.Seen != prev { // the leaf missed an earlier change: send it all
			send = diff(t.d.SeenDesired, t.d.Desired.Props)
		}
		m.push(ctx, device, t, send)
	}
	return iothub.Twin{Desired: t.d.Desired, Reported: t.d.Reported}, true, nil
}

// ReplaceDesired makes s device's desired section (a cloud's full twin
// after a reconnect) when its version is above the current one; a leaf
// subscribed to desired updates gets the difference as one patch.
func (m *Manager) ReplaceDesired(ctx context.Context, device string, s iothub.Section) error {
	change, v, err := m.replaceDesired(ctx, device, s)
	if err == nil && len(change) > 0 {
		m.opt.Local.Desired(ctx, device, change, v)
	}
	return err
}

// replaceDesired is ReplaceDesired without the call to Local: for a
// device of Local's it returns the change and the new version instead of
// pushing it to a leaf.
func (m *Manager) replaceDesired(ctx context.Context, device string, s iothub.Section) (iothub.Patch, int64, error) {
	t, err := m.lock(device)
	if err != nil {
		return nil, 0, err
	}
	defer t.mu.Unlock()
	if s.Version <= t.d.Desired.Version {
		return nil, 0, nil
	}
	if n := iothub.SectionSize(s.Props); n > iothub.MaxSectionBytes {
		return nil, 0, errorf(iothub.StatusTooLarge, "desired section of %d bytes, more than %d", n, iothub.MaxSectionBytes)
	}
	d := t.d
	before := t.d.Desired.Props
	d.Desired = iothub.Section{Props: maps.Clone(s.Props), Version: s.Version}
	if err := m.put(ctx, device, t, d); err != nil {
		return nil, 0, err
	}
	if m.local(device) {
		return diff(before, t.d.Desired.Props), t.d.Desired.Version, nil
	}
	m.push(ctx, device, t, diff(t.d.SeenDesired, t.d.Desired.Props))
	return nil, 0, nil
}

// Report applies a reported patch of a device the gateway answers for
// (Options.Local's) and keeps it pending for upstream, as PatchReported
// does for a leaf but not throttled; it returns the new reported $version.
// p's values may be any JSON-encodable values (they are put through JSON).
func (m *Manager) Report(ctx context.Context, device string, p iothub.Patch) (int64, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return 0, errorf(iothub.StatusBadRequest, "reported patch: %v", err)
	}
	if p, err = iothub.ParsePatch(b); err != nil {
		return 0, err
	}
	t, err := m.lock(device)
	if err != nil {
		return 0, err
	}
	return m.applyReported(ctx, device, t, p)
}

// Subscribed is called when device's leaf subscribes to desired updates
// (a connect or reconnect): if the desired version moved since the leaf
// last saw it, the leaf gets one patch from what it saw to what is desired.
func (m *Manager) Subscribed(ctx context.Context, device string) {
	t, err := m.lock(device)
	if err != nil {
		m.log.Warn("twins: cannot bring a reconnected leaf up to date", "device", device, "err", err)
		return
	}
	defer t.mu.Unlock()
	if t.d.Desired.Version > t.d.Seen {
		m.push(ctx, device, t, diff(t.d.SeenDesired, t.d.Desired.Props))
	}
}

// push sends patch with the current desired $version to a subscribed leaf
// and records that the leaf has seen that version. t is locked.
func (m *Manager) push(ctx context.Context, device string, t *twin, patch iothub.Patch) {
	if !m.opt.Subscribed(device, iothub.TwinDesiredFilter) {
		return
	}
	body := make(map[string]any, len(patch)+1)
	maps.Copy(body, patch)
	body["$version"] = t.d.Desired.Version
	b, err := json.Marshal(body)
	if err != nil {
		m.log.Error("twins: encode desired patch", "device", device, "err", err)
		return
	}
	if err := m.opt.Send(device, iothub.TwinDesiredTopic(t.d.Desired.Version), b); err != nil {
		m.log.Debug("twins: desired patch not sent; the leaf gets it when it subscribes again", "device", device, "err", err)
		return
	}
	d := t.d
	d.Seen, d.SeenDesired = d.Desired.Version, d.Desired.Props
	if err := m.put(ctx, device, t, d); err != nil {
		m.log.Warn("twins: cannot record the desired version a leaf saw", "device", device, "err", err)
		t.d.Seen, t.d.SeenDesired = d.Seen, d.SeenDesired // it did see it
	}
}

// diff is the merge patch that turns from into to: members gone are null,
// changed ones their new value, objects compared member by member.
func diff(from, to map[string]any) iothub.Patch {
	p := iothub.Patch{}
	for k := range from {
		if _, ok := to[k]; !ok {
			p[k] = nil
		}
	}
	for k, v := range to {
		old, had := from[k]
		om, oldObj := old.(map[string]any)
		nm, newObj := v.(map[string]any)
		switch {
		case had && oldObj && newObj:
			if sub := diff(om, nm); len(sub) > 0 {
				p[k] = map[string]any(sub)
			}
		case !had || !reflect.DeepEqual(old, v):
			p[k] = v
		}
	}
	return p
}

// Status is one twin as the status page shows it.
type Status struct {
	Device          string `json:"device"`
	DesiredVersion  int64  `json:"desired_version"`
	ReportedVersion int64  `json:"reported_version"`
	// SeenVersion is the desired version the leaf last saw.
	SeenVersion int64 `json:"seen_version"`
	// PendingUpstream counts reported patches not yet acknowledged upstream.
	PendingUpstream int `json:"pending_upstream"`
}

// Statuses returns the twins of devices (unknown ones left out), sorted by
// device.
func (m *Manager) Statuses(devices []string) []Status {
	out := make([]Status, 0, len(devices))
	for _, dev := range devices {
		t, err := m.lock(dev)
		if err != nil {
			continue
		}
		out = append(out, Status{Device: dev, DesiredVersion: t.d.Desired.Version, ReportedVersion: t.d.Reported.Version,
			SeenVersion: t.d.Seen, PendingUpstream: len(t.d.Pending) + len(t.d.Inflight)})
		t.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}
