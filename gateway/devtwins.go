package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/twins"
	"github.com/outpost-iot/outpost/store"
)

// The reported properties of an adapter device's twin that are not
// acknowledgements: its points' last values, its health and the health's
// detail. A desired property of one of these names is never acknowledged.
const (
	reportedPoints       = "points"
	reportedHealth       = "health"
	reportedHealthDetail = "health_detail"
)

// Command ids of the twin side: a desired change is command
// "twin:{device}:{desired $version}" (so a change seen twice is applied
// once), a write method call "method:{device}:{random}".
const (
	twinCmdPrefix   = "twin:"
	methodCmdPrefix = "method:"
)

// devTwins are the twins of the adapter devices (devices[]), the
// twins.Local of the gateway's twins.Manager:
//
//   - reported properties: "points" (the last value of every point, as
//     the device emitted them), "health" ("ok", "degraded", "down") and
//     "health_detail", updated when they change, at most once per the
//     device's twin_interval (run);
//   - each writable point (adapters.PointLister) is a desired property: a
//     desired change becomes a write command through the ledger, and its
//     outcome is acknowledged in reported under the property's name as
//     IoT Plug and Play does, {"value":v,"ac":code,"av":version,"ad":text}
//     (ac 202 while the command runs, then 200 done, 400 rejected by the
//     gateway or the device, 500 failed, 504 expired; a desired property
//     that is not a writable point gets 400 at once);
//   - direct methods "read" and "write" (Call).
type devTwins struct {
	g *Gateway

	mu      sync.Mutex
	last    map[string]map[string]any  // device -> point -> last value emitted
	lastAt  map[string]time.Time       // device -> time of its last reading
	sent    map[string]string          // device -> the last reported state, as JSON
	sentAt  map[string]time.Time       // device -> when it was reported
	waiters map[string]chan msg.Result // write method command id -> its caller
}

func newDevTwins(g *Gateway) *devTwins {
	return &devTwins{g: g, last: map[string]map[string]any{}, lastAt: map[string]time.Time{},
		sent: map[string]string{}, sentAt: map[string]time.Time{}, waiters: map[string]chan msg.Result{}}
}

// Has implements twins.Local: id is a configured adapter device, or one
// a reload started.
func (t *devTwins) Has(id string) bool {
	if t.g.device(id) != nil {
		return true
	}
	for _, d := range t.g.cfg.Devices {
		if d.ID == id {
			return true
		}
	}
	return false
}

// observe takes a device's readings once they are durable (the emitter).
func (t *devTwins) observe(device string, rs []msg.Reading) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.last[device]
	if m == nil {
		m = map[string]any{}
		t.last[device] = m
	}
	for _, r := range rs {
		maps.Copy(m, r.Values)
		if r.Time.After(t.lastAt[device]) {
			t.lastAt[device] = r.Time
		}
	}
}

// interval is a device's twin_interval.
func interval(d *device) time.Duration {
	if d.cfg.TwinInterval > 0 {
		return d.cfg.TwinInterval
	}
	return config.DefaultTwinInterval
}

// run reports the running devices' points and health whenever they
// changed and the device's twin_interval has passed since its last
// report, and first brings the desired properties left unacknowledged by
// a stop up to date. It returns when ctx is done.
func (t *devTwins) run(ctx context.Context) {
	for _, d := range t.g.cfg.Devices {
		t.resume(ctx, d.ID)
	}
	for {
		tick := time.Second
		for _, d := range t.g.deviceList() {
			tick = min(tick, interval(d))
			t.report(ctx, d)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(tick):
		}
	}
}

// report sends d's state to its twin if it changed and its interval has
// passed. A device is first reported once it has emitted a reading or its
// health is not ok.
func (t *devTwins) report(ctx context.Context, d *device) {
	id := d.cfg.ID
	st := d.status()
	t.mu.Lock()
	if time.Since(t.sentAt[id]) < interval(d) || t.last[id] == nil && st.Health == adapters.Up {
		t.mu.Unlock()
		return // too soon, or nothing to say yet: no reading, no trouble
	}
	state := map[string]any{reportedPoints: maps.Clone(t.last[id]), reportedHealth: st.Health.String(), reportedHealthDetail: st.Detail}
	if state[reportedPoints] == nil {
		state[reportedPoints] = map[string]any{}
	}
	b, err := json.Marshal(state)
	if err != nil || string(b) == t.sent[id] {
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	if _, err := t.g.twins.Report(ctx, id, state); err != nil {
		d.log.Warn("twin: cannot report the device's points and health; will retry", "err", err)
		return
	}
	t.mu.Lock()
	t.sent[id], t.sentAt[id] = string(b), time.Now()
	t.mu.Unlock()
}

// resume turns the desired properties of device that have no
// acknowledgement of the current desired version into a command again,
// under the same id: one the ledger had already taken is not applied
// twice.
func (t *devTwins) resume(ctx context.Context, device string) {
	tw, err := t.g.twins.Twin(device)
	if err != nil || len(tw.Desired.Props) == 0 {
		return
	}
	p := iothub.Patch{}
	for k, v := range tw.Desired.Props {
		if v == nil || reserved(k) {
			continue
		}
		ack, _ := tw.Reported.Props[k].(map[string]any)
		if av, _ := number(ack["av"]); av >= tw.Desired.Version {
			continue
		}
		p[k] = v
	}
	if len(p) > 0 {
		t.Desired(ctx, device, p, tw.Desired.Version)
	}
}

func number(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}

func reserved(k string) bool {
	return k == reportedPoints || k == reportedHealth || k == reportedHealthDetail
}

// ack is an IoT Plug and Play writable-property acknowledgement.
func ack(value any, code int, version int64, detail string) map[string]any {
	return map[string]any{"value": value, "ac": code, "av": version, "ad": detail}
}

// Desired implements twins.Local: the writable points among p's members
// become one write command (acknowledged 202 now, and with its outcome
// when the ledger finishes it); the others are acknowledged 400 at once.
// A member set to null (a desired property removed) changes nothing.
func (t *devTwins) Desired(ctx context.Context, device string, p iothub.Patch, version int64) {
	log := t.g.log.With("device", device)
	writable := map[string]bool{}
	var names []string
	d := t.g.device(device)
	if d != nil {
		if pl, ok := d.src.(adapters.PointLister); ok {
			for _, pt := range pl.Points() {
				if pt.Writable {
					writable[pt.Name] = true
					names = append(names, pt.Name)
				}
			}
		}
	}
	acks := iothub.Patch{}
	write := map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(p)) {
		v := p[k]
		switch {
		case v == nil:
		case reserved(k):
			log.Warn("twin: desired property has the name of a reported one and is ignored", "property", k)
		case d == nil:
			acks[k] = ack(v, 503, version, "the device is not running")
		case !writable[k]:
			why := "the device has no writable points"
			if len(names) > 0 {
				why = "writable points: " + strings.Join(names, ", ")
			}
			acks[k] = ack(v, 400, version, fmt.Sprintf("%q is not a writable point of %s (%s)", k, device, why))
		default:
			write[k] = v
			acks[k] = ack(v, 202, version, "writing")
		}
	}
	if len(write) > 0 {
		body, _ := json.Marshal(map[string]any{"write": write})
		id := fmt.Sprintf("%s%s:%d", twinCmdPrefix, device, version)
		if err := t.g.ledger.Accept(ctx, device, msg.Props{{Key: msg.PropMessageID, Value: id}}, body); err != nil {
			for k, v := range write {
				acks[k] = ack(v, 503, version, fmt.Sprintf("not taken as a command: %v", err))
			}
		}
	}
	if len(acks) == 0 {
		return
	}
	if _, err := t.g.twins.Report(ctx, device, acks); err != nil {
		log.Error("twin: cannot acknowledge desired properties", "version", version, "err", err)
	}
}

// finished is the ledger's Options.Finished: a twin command's outcome is
// acknowledged in reported, a write method's goes to its caller.
func (t *devTwins) finished(c store.Command, res msg.Result) {
	t.mu.Lock()
	w := t.waiters[c.ID]
	delete(t.waiters, c.ID)
	t.mu.Unlock()
	if w != nil {
		w <- res
	}
	rest, ok := strings.CutPrefix(c.ID, twinCmdPrefix+c.Device+":")
	if !ok {
		return
	}
	version, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return
	}
	var body struct {
		Write map[string]any `json:"write"`
	}
	if err := json.Unmarshal(c.Payload, &body); err != nil {
		return
	}
	code, detail := ackCode(res)
	acks := iothub.Patch{}
	for k, v := range body.Write {
		if rv, ok := res.Values[k]; ok {
			v = rv // the value read back
		}
		acks[k] = ack(v, code, version, detail)
	}
	if _, err := t.g.twins.Report(context.Background(), c.Device, acks); err != nil {
		t.g.log.Error("twin: cannot acknowledge desired properties", "device", c.Device, "version", version, "err", err)
	}
}

// ackCode is the ac and ad of a command's result.
func ackCode(res msg.Result) (int, string) {
	switch res.Status {
	case msg.StatusDone:
		return 200, "written"
	case msg.StatusRejected:
		return 400, res.Error
	case msg.StatusExpired:
		return 504, res.Error
	}
	return 500, res.Error
}

// Call implements twins.Local: the direct methods of an adapter device.
//
//	read   {}                  → 200 {"values":{...},"errors":{...},"time":"...","source":"device"|"last"}
//	write  {"point":value,...} → 200 {"values":{point: value read back}}
//
// read reads the points from the device now when its adapter can
// (adapters.Reader: modbus), else answers the last values emitted with
// the time of the last reading (source "last"). write is a command
// through the ledger with the call's response timeout as its deadline;
// a rejected one answers 400, a failed one 500, with {"error":...}. Any
// other method answers status 404 with {"error":...,"methods":[...]}.
func (t *devTwins) Call(ctx context.Context, device string, c iothub.MethodCall) (iothub.MethodResult, error) {
	d := t.g.device(device)
	if d == nil {
		return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusNotFound, Msg: fmt.Sprintf("device %s is not running", device)}
	}
	switch c.Name {
	case "read":
		return t.read(ctx, d, c.ResponseTimeout)
	case "write":
		return t.write(ctx, d, c)
	}
	return result(iothub.StatusNotFound, map[string]any{
		"error":   fmt.Sprintf("device %s (%s) has no method %q", device, d.cfg.Kind, c.Name),
		"methods": []string{"read", "write"},
	}), nil
}

func result(status int, payload any) iothub.MethodResult {
	b, _ := json.Marshal(payload)
	return iothub.MethodResult{Status: status, Payload: b}
}

func (t *devTwins) read(ctx context.Context, d *device, timeout time.Duration) (iothub.MethodResult, error) {
	if r, ok := d.src.(adapters.Reader); ok {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		rd, err := r.Read(rctx)
		if err != nil {
			if ctx.Err() != nil {
				return iothub.MethodResult{}, ctx.Err()
			}
			if rctx.Err() != nil {
				return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusTimeout, Msg: fmt.Sprintf("device %s: read: %v", d.cfg.ID, err)}
			}
			return result(500, map[string]any{"error": err.Error()}), nil
		}
		return result(200, map[string]any{"values": rd.Values, "errors": rd.Errors,
			"time": rd.Time.UTC().Format(msg.TimeFormat), "source": "device"}), nil
	}
	t.mu.Lock()
	vals, at := maps.Clone(t.last[d.cfg.ID]), t.lastAt[d.cfg.ID]
	t.mu.Unlock()
	if vals == nil {
		vals = map[string]any{}
	}
	out := map[string]any{"values": vals, "source": "last"}
	if !at.IsZero() {
		out["time"] = at.UTC().Format(msg.TimeFormat)
	}
	return result(200, out), nil
}

func (t *devTwins) write(ctx context.Context, d *device, c iothub.MethodCall) (iothub.MethodResult, error) {
	var points map[string]any
	if err := json.Unmarshal(c.Payload, &points); err != nil || len(points) == 0 {
		return result(400, map[string]any{"error": `write takes a non-empty object of points and values, e.g. {"setpoint":21.5}`}), nil
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	id := methodCmdPrefix + d.cfg.ID + ":" + hex.EncodeToString(b)
	done := make(chan msg.Result, 1)
	t.mu.Lock()
	t.waiters[id] = done
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.waiters, id)
		t.mu.Unlock()
	}()
	deadline := time.Now().Add(c.ResponseTimeout)
	body, _ := json.Marshal(map[string]any{"write": points})
	props := msg.Props{{Key: msg.PropMessageID, Value: id}, {Key: msg.PropExpiry, Value: deadline.UTC().Format(time.RFC3339Nano)}}
	if err := t.g.ledger.Accept(ctx, d.cfg.ID, props, body); err != nil {
		return iothub.MethodResult{}, fmt.Errorf("gateway: write method: %w", err)
	}
	timer := time.NewTimer(time.Until(deadline) + time.Second) // the ledger ends it at its deadline
	defer timer.Stop()
	select {
	case res := <-done:
		switch res.Status {
		case msg.StatusDone:
			return result(200, map[string]any{"values": res.Values}), nil
		case msg.StatusRejected:
			return result(400, map[string]any{"error": res.Error}), nil
		case msg.StatusExpired:
			return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusTimeout, Msg: fmt.Sprintf("device %s: write: %s", d.cfg.ID, res.Error)}
		}
		return result(500, map[string]any{"error": res.Error}), nil
	case <-timer.C:
		return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusTimeout, Msg: fmt.Sprintf("device %s did not finish write within %v", d.cfg.ID, c.ResponseTimeout)}
	case <-ctx.Done():
		return iothub.MethodResult{}, ctx.Err()
	}
}

var _ twins.Local = (*devTwins)(nil)
