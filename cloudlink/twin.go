package cloudlink

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// Twins is the gateway's store of device twins and its way to a leaf's
// direct methods, as a cloud link syncs them (*twins.Manager satisfies
// it). With azure identity per-device, each leaf's connection of a Fleet
// carries that leaf's twin and methods (IOTHUB.md §5):
//
//   - it subscribes $iothub/twin/res/#, $iothub/twin/PATCH/properties/desired/#
//     and $iothub/methods/POST/#, and GETs the twin on every connect; the
//     desired section of the answer goes to ReplaceDesired;
//   - desired patches IoT Hub pushes go to PatchDesired with their
//     $version; a push whose version skips one makes it GET again;
//   - reported patches are sent one in flight: TakeReported, each patch
//     PATCHed and answered 204, then ReportedDone. A 429 or 5xx is retried
//     after a back-off; a 400 or 413 (IoT Hub will never take that patch)
//     is logged and the patch skipped. A batch cut off by a disconnect is
//     sent again, whole and in order, after the reconnect;
//   - a method request is Called on the leaf (the leaf's answer, or 404
//     when it is not connected, 504 when it does not answer) and answered
//     on $iothub/methods/res/{status}/?$rid=.
//
// The gateway's own connection, and every connection with identity
// gateway or protocol mqtt, carries no twins: leaves' twins stay local.
type Twins interface {
	TakeReported(ctx context.Context, device string) ([]iothub.Patch, error)
	ReportedDone(ctx context.Context, device string) error
	PatchDesired(ctx context.Context, device string, p iothub.Patch, version int64) (iothub.Twin, error)
	ReplaceDesired(ctx context.Context, device string, s iothub.Section) error
	Call(ctx context.Context, device string, c iothub.MethodCall) (iothub.MethodResult, error)
}

// twinTimeout is how long a twin request waits for IoT Hub's answer
// before the connection is given up (and the request made again on the
// next one).
const twinTimeout = 30 * time.Second

// ReportedPending tells the leaf's connection that device has reported
// patches to sync (the twins' Cloud). It does not block; a device without
// an identity of its own keeps its twin local.
func (f *Fleet) ReportedPending(device string) {
	id := f.identity(device)
	if id == "" || f.opt.Twins == nil {
		return
	}
	if _, err := f.queueFor(id); err != nil {
		f.log.Warn("twin of a leaf not synced: no connection for it", "device", device, "err", err)
		return
	}
	f.mu.Lock()
	s := f.sessions[id]
	f.mu.Unlock()
	s.reportedPending()
}

func (s *Session) reportedPending() {
	select {
	case s.twinWake <- struct{}{}:
	default:
	}
}

// twinLink is a session's twin and method traffic on one connection.
type twinLink struct {
	s   *Session
	c   paho.Client
	tw  Twins
	dev string
	in  chan paho.Message // twin responses and desired pushes, in receive order
	ctx context.Context   // the connection's

	mu     sync.Mutex
	closed bool           // wait has begun: no more method calls
	wg     sync.WaitGroup // method calls
}

// newTwinLink routes c's twin and method topics to a twinLink, before c
// connects (a persistent session may deliver as soon as it is up); nil
// when the session carries no twins.
func (s *Session) newTwinLink(ctx context.Context, c paho.Client) *twinLink {
	if s.opt.twins == nil {
		return nil
	}
	t := &twinLink{s: s, c: c, tw: s.opt.twins, dev: s.opt.DeviceID, in: make(chan paho.Message, 64), ctx: ctx}
	queue := func(_ paho.Client, m paho.Message) {
		m.Ack()
		select {
		case t.in <- m:
		case <-ctx.Done():
		}
	}
	c.AddRoute(iothub.TwinResponseFilter, queue)
	c.AddRoute(iothub.TwinDesiredFilter, queue)
	c.AddRoute(iothub.MethodRequestFilter, func(_ paho.Client, m paho.Message) {
		m.Ack()
		t.method(m)
	})
	return t
}

// wait returns once the method calls of the connection have ended.
func (t *twinLink) wait() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}

func (t *twinLink) publish(topic string, body []byte) error {
	tok := t.c.Publish(topic, 0, false, body)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.ctx.Done():
		return context.Cause(t.ctx)
	}
}

// method runs one direct method request on the leaf and answers it.
func (t *twinLink) method(m paho.Message) {
	mt, err := iothub.ParseMethodTopic(m.Topic())
	if err != nil || mt.Response {
		t.s.log.Warn("direct method request ignored: bad topic", "topic", m.Topic(), "err", err)
		return
	}
	payload := bytes.TrimSpace(m.Payload())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return // the connection is ending; IoT Hub times the call out
	}
	t.wg.Go(func() {
		// The caller's responseTimeoutInSeconds is IoT Hub's to keep: the
		// leaf gets the longest one, and an answer too late is dropped there.
		c := iothub.MethodCall{Name: mt.Name, ResponseTimeout: iothub.MaxMethodTimeout}
		if len(payload) > 0 && !bytes.Equal(payload, []byte("null")) {
			c.Payload = append(json.RawMessage(nil), payload...)
		}
		r, err := t.tw.Call(t.ctx, t.dev, c)
		status, body := r.Status, []byte(r.Payload)
		if err != nil {
			if t.ctx.Err() != nil {
				return
			}
			status = iothub.StatusOf(err)
			body, _ = json.Marshal(struct {
				Code int    `json:"errorCode"`
				Msg  string `json:"message"`
			}{status*1000 + 1, err.Error()})
		}
		if err := t.publish(iothub.MethodResponseTopic(status, mt.RID), body); err != nil {
			t.s.log.Debug("direct method answer not sent", "method", mt.Name, "err", err)
		}
	})
}

// run keeps the twin in sync on the connection until ctx is done (nil) or
// IoT Hub stops answering (an error: the connection is given up).
func (t *twinLink) run(ctx context.Context) error {
	// A device the gateway keeps no twin for (not a leaf of the local
	// hub) has no twin or methods upstream either: nothing is subscribed,
	// and IoT Hub answers its method callers 404.
	if _, err := t.tw.TakeReported(ctx, t.dev); iothub.StatusOf(err) == iothub.StatusNotFound {
		t.s.log.Debug("no local twin for this device; its twin is not synced", "err", err)
		return nil
	}
	tok := t.c.SubscribeMultiple(map[string]byte{
		iothub.TwinResponseFilter: 0, iothub.TwinDesiredFilter: 0, iothub.MethodRequestFilter: 0}, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("cloudlink: subscribe to twin and methods: %w", err)
	}
	for f, rc := range tok.(*paho.SubscribeToken).Result() {
		if rc > 1 {
			return fmt.Errorf("cloudlink: subscribe %s refused (SUBACK %#x)", f, rc)
		}
	}

	var (
		nextRID    uint64
		getRID     string // GET in flight
		needGet    = true
		desiredVer int64 // the cloud's desired version last seen; 0 before the GET's answer
		patchRID   string
		batch      []iothub.Patch
		idx        int
		needSync   = true
		sentAt     time.Time // of the oldest request in flight
		getBo      = backoff{min: t.s.opt.RetryMin, max: t.s.opt.RetryMax, rng: t.s.rng}
		patchBo    = getBo
		getHold    <-chan time.Time
		patchHold  <-chan time.Time
	)
	rid := func() string { nextRID++; return strconv.FormatUint(nextRID, 10) }
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if needGet && getRID == "" && getHold == nil {
			getRID = rid()
			if err := t.publish(iothub.TwinGetTopic(getRID), nil); err != nil {
				return err
			}
			sentAt = time.Now()
		}
		if patchRID == "" && patchHold == nil {
			if idx >= len(batch) && len(batch) > 0 {
				if err := t.tw.ReportedDone(ctx, t.dev); err != nil {
					return fmt.Errorf("cloudlink: twin of %s: %w", t.dev, err)
				}
				batch, idx = nil, 0
			}
			if batch == nil && needSync {
				needSync = false
				var err error
				if batch, err = t.tw.TakeReported(ctx, t.dev); err != nil {
					return fmt.Errorf("cloudlink: twin of %s: %w", t.dev, err)
				}
				if len(batch) == 0 {
					batch = nil
				}
			}
			if idx < len(batch) {
				b, err := json.Marshal(batch[idx])
				if err != nil {
					return fmt.Errorf("cloudlink: twin of %s: %w", t.dev, err)
				}
				patchRID = rid()
				if err := t.publish(iothub.TwinReportedTopic(patchRID), b); err != nil {
					return err
				}
				if getRID == "" {
					sentAt = time.Now()
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.s.twinWake:
			needSync = true
		case <-getHold:
			getHold = nil
		case <-patchHold:
			patchHold = nil
		case <-tick.C:
			if (getRID != "" || patchRID != "") && time.Since(sentAt) > twinTimeout {
				return fmt.Errorf("cloudlink: IoT Hub did not answer a twin request within %v", twinTimeout)
			}
		case m := <-t.in:
			tt, err := iothub.ParseTwinTopic(m.Topic())
			if err != nil {
				t.s.log.Warn("twin message ignored: bad topic", "topic", m.Topic(), "err", err)
				continue
			}
			switch {
			case tt.Op == iothub.TwinDesired:
				p, v, err := iothub.ParseDesiredPatch(m.Payload())
				if err != nil {
					t.s.log.Warn("desired patch from IoT Hub ignored; fetching the twin", "err", err)
					needGet = true
					continue
				}
				if desiredVer == 0 {
					continue // made before the GET was answered: its answer has it
				}
				if v > desiredVer+1 {
					needGet = true // one was missed: the full twin has it
					continue
				}
				if _, err := t.tw.PatchDesired(ctx, t.dev, p, v); err != nil {
					t.s.log.Warn("desired patch from IoT Hub not applied", "version", v, "err", err)
				}
				desiredVer = max(desiredVer, v)
			case tt.Op != iothub.TwinResponse:
			case tt.RID == getRID && getRID != "":
				getRID = ""
				sentAt = time.Now()
				switch st := tt.Status; {
				case st == iothub.StatusOK:
					getBo.reset()
					needGet = false
					tw, err := iothub.ParseTwin(m.Payload())
					if err != nil {
						t.s.log.Warn("twin from IoT Hub unreadable", "err", err)
						continue
					}
					desiredVer = tw.Desired.Version
					if err := t.tw.ReplaceDesired(ctx, t.dev, tw.Desired); err != nil {
						t.s.log.Warn("desired section from IoT Hub not applied", "version", tw.Desired.Version, "err", err)
					}
				case retryable(st):
					getHold = time.After(getBo.next())
				default:
					needGet = false
					t.s.log.Error("IoT Hub refused the twin GET", "status", st, "body", string(m.Payload()))
				}
			case tt.RID == patchRID && patchRID != "":
				patchRID = ""
				sentAt = time.Now()
				switch st := tt.Status; {
				case st == iothub.StatusNoContent || st == iothub.StatusOK:
					patchBo.reset()
					idx++
				case retryable(st):
					patchHold = time.After(patchBo.next())
				default:
					t.s.log.Error("IoT Hub refused a reported patch; it is skipped", "status", st, "body", string(m.Payload()))
					idx++
				}
			}
		}
	}
}

// retryable reports whether a twin request answered status may succeed
// when made again: throttled, or a server error.
func retryable(status int) bool {
	return status == iothub.StatusThrottled || status >= 500
}
