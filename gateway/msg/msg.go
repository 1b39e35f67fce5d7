// Package msg holds the message types every part of Outpost shares: a D2C
// record as the store keeps it, an adapter reading, a C2D command and its
// result, the IoT Hub-shaped topics and property bags they travel in, and the
// byte Size that the parts' configs use for their message and queue caps.
//
// It is a leaf package: it imports only the standard library, and nothing in
// it does I/O.
package msg

import (
	"fmt"
	"strings"
	"time"
)

// Priority orders records in the outbox: High drains before Normal, Normal
// before Low, and eviction under drop-oldest starts with Low.
type Priority uint8

// Priorities, most urgent first. The zero value is High so that the numeric
// order is the drain order; use Normal when nothing is configured.
const (
	High Priority = iota
	Normal
	Low
	NumPriorities = 3
)

func (p Priority) String() string {
	switch p {
	case High:
		return "high"
	case Normal:
		return "normal"
	case Low:
		return "low"
	}
	return fmt.Sprintf("priority(%d)", uint8(p))
}

// ParsePriority reads "high", "normal" or "low"; "" means Normal.
func ParsePriority(s string) (Priority, error) {
	switch strings.ToLower(s) {
	case "", "normal":
		return Normal, nil
	case "high":
		return High, nil
	case "low":
		return Low, nil
	}
	return Normal, fmt.Errorf("msg: unknown priority %q (want high, normal or low)", s)
}

// Well-known property names. System properties use IoT Hub's wire names.
const (
	PropMessageID       = "$.mid"
	PropCorrelationID   = "$.cid"
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropExpiry          = "$.exp"
	// PropSeq carries the gateway's outbox sequence number upstream.
	PropSeq = "outpost-seq"
	// PropType marks gateway-made messages: "command-result", "gap".
	PropType = "type"
)

// Record is one device-to-cloud message as the outbox keeps it.
//
// Seq, and ID when empty, are assigned by the store at append; Props holds
// every property except $.mid (which is ID) and outpost-seq (which is Seq).
type Record struct {
	Seq      uint64
	ID       string
	Device   string
	Priority Priority
	Props    Props
	Payload  []byte
	Enqueued time.Time
}

// Size is the record's share of the store budget and of an upstream
// message-size cap: payload plus property names and values.
func (r *Record) Size() int {
	n := len(r.Payload) + len(r.ID) + len(r.Device)
	for _, p := range r.Props {
		n += len(p.Key) + len(p.Value)
	}
	return n
}

// Topic is the record's D2C topic with $.mid and outpost-seq in its property
// bag, as forwarded upstream.
func (r *Record) Topic() string {
	ps := make(Props, 0, len(r.Props)+2)
	ps = append(ps, Prop{PropMessageID, r.ID})
	ps = append(ps, r.Props...)
	ps = append(ps, Prop{PropSeq, fmt.Sprint(r.Seq)})
	return EventsTopic(r.Device, ps)
}
