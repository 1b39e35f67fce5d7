package msg

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Prop is one property of a message: a system property ($.mid, $.ct, ...) or
// an application property.
type Prop struct{ Key, Value string }

// Props is an ordered property list. Order is kept so that a message forwarded
// twice has the same topic both times.
type Props []Prop

// Get returns the value of key and whether it is present.
func (ps Props) Get(key string) (string, bool) {
	for _, p := range ps {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Set replaces key's value, or appends it.
func (ps Props) Set(key, value string) Props {
	for i := range ps {
		if ps[i].Key == key {
			ps[i].Value = value
			return ps
		}
	}
	return append(ps, Prop{key, value})
}

// Delete removes key.
func (ps Props) Delete(key string) Props {
	return slices.DeleteFunc(ps, func(p Prop) bool { return p.Key == key })
}

// systemOrder is the order in which IoT Hub's SDKs write system properties.
var systemOrder = []string{"$.mid", "$.cid", "$.uid", "$.ct", "$.ce", "$.exp", "$.ctime", "$.to"}

// Encode returns the property bag as IoT Hub wants it: system properties
// first in the SDKs' order, then application properties sorted by name, each
// name and value percent-encoded with no safe characters beyond RFC 3986's
// unreserved set (so a space is %20, never +).
func (ps Props) Encode() string {
	sorted := slices.Clone(ps)
	rank := func(k string) int {
		if i := slices.Index(systemOrder, k); i >= 0 {
			return i
		}
		if strings.HasPrefix(k, "$.") {
			return len(systemOrder)
		}
		return len(systemOrder) + 1
	}
	slices.SortStableFunc(sorted, func(a, b Prop) int {
		if d := rank(a.Key) - rank(b.Key); d != 0 {
			return d
		}
		if rank(a.Key) < len(systemOrder) {
			return 0
		}
		return strings.Compare(a.Key, b.Key)
	})
	var b strings.Builder
	for i, p := range sorted {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(Escape(p.Key))
		b.WriteByte('=')
		b.WriteString(Escape(p.Value))
	}
	return b.String()
}

// Escape percent-encodes s keeping only A-Z a-z 0-9 - _ . ~ (Python's
// quote(s, safe="")), with upper-case hex.
func Escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// ParseBag decodes a property bag ("k=v&k2=v2", optionally with a leading
// "?"). Only percent-decoding is applied: a "+" stays a "+". A name without
// "=" has an empty value.
func ParseBag(s string) (Props, error) {
	s = strings.TrimPrefix(s, "?")
	if s == "" {
		return nil, nil
	}
	var ps Props
	for part := range strings.SplitSeq(s, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("msg: property name %q: %w", k, err)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("msg: property %q value: %w", dk, err)
		}
		if dk == "" {
			return nil, fmt.Errorf("msg: property bag %q: empty name", s)
		}
		ps = append(ps, Prop{dk, dv})
	}
	return ps, nil
}

const (
	eventsInfix      = "/messages/events"
	deviceboundInfix = "/messages/devicebound"
)

// EventsTopic is devices/{device}/messages/events/{bag}.
func EventsTopic(device string, ps Props) string {
	return "devices/" + device + eventsInfix + "/" + ps.Encode()
}

// DeviceboundTopic is devices/{device}/messages/devicebound/{bag}.
func DeviceboundTopic(device string, ps Props) string {
	return "devices/" + device + deviceboundInfix + "/" + ps.Encode()
}

// ErrNotEvents is returned by ParseEventsTopic for a topic outside the D2C shape.
var ErrNotEvents = errors.New("msg: not a devices/{id}/messages/events topic")

// ErrNotDevicebound is returned by ParseDeviceboundTopic for a topic outside the C2D shape.
var ErrNotDevicebound = errors.New("msg: not a devices/{id}/messages/devicebound topic")

// ParseEventsTopic splits a D2C topic into its device id and property bag.
// devices/{id}/messages/events, .../events/ and .../events/{bag} are accepted.
func ParseEventsTopic(topic string) (device string, ps Props, err error) {
	return parseTopic(topic, eventsInfix, ErrNotEvents)
}

// ParseDeviceboundTopic splits a C2D topic into its device id and property bag.
func ParseDeviceboundTopic(topic string) (device string, ps Props, err error) {
	return parseTopic(topic, deviceboundInfix, ErrNotDevicebound)
}

func parseTopic(topic, infix string, notOurs error) (string, Props, error) {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return "", nil, notOurs
	}
	i := strings.Index(rest, infix)
	if i <= 0 {
		return "", nil, notOurs
	}
	device, tail := rest[:i], rest[i+len(infix):]
	if err := ValidDeviceID(device); err != nil {
		return "", nil, err
	}
	if tail != "" {
		bag, ok := strings.CutPrefix(tail, "/")
		if !ok || strings.Contains(bag, "/") {
			return "", nil, notOurs
		}
		ps, err := ParseBag(bag)
		if err != nil {
			return "", nil, err
		}
		return device, ps, nil
	}
	return device, nil, nil
}

// ValidDeviceID accepts IoT Hub's device id alphabet (ASCII letters, digits
// and - : . % _ * ? ! ( ) , = @ ; $ '), up to 128 characters, and refuses the
// MQTT wildcards + and #, and /, which IoT Hub allows but MQTT topics cannot carry.
func ValidDeviceID(id string) error {
	if id == "" {
		return errors.New("msg: empty device id")
	}
	if len(id) > 128 {
		return fmt.Errorf("msg: device id %.20q...: longer than 128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-:._%*?!(),=@;$'", c) >= 0:
		default:
			return fmt.Errorf("msg: device id %q: character %q not allowed", id, c)
		}
	}
	return nil
}
