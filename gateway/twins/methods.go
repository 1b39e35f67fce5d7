package twins

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// calls are the direct method calls awaiting their leaf's answer, by $rid.
type calls struct {
	mu   sync.Mutex
	next uint64
	m    map[string]*call
}

type call struct {
	device string
	res    chan iothub.MethodResult // cap 1
}

// connectPoll is how often Call looks whether a leaf has connected while
// connectTimeoutInSeconds lasts.
const connectPoll = 100 * time.Millisecond

// Call invokes direct method c.Name on device as IoT Hub's service API
// does: the leaf gets it on $iothub/methods/POST/{name}/?$rid= and its
// answer on $iothub/methods/res/{status}/?$rid= (MethodResponse) is the
// result. A leaf that is not connected and subscribed to method requests
// (within c.ConnectTimeout, default none) is a 404 at once; no answer
// within c.ResponseTimeout is a 504. Errors are *iothub.Error, or ctx's.
func (m *Manager) Call(ctx context.Context, device string, c iothub.MethodCall) (iothub.MethodResult, error) {
	if !m.opt.Known(device) {
		return iothub.MethodResult{}, errorf(iothub.StatusNotFound, "no device %q on this gateway", device)
	}
	if err := iothub.ValidMethodName(c.Name); err != nil {
		return iothub.MethodResult{}, errorf(iothub.StatusBadRequest, "%v", err)
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = iothub.DefaultMethodTimeout
	}
	if m.local(device) {
		return m.opt.Local.Call(ctx, device, c)
	}
	if !m.waitSubscribed(ctx, device, c.ConnectTimeout) {
		if err := ctx.Err(); err != nil {
			return iothub.MethodResult{}, err
		}
		return iothub.MethodResult{}, errorf(iothub.StatusNotFound, "device %s is not connected (or not subscribed to direct methods)", device)
	}
	cl := &call{device: device, res: make(chan iothub.MethodResult, 1)}
	m.calls.mu.Lock()
	m.calls.next++
	rid := strconv.FormatUint(m.calls.next, 10)
	m.calls.m[rid] = cl
	m.calls.mu.Unlock()
	defer func() {
		m.calls.mu.Lock()
		delete(m.calls.m, rid)
		m.calls.mu.Unlock()
	}()
	payload := c.Payload
	if len(payload) == 0 {
		payload = []byte("null") // the SDKs parse the body as JSON
	}
	if err := m.opt.Send(device, iothub.MethodRequestTopic(c.Name, rid), payload); err != nil {
		return iothub.MethodResult{}, errorf(iothub.StatusNotFound, "device %s is not connected: %v", device, err)
	}
	timer := time.NewTimer(c.ResponseTimeout)
	defer timer.Stop()
	select {
	case r := <-cl.res:
		return r, nil
	case <-timer.C:
		return iothub.MethodResult{}, errorf(iothub.StatusTimeout, "device %s did not answer method %s within %v", device, c.Name, c.ResponseTimeout)
	case <-ctx.Done():
		return iothub.MethodResult{}, ctx.Err()
	}
}

// waitSubscribed reports whether device is subscribed to method requests,
// waiting up to d for it.
func (m *Manager) waitSubscribed(ctx context.Context, device string, d time.Duration) bool {
	if m.opt.Subscribed(device, iothub.MethodRequestFilter) {
		return true
	}
	if d <= 0 {
		return false
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(connectPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return m.opt.Subscribed(device, iothub.MethodRequestFilter)
		case <-tick.C:
			if m.opt.Subscribed(device, iothub.MethodRequestFilter) {
				return true
			}
		}
	}
}

// MethodResponse takes device's answer to the call with request id rid.
// It reports false when no call of device's has that id (answered
// already, timed out, or another device's call), and then the answer is
// dropped.
func (m *Manager) MethodResponse(device, rid string, status int, payload []byte) bool {
	m.calls.mu.Lock()
	cl := m.calls.m[rid]
	if cl == nil || cl.device != device {
		m.calls.mu.Unlock()
		return false
	}
	delete(m.calls.m, rid)
	m.calls.mu.Unlock()
	cl.res <- iothub.MethodResult{Status: status, Payload: append([]byte(nil), payload...)}
	return true
}
