package hub

import (
	"errors"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// ErrStoreFull may be wrapped by an Appender's error to say the store is
// full; an MQTT 5 leaf then gets PUBACK reason 0x97 (quota exceeded).
// Errors with a method Full() bool returning true count as well.
var ErrStoreFull = errors.New("hub: store full")

// ErrTooLarge is the refusal of a payload above MaxMessageBytes.
var ErrTooLarge = errors.New("hub: message too large")

func isFull(err error) bool {
	if errors.Is(err, ErrStoreFull) {
		return true
	}
	var f interface{ Full() bool }
	return errors.As(err, &f) && f.Full()
}

// record turns a leaf's PUBLISH into an outbox record.
func (h *Hub) record(cl *mqtt.Client, pk packets.Packet) (*msg.Record, error) {
	dev, ps, err := msg.ParseEventsTopic(pk.TopicName)
	if err != nil {
		return nil, err
	}
	if dev != cl.ID {
		return nil, fmt.Errorf("hub: %s may not publish for %s", cl.ID, dev)
	}
	if len(pk.Payload) > h.opt.MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(pk.Payload), h.opt.MaxMessageBytes)
	}
	r := &msg.Record{Device: dev, Payload: pk.Payload, Priority: msg.Normal}
	if c, ok := h.clients[dev]; ok {
		r.Priority = c.Priority
	}
	if mid, ok := ps.Get(msg.PropMessageID); ok {
		r.ID = mid
		ps = ps.Delete(msg.PropMessageID)
	}
	r.Props = ps.Delete(msg.PropSeq)
	if len(r.Props) == 0 {
		r.Props = nil
	}
	return r, nil
}

// refusalCode is the MQTT 5 PUBACK reason for a refused message.
func refusalCode(err error) packets.Code {
	switch {
	case isFull(err):
		return packets.ErrQuotaExceeded
	case errors.Is(err, ErrTooLarge):
		return packets.Code{Code: packets.ErrPacketTooLarge.Code, Reason: "message too large"}
	case errors.Is(err, msg.ErrNotEvents):
		return packets.ErrTopicNameInvalid
	}
	return packets.ErrUnspecifiedError
}

// OnPublish stores a leaf's message before mochi acknowledges it.
func (k *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	h := k.h
	h.stats.received.Add(1)
	r, err := h.record(cl, pk)
	if err == nil {
		done := make(chan error, 1)
		h.out.Submit([]*msg.Record{r}, func(err error) { done <- err })
		err = <-done
	}
	if err != nil {
		return pk, h.refuse(cl, pk, err)
	}
	h.stats.stored.Add(1)
	pk.TopicName = r.Topic()
	pk.FixedHeader.Retain = false
	return pk, nil
}

// refuse decides what a leaf hears about a message that was not stored and
// returns the error for OnPublish. It never lets mochi send a success PUBACK:
// MQTT 5 QoS 1 gets a failure reason code; MQTT 3.1.1 has none, so the
// client is disconnected and sends the message again after reconnecting.
func (h *Hub) refuse(cl *mqtt.Client, pk packets.Packet, err error) error {
	h.stats.refused.Add(1)
	if isFull(err) {
		h.stats.refusedFull.Add(1)
	}
	h.log.Debug("hub: message refused", "client", cl.ID, "topic", pk.TopicName, "error", err)
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return refusalCode(err)
	}
	if pk.FixedHeader.Qos > 0 {
		cl.Stop(err)
	}
	return fmt.Errorf("hub: %w: %w", packets.ErrRejectPacket, err)
}

// ingestOffline is called when a client's connection ends.
func (h *Hub) ingestOffline(cl *mqtt.Client) {}
