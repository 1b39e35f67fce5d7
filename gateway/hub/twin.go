package hub

import (
	"context"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// Twins takes the device twin and direct method traffic of leaves, as IoT
// Hub's device SDKs send it on $iothub/ topics; *twins.Manager satisfies
// it. Errors are *iothub.Error with the status IoT Hub would answer (any
// other error answers 500).
//
// Get returns the body of a twin GET's answer; PatchReported applies a
// reported patch and returns the new reported $version; MethodResponse
// takes a leaf's answer to a direct method call (false when no call of
// that leaf has the request id); Subscribed is called, on a goroutine of
// its own, when a leaf's connection is subscribed to desired property
// updates (a subscribe, or a session resumed with it).
type Twins interface {
	Get(ctx context.Context, device string) ([]byte, error)
	PatchReported(ctx context.Context, device string, body []byte) (int64, error)
	MethodResponse(device, rid string, status int, payload []byte) bool
	Subscribed(ctx context.Context, device string)
}

// twinRequestTimeout bounds the handling of one twin request (a store
// write).
const twinRequestTimeout = 10 * time.Second

// twinFilters are the $iothub filters a leaf may subscribe to (or to a
// filter within one of them). What arrives on them is written to that
// leaf's connection only, never routed through the broker.
var twinFilters = []string{iothub.TwinResponseFilter, iothub.TwinDesiredFilter, iothub.MethodRequestFilter}

// iothubAllowed is the ACL of $iothub topics when the hub has Twins: a
// leaf publishes twin requests and method answers, and subscribes to the
// answers, desired updates and method requests. Every one of them concerns
// the connection's own device.
func (h *Hub) iothubAllowed(topic string, write bool) bool {
	if h.opt.Twins == nil || !strings.HasPrefix(topic, "$iothub/") {
		return false
	}
	if write {
		return strings.HasPrefix(topic, "$iothub/twin/GET/") || strings.HasPrefix(topic, "$iothub/twin/GET?") ||
			strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/reported/") ||
			strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/reported?") ||
			strings.HasPrefix(topic, "$iothub/methods/res/")
	}
	for _, f := range twinFilters {
		if topic == f || strings.HasPrefix(topic, strings.TrimSuffix(f, "#")) {
			return true
		}
	}
	return false
}

// iothubPublish handles a leaf's PUBLISH on a $iothub/ topic (the ACL let
// only twin requests and method answers through): it is answered on the
// leaf's twin response topic, in order with the leaf's other messages
// (the entry e, like a D2C message, gets its PUBACK after the ones before
// it). A topic that does not parse is refused like a D2C message the
// store refused. It returns what OnPublish returns: mochi answers nothing.
func (h *Hub) iothubPublish(cl *mqtt.Client, pk packets.Packet) error {
	ci := h.ingestFor(cl)
	select {
	case ci.slots <- struct{}{}:
	case <-h.closing:
		cl.Stop(ErrClosed)
		return errRejected
	}
	e := &entry{pid: pk.PacketID, qos: pk.FixedHeader.Qos, topic: pk.TopicName, cmd: true}
	ci.mu.Lock()
	ci.q = append(ci.q, e)
	ci.mu.Unlock()
	ci.complete(e, h.iothubHandle(cl, pk))
	return errRejected
}

func (h *Hub) iothubHandle(cl *mqtt.Client, pk packets.Packet) error {
	if strings.HasPrefix(pk.TopicName, "$iothub/methods/") {
		m, err := iothub.ParseMethodTopic(pk.TopicName)
		if err != nil {
			return fmt.Errorf("hub: %s: %w", cl.ID, err)
		}
		if !m.Response {
			return fmt.Errorf("hub: %s: a leaf may not publish a method request", cl.ID)
		}
		if !h.opt.Twins.MethodResponse(cl.ID, m.RID, m.Status, pk.Payload) {
			h.stats.methodUnmatched.Add(1)
			h.log.Debug("hub: method answer for no call of this leaf's; dropped", "client", cl.ID, "rid", m.RID)
		}
		return nil
	}
	t, err := iothub.ParseTwinTopic(pk.TopicName)
	if err != nil {
		return fmt.Errorf("hub: %s: %w", cl.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), twinRequestTimeout)
	defer cancel()
	var body []byte
	var version int64
	status := iothub.StatusOK
	switch t.Op {
	case iothub.TwinGet:
		body, err = h.opt.Twins.Get(ctx, cl.ID)
	case iothub.TwinReported:
		status = iothub.StatusNoContent
		version, err = h.opt.Twins.PatchReported(ctx, cl.ID, pk.Payload)
	default:
		return fmt.Errorf("hub: %s: a leaf may not publish a twin %s", cl.ID, t.Op)
	}
	if err != nil {
		status, version = iothub.StatusOf(err), 0
		body = twinErrorBody(status, err)
		h.stats.twinRefused.Add(1)
		h.log.Debug("hub: twin request refused", "client", cl.ID, "op", t.Op.String(), "status", status, "error", err)
	}
	h.stats.twinRequests.Add(1)
	if err := writeLeaf(cl, iothub.TwinResponseTopic(status, t.RID, version), body); err != nil {
		h.log.Debug("hub: twin answer not written", "client", cl.ID, "error", err)
	}
	return nil
}

// twinErrorBody is {"errorCode":status×1000+1,"message":...}, as IoT Hub
// words a failed twin request; the SDKs report the request as failed.
func twinErrorBody(status int, err error) []byte {
	return fmt.Appendf(nil, `{"errorCode":%d,"message":%q}`, status*1000+1, err.Error())
}

// twinSubscribed tells Twins of a connection that is subscribed to desired
// updates; granted are the filters just granted, or nil to look at the
// session's subscriptions (a session resumed).
func (h *Hub) twinSubscribed(cl *mqtt.Client, granted []string) {
	if h.opt.Twins == nil || cl.Net.Inline {
		return
	}
	found := false
	if granted == nil {
		_, found = cl.State.Subscriptions.Get(iothub.TwinDesiredFilter)
	}
	for _, f := range granted {
		found = found || f == iothub.TwinDesiredFilter
	}
	if !found {
		return
	}
	select {
	case <-h.closing:
		return
	default:
	}
	h.writers.Add(1)
	go func() {
		defer h.writers.Done()
		ctx, cancel := context.WithTimeout(context.Background(), twinRequestTimeout)
		defer cancel()
		h.opt.Twins.Subscribed(ctx, cl.ID)
	}()
}

// SendLeaf writes payload on topic to device's current connection as a
// QoS 0 PUBLISH, past the broker (no other client sees it); it is how
// twin answers, desired updates and method requests reach a leaf. It
// fails when the device is not connected.
func (h *Hub) SendLeaf(device, topic string, payload []byte) error {
	cl, err := h.leafConn(device)
	if err != nil {
		return err
	}
	return writeLeaf(cl, topic, payload)
}

// Subscribed reports whether device is connected now with a subscription
// to exactly filter (the SDKs subscribe to iothub's *Filter constants).
func (h *Hub) Subscribed(device, filter string) bool {
	cl, err := h.leafConn(device)
	if err != nil {
		return false
	}
	_, ok := cl.State.Subscriptions.Get(filter)
	return ok
}

func (h *Hub) leafConn(device string) (*mqtt.Client, error) {
	srv := h.server()
	if srv == nil {
		return nil, ErrClosed
	}
	cl, ok := srv.Clients.Get(device)
	if !ok || cl.Closed() || cl.Net.Inline {
		return nil, fmt.Errorf("hub: %s is not connected", device)
	}
	return cl, nil
}

func writeLeaf(cl *mqtt.Client, topic string, payload []byte) error {
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	})
}
