package hubtest

import (
	"bytes"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// hook is the hub's mochi hook: authentication, enforcement, recording.
type hook struct {
	mqtt.HookBase
	h *Hub
}

func (k *hook) ID() string { return "hubtest" }

func (k *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnPublish,
	}, []byte{b})
}

func (k *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	exp, err := k.h.authenticate(cl, pk)
	if err != nil {
		k.h.note(Event{Device: cl.ID, Kind: Refused, Detail: err.Error()})
		return false
	}
	// IoT Hub severs the connection when its token expires.
	t := time.AfterFunc(exp.Sub(k.h.opt.Now()), func() {
		k.h.note(Event{Device: cl.ID, Kind: Expired, Detail: "SAS token expired; connection severed"})
		cl.Stop(fmt.Errorf("hubtest: token expired"))
	})
	k.h.mu.Lock()
	k.h.expiry[cl] = t
	k.h.mu.Unlock()
	return true
}

func (k *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	k.h.note(Event{Device: cl.ID, Kind: Connect, Detail: fmt.Sprintf("clean=%v keepalive=%d", pk.Connect.Clean, pk.Connect.Keepalive)})
	k.h.resendC2D(cl.ID) // a resumed session is subscribed already
}

// OnSubscribed sends the device's queued C2D to a new subscription.
func (k *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	k.h.resendC2D(cl.ID)
}

func (k *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	k.h.mu.Lock()
	t, ok := k.h.expiry[cl]
	delete(k.h.expiry, cl)
	k.h.mu.Unlock()
	if !ok {
		return // never authenticated
	}
	t.Stop()
	detail := "closed"
	if err != nil {
		detail = err.Error()
	}
	k.h.note(Event{Device: cl.ID, Kind: Disconnect, Detail: detail})
}

// OnACLCheck: a device writes only its own events topic and reads only its
// own documented topics (the checks that drop the connection are in
// OnPacketRead).
func (k *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return k.h.checkPublish(cl.ID, packets.Packet{TopicName: topic}) == nil
	}
	return allowedFilter(cl.ID, topic) || isOwnDevicebound(cl.ID, topic)
}

func isOwnDevicebound(id, topic string) bool {
	dev, _, err := msg.ParseDeviceboundTopic(topic)
	return err == nil && dev == id
}

// OnPacketRead drops the connection on a protocol violation, as IoT Hub
// does, and counts C2D completions (a device's PUBACK).
func (k *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	var bad error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		bad = k.h.checkPublish(cl.ID, pk)
	case packets.Subscribe:
		for _, f := range pk.Filters {
			if !allowedFilter(cl.ID, f.Filter) {
				bad = fmt.Errorf("SUBSCRIBE to %q", f.Filter)
				break
			}
		}
	case packets.Puback:
		// Still in mochi's in-flight map: the PUBACK is read first.
		if out, ok := cl.State.Inflight.Get(pk.PacketID); ok {
			k.h.completeC2D(cl.ID, out.TopicName)
		}
	case packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		bad = fmt.Errorf("QoS 2 flow packet %s", packets.PacketNames[pk.FixedHeader.Type])
	}
	if bad != nil {
		k.h.note(Event{Device: cl.ID, Kind: Violation, Detail: bad.Error()})
		cl.Stop(fmt.Errorf("hubtest: %w", bad))
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnSubscribe grants at most QoS 1.
func (k *hook) OnSubscribe(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	for i := range pk.Filters {
		pk.Filters[i].Qos = min(pk.Filters[i].Qos, 1)
	}
	return pk
}

// OnPublish records an accepted D2C message (before its PUBACK is sent).
func (k *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if ok, _ := isTwinOrMethod(pk.TopicName); ok {
		k.h.twinOrMethod(cl, pk.TopicName, pk.Payload)
		return pk, nil
	}
	dev, ps, err := msg.ParseEventsTopic(pk.TopicName)
	if err != nil {
		return pk, packets.ErrRejectPacket // checked in OnPacketRead already
	}
	d := D2C{Device: dev, Topic: pk.TopicName, Props: ps, Payload: append([]byte(nil), pk.Payload...), QoS: pk.FixedHeader.Qos, At: time.Now()}
	k.h.mu.Lock()
	k.h.d2c = append(k.h.d2c, d)
	k.h.signalLocked()
	k.h.mu.Unlock()
	return pk, nil
}
