package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// ErrStoreFull may be wrapped by an Appender's error to say the store is
// full; an MQTT 5 leaf then gets PUBACK reason 0x97 (quota exceeded).
// Errors with a method Full() bool returning true, and store.ErrFull, count
// as well.
var ErrStoreFull = errors.New("hub: store full")

// ErrTooLarge is the refusal of a payload above MaxMessageBytes.
var ErrTooLarge = errors.New("hub: message too large")

// errRejected is what OnPublish returns for every leaf message: the hub,
// not mochi, answers it (see connIngest).
var errRejected = fmt.Errorf("hub: handled by the hub: %w", packets.ErrRejectPacket)

func isFull(err error) bool {
	if errors.Is(err, ErrStoreFull) || errors.Is(err, store.ErrFull) {
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
	if len(pk.Payload) > int(h.opt.MaxMessageBytes) {
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
	if err := checkUpstreamTopic(r, pk.TopicName); err != nil {
		return nil, err
	}
	return r, nil
}

// refusalCode is the MQTT 5 PUBACK reason for a refused message.
func refusalCode(err error) packets.Code {
	switch {
	case isFull(err):
		return packets.ErrQuotaExceeded
	case errors.Is(err, ErrTooLarge):
		return packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: "message too large"}
	case errors.Is(err, ErrTopicTooLong):
		return packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: "upstream topic too long"}
	case errors.Is(err, errNotPublishable):
		return packets.ErrTopicNameInvalid
	case errors.Is(err, msg.ErrNotEvents):
		return packets.ErrTopicNameInvalid
	}
	return packets.ErrUnspecifiedError
}

// OnPublish takes a leaf's message off mochi's path: it is submitted to
// the store and answered by the client's connIngest in receive order once
// the store has answered (see connIngest.run). Returning ErrRejectPacket makes
// mochi send nothing and fan out nothing itself. When MaxInflight messages
// of this client already await their PUBACK, OnPublish blocks, and so does
// the reading of this client's connection: TCP flow control then slows the
// client down.
func (k *mochiHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	h := k.h
	if h.opt.Twins != nil && strings.HasPrefix(pk.TopicName, "$iothub/") {
		return pk, h.iothubPublish(cl, pk)
	}
	h.stats.received.Add(1)
	ci := h.ingestFor(cl)
	select {
	case ci.slots <- struct{}{}:
	case <-h.closing:
		cl.Stop(ErrClosed)
		return pk, errRejected
	}
	e := &entry{pid: pk.PacketID, qos: pk.FixedHeader.Qos, topic: pk.TopicName}
	if dev, ps, err := msg.ParseDeviceboundTopic(pk.TopicName); err == nil {
		// An operator's command (the ACL let only operators publish here).
		e.cmd = true
		ci.mu.Lock()
		ci.q = append(ci.q, e)
		ci.mu.Unlock()
		payload := append([]byte(nil), pk.Payload...)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ci.complete(e, h.opt.Commands(ctx, dev, ps, payload))
		}()
		return pk, errRejected
	}
	r, err := h.record(cl, pk)
	ci.mu.Lock()
	ci.q = append(ci.q, e)
	ci.mu.Unlock()
	if err != nil {
		ci.complete(e, poisonError{err})
		return pk, errRejected
	}
	e.rec = r
	h.stats.pending.Add(1)
	h.out.Submit([]*msg.Record{r}, func(err error) {
		h.stats.pending.Add(-1)
		ci.complete(e, err)
	})
	return pk, errRejected
}

// entry is one received PUBLISH awaiting its answer.
type entry struct {
	pid   uint16
	qos   byte
	topic string
	rec   *msg.Record
	cmd   bool // an operator's command, not a D2C record
	done  bool
	err   error
}

// connIngest is the ingest state of one connection: its received messages
// in order, and a goroutine that sends their PUBACKs (and fans them out) in
// that order as the store completes them. MQTT requires PUBACKs in receive
// order; the store's group commit completes them in order too, but
// connIngest does not rely on it.
type connIngest struct {
	h     *Hub
	cl    *mqtt.Client
	v5    bool
	slots chan struct{} // one per message awaiting its answer
	wake  chan struct{} // cap 1

	mu     sync.Mutex
	q      []*entry
	ended  bool // the connection is gone: drain, answer nothing
	killed bool // a 3.1.1 client was disconnected for a refusal
}

// ingestFor returns cl's connIngest, creating it (and starting its run
// goroutine) on the client's first PUBLISH.
func (h *Hub) ingestFor(cl *mqtt.Client) *connIngest {
	if v, ok := h.ingests.Load(cl); ok {
		return v.(*connIngest)
	}
	ci := &connIngest{
		h:     h,
		cl:    cl,
		v5:    cl.Properties.ProtocolVersion == 5,
		slots: make(chan struct{}, h.opt.MaxInflight),
		wake:  make(chan struct{}, 1),
	}
	h.ingests.Store(cl, ci)
	h.writers.Add(1)
	go ci.run()
	return ci
}

func (ci *connIngest) complete(e *entry, err error) {
	ci.mu.Lock()
	e.done, e.err = true, err
	ci.mu.Unlock()
	ci.poke()
}

func (ci *connIngest) poke() {
	select {
	case ci.wake <- struct{}{}:
	default:
	}
}

// ingestOffline is called when a client's connection ends: its connIngest
// answers nothing more, but still fans out what gets stored.
func (h *Hub) ingestOffline(cl *mqtt.Client) {
	v, ok := h.ingests.LoadAndDelete(cl)
	if !ok {
		return
	}
	ci := v.(*connIngest)
	ci.mu.Lock()
	ci.ended = true
	ci.mu.Unlock()
	ci.poke()
}

// run answers completed entries from the head of the queue until the
// connection has ended and nothing is left.
func (ci *connIngest) run() {
	defer ci.h.writers.Done()
	var ready []*entry
	var acks []byte
	for range ci.wake {
		ci.mu.Lock()
		n := 0
		for n < len(ci.q) && ci.q[n].done {
			n++
		}
		ready = append(ready[:0], ci.q[:n]...)
		ci.q = append(ci.q[:0], ci.q[n:]...)
		quiet := ci.ended || ci.killed
		finished := ci.ended && len(ci.q) == 0
		ci.mu.Unlock()

		acks = acks[:0]
		for _, e := range ready {
			if e.err != nil {
				acks = ci.refuse(e, acks, quiet)
				quiet = quiet || ci.killedNow()
				continue
			}
			if !e.cmd {
				ci.h.stats.stored.Add(1)
			}
			if e.qos > 0 && !quiet {
				acks = append(acks, 0x40, 2, byte(e.pid>>8), byte(e.pid))
			}
		}
		ci.write(acks)
		for range ready {
			<-ci.slots
		}
		for _, e := range ready {
			if e.err == nil && !e.cmd {
				if err := ci.h.Publish(e.rec); err != nil && !errors.Is(err, ErrClosed) {
					ci.h.log.Debug("hub: fan-out failed", "device", e.rec.Device, "error", err)
				}
			}
		}
		if finished {
			return
		}
	}
}

func (ci *connIngest) killedNow() bool {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	return ci.killed
}

// refuse answers a message that was not stored. MQTT 5 QoS 1 gets a
// failure reason code. MQTT 3.1.1 has none: a message that could be stored
// later (a store error) disconnects the client (after the PUBACKs before
// it), which sends it again after reconnecting; one that never can (too
// large, a bad or too long topic: a poisonError) is acknowledged and
// dropped, counted in Stats.Dropped and logged. A refused QoS 0 message is
// dropped.
func (ci *connIngest) refuse(e *entry, acks []byte, quiet bool) []byte {
	h := ci.h
	h.stats.refused.Add(1)
	if isFull(e.err) {
		h.stats.refusedFull.Add(1)
	}
	h.log.Debug("hub: message refused", "client", ci.cl.ID, "topic", e.topic, "error", e.err)
	if quiet || e.qos == 0 {
		return acks
	}
	if ci.v5 {
		code := refusalCode(e.err)
		return append(acks, 0x40, 3, byte(e.pid>>8), byte(e.pid), code.Code)
	}
	if isPoison(e.err) {
		h.dropPoison(ci.cl.ID, e.topic, e.err)
		return append(acks, 0x40, 2, byte(e.pid>>8), byte(e.pid))
	}
	ci.write(acks)
	ci.mu.Lock()
	ci.killed = true
	ci.mu.Unlock()
	ci.cl.Stop(e.err)
	return acks[:0]
}

// write sends encoded PUBACKs in one write, under the client's lock (which
// mochi's WritePacket takes too, so packets never interleave).
func (ci *connIngest) write(b []byte) {
	if len(b) == 0 || ci.cl.Closed() {
		return
	}
	ci.cl.Lock()
	_, err := ci.cl.Net.Conn.Write(b)
	ci.cl.Unlock()
	if err != nil {
		ci.cl.Stop(err)
	}
}
