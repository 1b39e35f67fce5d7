package hubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// Twins and direct methods, as IOTHUB.md §5 describes IoT Hub's:
//
//   - $iothub/twin/GET/?$rid={rid} is answered on $iothub/twin/res/200/?$rid={rid}
//     with {"desired":{...,"$version":n},"reported":{...,"$version":m}}.
//   - A reported patch on $iothub/twin/PATCH/properties/reported/?$rid={rid}
//     is merged (null deletes) and answered 204 with &$version={new version};
//     400 for malformed JSON or names and values against IoT Hub's rules,
//     413 when the section would pass 32 KB, 429 while Throttle is on.
//   - SetDesired merges a patch into the desired section and pushes it on
//     $iothub/twin/PATCH/properties/desired/?$version={v} to the device's
//     connection, when it is subscribed (IoT Hub pushes only while connected).
//   - InvokeMethod sends $iothub/methods/POST/{name}/?$rid={rid} and waits
//     for $iothub/methods/res/{status}/?$rid={rid}: 404 at once for a device
//     not connected and subscribed, 504 after responseTimeoutInSeconds
//     (5–300, default 30).
//
// Responses go to the requesting connection only, at QoS 0, and only
// while it is subscribed to $iothub/twin/res/#.

// twinOf returns device's twin, creating it empty; h.mu is held.
func (h *Hub) twinOf(device string) *iothub.Twin {
	t := h.twins[device]
	if t == nil {
		nt := iothub.NewTwin()
		t = &nt
		h.twins[device] = t
	}
	return t
}

// Twin returns device's twin as the hub holds it.
func (h *Hub) Twin(device string) iothub.Twin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return *h.twinOf(device)
}

// ReportedPatches returns the reported patches device had applied, in
// the order applied.
func (h *Hub) ReportedPatches(device string) []iothub.Patch {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]iothub.Patch(nil), h.reported[device]...)
}

// TwinRequests counts the twin requests (GET and reported) of device that
// got each status.
func (h *Hub) TwinRequests(device string, op iothub.TwinOp, status int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.twinReqs[twinReq{device, op, status}]
}

type twinReq struct {
	device string
	op     iothub.TwinOp
	status int
}

// Throttle makes the hub answer every twin request 429 while on.
func (h *Hub) Throttle(on bool) {
	h.mu.Lock()
	h.throttled = on
	h.mu.Unlock()
}

// SetDesired merges patch into device's desired section and pushes it to
// the device when it is connected and subscribed to desired updates. It
// returns the new desired $version; a patch against IoT Hub's rules is an
// *iothub.Error (400, 413).
func (h *Hub) SetDesired(device string, patch map[string]any) (int64, error) {
	if _, ok := h.deviceKey(device); !ok {
		return 0, &iothub.Error{Status: iothub.StatusNotFound, Msg: "no device " + device}
	}
	// Numbers as a device would read them from JSON.
	b, err := json.Marshal(patch)
	if err != nil {
		return 0, err
	}
	p, err := iothub.ParsePatch(b)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	t := h.twinOf(device)
	if err := t.Desired.Apply(p); err != nil {
		h.mu.Unlock()
		return 0, err
	}
	v := t.Desired.Version
	body := make(map[string]any, len(p)+1)
	for k, x := range p {
		body[k] = x
	}
	body["$version"] = v
	h.signalLocked()
	h.mu.Unlock()
	b, err = json.Marshal(body)
	if err != nil {
		return 0, err
	}
	if cl, ok := h.srv.Clients.Get(device); ok && subscribed(cl, iothub.TwinDesiredFilter) {
		_ = send(cl, iothub.TwinDesiredTopic(v), b)
	}
	return v, nil
}

// InvokeMethod calls direct method name on device as IoT Hub's service
// API does, with responseTimeoutInSeconds timeout (0: the default 30 s).
// Errors are *iothub.Error: 400 for a bad name or timeout, 404 when the
// device is not connected and subscribed to methods, 504 when it does not
// answer in time.
func (h *Hub) InvokeMethod(ctx context.Context, device, name string, payload []byte, timeout int) (iothub.MethodResult, error) {
	if err := iothub.ValidMethodName(name); err != nil {
		return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusBadRequest, Msg: err.Error()}
	}
	d, err := iothub.MethodTimeout(timeout)
	if err != nil {
		return iothub.MethodResult{}, err
	}
	cl, ok := h.srv.Clients.Get(device)
	if !ok || cl.Closed() || !subscribed(cl, iothub.MethodRequestFilter) {
		return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusNotFound, Msg: "device " + device + " is not online"}
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	h.mu.Lock()
	h.nextRID++
	rid := "m" + strconv.Itoa(h.nextRID)
	res := make(chan iothub.MethodResult, 1)
	h.methods[device+"\x00"+rid] = res
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.methods, device+"\x00"+rid)
		h.mu.Unlock()
	}()
	if err := send(cl, iothub.MethodRequestTopic(name, rid), payload); err != nil {
		return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusNotFound, Msg: "device " + device + " is not online: " + err.Error()}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-res:
		return r, nil
	case <-t.C:
		return iothub.MethodResult{}, &iothub.Error{Status: iothub.StatusTimeout, Msg: fmt.Sprintf("device %s did not answer %s within %v", device, name, d)}
	case <-ctx.Done():
		return iothub.MethodResult{}, ctx.Err()
	}
}

func subscribed(cl *mqtt.Client, filter string) bool {
	_, ok := cl.State.Subscriptions.Get(filter)
	return ok
}

// send writes a QoS 0 PUBLISH to cl alone: the twin and method topics are
// the same for every device, so they must not go through the topic tree.
func send(cl *mqtt.Client, topic string, payload []byte) error {
	return cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: payload})
}

// isTwinOrMethod reports whether a device's PUBLISH topic is one of the
// twin or method requests it may send; err says why not when it starts
// like one.
func isTwinOrMethod(topic string) (bool, error) {
	switch {
	case strings.HasPrefix(topic, "$iothub/twin/"):
		t, err := iothub.ParseTwinTopic(topic)
		if err != nil {
			return true, err
		}
		if t.Op != iothub.TwinGet && t.Op != iothub.TwinReported {
			return true, fmt.Errorf("PUBLISH of a twin %s", t.Op)
		}
		return true, nil
	case strings.HasPrefix(topic, "$iothub/methods/"):
		m, err := iothub.ParseMethodTopic(topic)
		if err != nil {
			return true, err
		}
		if !m.Response {
			return true, fmt.Errorf("PUBLISH of a method request")
		}
		return true, nil
	}
	return false, nil
}

// twinOrMethod handles a device's twin request or method response.
func (h *Hub) twinOrMethod(cl *mqtt.Client, topic string, payload []byte) {
	if strings.HasPrefix(topic, "$iothub/methods/") {
		m, err := iothub.ParseMethodTopic(topic)
		if err != nil {
			return
		}
		h.mu.Lock()
		res := h.methods[cl.ID+"\x00"+m.RID]
		delete(h.methods, cl.ID+"\x00"+m.RID)
		h.mu.Unlock()
		if res != nil {
			res <- iothub.MethodResult{Status: m.Status, Payload: append([]byte(nil), payload...)}
		}
		return
	}
	t, err := iothub.ParseTwinTopic(topic)
	if err != nil {
		return
	}
	status, version, body := h.twinRequest(cl.ID, t.Op, payload)
	h.mu.Lock()
	h.twinReqs[twinReq{cl.ID, t.Op, status}]++
	h.signalLocked()
	h.mu.Unlock()
	if subscribed(cl, iothub.TwinResponseFilter) {
		_ = send(cl, iothub.TwinResponseTopic(status, t.RID, version), body)
	}
}

// twinRequest applies one twin request of device and returns the answer.
func (h *Hub) twinRequest(device string, op iothub.TwinOp, payload []byte) (status int, version int64, body []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fail := func(err error) (int, int64, []byte) {
		st := iothub.StatusOf(err)
		b, _ := json.Marshal(map[string]any{"errorCode": st*1000 + 1, "message": err.Error()})
		return st, 0, b
	}
	if h.throttled {
		return fail(&iothub.Error{Status: iothub.StatusThrottled, Msg: "throttled"})
	}
	t := h.twinOf(device)
	if op == iothub.TwinGet {
		b, err := json.Marshal(*t)
		if err != nil {
			return fail(err)
		}
		return iothub.StatusOK, 0, b
	}
	p, err := iothub.ParsePatch(payload)
	if err != nil {
		return fail(err)
	}
	if err := t.Reported.Apply(p); err != nil {
		return fail(err)
	}
	h.reported[device] = append(h.reported[device], p)
	return iothub.StatusNoContent, t.Reported.Version, nil
}
