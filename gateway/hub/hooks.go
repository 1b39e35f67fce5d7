package hub

import (
	"bytes"
	"fmt"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// errQoS2 disconnects a client that sends a QoS 2 PUBLISH.
var errQoS2 = fmt.Errorf("hub: qos 2 not supported: %w", packets.ErrRejectPacket)

// mochiHook is the hub's single mochi hook: auth, ACL, ingest (OnPublish,
// in ingest.go) and C2D tracking. It must be the only hook providing
// OnConnectAuthenticate and OnACLCheck: mochi ORs those across hooks.
type mochiHook struct {
	mqtt.HookBase
	h *Hub
}

func (k *mochiHook) ID() string { return "outpost-hub" }

func (k *mochiHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnPacketRead,
		mqtt.OnPublish,
		mqtt.OnSubscribed,
		mqtt.OnQosComplete,
	}, []byte{b})
}

// OnConnect drops a will: it would be published without being stored.
func (k *mochiHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	cl.Properties.Will = mqtt.Will{}
	return nil
}

func (k *mochiHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	ok := k.h.authenticate(cl, pk)
	if !ok {
		k.h.stats.authFailures.Add(1)
		k.h.log.Debug("hub: login refused", "client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote)
	}
	return ok
}

func (k *mochiHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	ok := k.h.allowed(cl, topic, write)
	if !ok {
		k.h.stats.aclDenied.Add(1)
	}
	return ok
}

// OnPacketRead refuses QoS 2 before mochi would downgrade it (and answer a
// QoS 2 sender with a PUBACK it does not expect), answers a QoS 1 PUBLISH
// mochi would drop unanswered (refuseUnpublishable), and sees every PUBACK a
// leaf sends: mochi's own bookkeeping of outbound packet ids can be wiped
// by an inbound PUBLISH that reuses the id, so C2D completion is matched
// here rather than in OnQosComplete.
func (k *mochiHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch {
	case pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 1:
		k.h.stats.refused.Add(1)
		if cl.Properties.ProtocolVersion == 5 {
			_ = cl.WritePacket(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
				ReasonCode:  packets.ErrQosNotSupported.Code,
			})
		}
		return pk, errQoS2
	case pk.FixedHeader.Type == packets.Puback:
		k.h.c2d.puback(cl, pk.PacketID)
	case pk.FixedHeader.Type == packets.Publish:
		k.h.refuseUnpublishable(cl, pk)
	}
	return pk, nil
}

func (k *mochiHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	k.h.stats.connects.Add(1)
	k.h.loggedIn(cl)
	k.h.conns.Store(cl.Net.Conn, cl)
	k.h.c2d.online(cl)
	k.h.twinSubscribed(cl, nil)
}

func (k *mochiHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	var granted []string
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < 0x80 {
			granted = append(granted, f.Filter)
			if eventsOnlyFilter(f.Filter) {
				k.h.observed.Store(true)
			}
		}
	}
	k.h.c2d.online(cl)
	k.h.twinSubscribed(cl, granted)
}

func (k *mochiHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	k.h.conns.Delete(cl.Net.Conn)
	k.h.sas.forget(cl)
	k.h.c2d.offline(cl)
	k.h.ingestOffline(cl)
}

// afterPanic tidies up after a connection goroutine panicked: mochi skipped
// its disconnect handling, so the client would linger as connected.
func (h *Hub) afterPanic(conn net.Conn) {
	v, ok := h.conns.LoadAndDelete(conn)
	if !ok {
		return
	}
	cl := v.(*mqtt.Client)
	cl.Stop(fmt.Errorf("hub: connection panicked"))
	h.c2d.offline(cl)
	h.ingestOffline(cl)
	srv := h.server()
	if srv == nil {
		return
	}
	expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
	if cur, ok := srv.Clients.Get(cl.ID); ok && cur == cl && expire {
		srv.UnsubscribeClient(cl)
		srv.Clients.Delete(cl.ID)
	}
}
