package iothub

import (
	"fmt"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// C2D system property names, as they appear in a devicebound property bag.
// Those the gateway already carries on every message are msg's.
const (
	PropMessageID       = msg.PropMessageID
	PropCorrelationID   = msg.PropCorrelationID
	PropUserID          = "$.uid"
	PropContentType     = msg.PropContentType
	PropContentEncoding = msg.PropContentEncoding
	PropExpiry          = msg.PropExpiry
	PropTo              = "$.to"
	PropAck             = "iothub-ack"
)

// expiryLayout is how IoT Hub writes $.exp: UTC with seven fractional digits.
const expiryLayout = "2006-01-02T15:04:05.0000000Z"

// C2D is a cloud-to-device message's topic properties: the system
// properties IoT Hub sets (those present) and the application properties.
type C2D struct {
	MessageID, CorrelationID, UserID string
	ContentType, ContentEncoding     string
	// To is $.to, "/devices/{id}/messages/devicebound" as IoT Hub sets it.
	To string
	// Expiry is $.exp; zero when absent.
	Expiry time.Time
	// Ack is iothub-ack, the feedback the sender asked for (none,
	// positive, negative, full); "" when absent.
	Ack string
	// Props are the application properties, in order.
	Props msg.Props
}

// C2DTopic builds devices/{device}/messages/devicebound/{bag} for m. An
// empty To is set to "/devices/{device}/messages/devicebound", as IoT Hub
// does; empty system properties are left out.
func C2DTopic(device string, m C2D) string {
	if m.To == "" {
		m.To = "/devices/" + device + "/messages/devicebound"
	}
	return msg.DeviceboundTopic(device, m.bag())
}

func (m C2D) bag() msg.Props {
	var ps msg.Props
	add := func(k, v string) {
		if v != "" {
			ps = append(ps, msg.Prop{Key: k, Value: v})
		}
	}
	add(PropMessageID, m.MessageID)
	add(PropCorrelationID, m.CorrelationID)
	add(PropUserID, m.UserID)
	add(PropContentType, m.ContentType)
	add(PropContentEncoding, m.ContentEncoding)
	if !m.Expiry.IsZero() {
		add(PropExpiry, m.Expiry.UTC().Format(expiryLayout))
	}
	add(PropTo, m.To)
	add(PropAck, m.Ack)
	return append(ps, m.Props...)
}

// ParseC2DTopic splits a devicebound topic into its device id and message
// properties. $.exp must be an RFC 3339 time; other "$." names than the
// system properties above are kept among Props.
func ParseC2DTopic(topic string) (string, C2D, error) {
	device, ps, err := msg.ParseDeviceboundTopic(topic)
	if err != nil {
		return "", C2D{}, err
	}
	var m C2D
	for _, p := range ps {
		switch p.Key {
		case PropMessageID:
			m.MessageID = p.Value
		case PropCorrelationID:
			m.CorrelationID = p.Value
		case PropUserID:
			m.UserID = p.Value
		case PropContentType:
			m.ContentType = p.Value
		case PropContentEncoding:
			m.ContentEncoding = p.Value
		case PropTo:
			m.To = p.Value
		case PropAck:
			m.Ack = p.Value
		case PropExpiry:
			t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(p.Value))
			if err != nil {
				return "", C2D{}, fmt.Errorf("iothub: devicebound %s %q: %w", PropExpiry, p.Value, err)
			}
			if y := t.UTC().Year(); y < 1 || y > 9999 {
				return "", C2D{}, fmt.Errorf("iothub: devicebound %s %q: year out of range", PropExpiry, p.Value)
			}
			m.Expiry = t
		default:
			m.Props = append(m.Props, p)
		}
	}
	return device, m, nil
}
