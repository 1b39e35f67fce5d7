package cloudlink

import (
	"context"
	"fmt"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// intake takes C2D messages in, one at a time in receive order: Inbox first,
// PUBACK after. When Inbox fails, no further PUBACK is sent on this
// connection (they must go in receive order) and the connection is dropped,
// so the broker delivers the unacknowledged messages again.
func (s *Session) intake(ctx context.Context, cancel context.CancelCauseFunc, in <-chan paho.Message) error {
	for {
		var m paho.Message
		select {
		case m = <-in:
		case <-ctx.Done():
			return nil
		}
		if err := s.takeIn(ctx, m); err != nil {
			cancel(err)
			return nil // the connection ends; this is an outage, not a store failure of the forwarder
		}
		m.Ack()
	}
}

// takeIn hands one message to Inbox unless it is a recent duplicate.
func (s *Session) takeIn(ctx context.Context, m paho.Message) error {
	device, props, err := s.d.C2D(m.Topic())
	if err != nil {
		// Not a C2D topic we understand: it can never be taken in, so it is
		// acknowledged and dropped rather than redelivered forever.
		s.log.Warn("C2D message on an unexpected topic dropped", "topic", m.Topic(), "err", err)
		return nil
	}
	mid, _ := props.Get(msg.PropMessageID)
	if mid != "" && s.dedupe.seen(device, mid) {
		s.update(func(st *Status) { st.C2DDuplicates++ })
		s.log.Debug("duplicate C2D message acknowledged again", "device", device, "mid", mid)
		return nil
	}
	if err := s.opt.Inbox(ctx, device, props, m.Payload()); err != nil {
		return fmt.Errorf("cloudlink: C2D for %s ($.mid %q) not stored, not acknowledged: %w", device, mid, err)
	}
	if mid != "" {
		s.dedupe.add(device, mid)
	}
	s.update(func(st *Status) { st.C2D++ })
	return nil
}

// recentIDs remembers the last n (device, $.mid) pairs taken in, so a
// redelivered C2D message is acknowledged without being handed to Inbox
// twice within one process. Inbox itself must still be idempotent: this
// memory does not survive a restart.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (r *recentIDs) seen(device, mid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[device+"\x00"+mid]
	return ok
}

func (r *recentIDs) add(device, mid string) {
	k := device + "\x00" + mid
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[k]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = k
	r.set[k] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
