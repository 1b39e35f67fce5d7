// Package dialect is what differs between a generic MQTT broker and Azure
// IoT Hub on the cloud link: the client id and credentials of a connection,
// the D2C topic of a record, and the C2D subscription and its topics.
package dialect

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Dialect is one upstream identity's way of speaking.
type Dialect interface {
	ClientID() string
	// Credentials returns the username and password for a connection made
	// now, and when they expire (zero: never).
	Credentials(now time.Time) (user, pass string, expires time.Time, err error)
	// Topic is the D2C topic of rec.
	Topic(rec *msg.Record) string
	// C2DFilter is the C2D subscription filter.
	C2DFilter() string
	// C2D splits a C2D topic into the target device and the property bag.
	C2D(topic string) (device string, props msg.Props, err error)
}

// PropDevice names the leaf device in a message that travels under the
// gateway's identity (azure identity "gateway"): D2C records of a leaf carry
// it, and a C2D message carrying it is meant for that leaf.
const PropDevice = "outpost-device"

// MQTT is a generic broker: records go on their own topics
// (msg.Record.Topic), C2D arrives on Filter.
type MQTT struct {
	ID, User, Pass string
	Filter         string
}

func (d MQTT) ClientID() string { return d.ID }
func (d MQTT) Credentials(time.Time) (string, string, time.Time, error) {
	return d.User, d.Pass, time.Time{}, nil
}
func (d MQTT) Topic(rec *msg.Record) string { return rec.Topic() }
func (d MQTT) C2DFilter() string            { return d.Filter }
func (d MQTT) C2D(topic string) (string, msg.Props, error) {
	return msg.ParseDeviceboundTopic(topic)
}

// Azure speaks IoT Hub's MQTT 3.1.1 endpoint for one identity.
type Azure struct {
	Host, Device string
	Key          string // base64; empty with X.509
	KeyName      string // shared access policy name; empty for a device key
	TTL          time.Duration
}

func (d Azure) ClientID() string { return d.Device }

func (d Azure) Credentials(now time.Time) (string, string, time.Time, error) {
	user := iothub.Username{Host: d.Host, DeviceID: d.Device}.String()
	if d.Key == "" { // X.509: the TLS handshake authenticates
		return user, "", time.Time{}, nil
	}
	k, err := iothub.DecodeKey(d.Key)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("cloudlink: sas key: %w", err)
	}
	exp := now.Add(d.TTL).Truncate(time.Second)
	return user, iothub.Sign(iothub.DeviceResource(d.Host, d.Device), k, exp, d.KeyName), exp, nil
}

// topic sends every record under the gateway's identity; a leaf's id goes in
// the outpost-device property.
func (d Azure) Topic(r *msg.Record) string {
	ps := make(msg.Props, 0, len(r.Props)+3)
	ps = append(ps, msg.Prop{Key: msg.PropMessageID, Value: r.ID})
	ps = append(ps, r.Props...)
	ps = append(ps, msg.Prop{Key: msg.PropSeq, Value: strconv.FormatUint(r.Seq, 10)})
	if r.Device != d.Device {
		ps = ps.Set(PropDevice, r.Device)
	}
	// IoT Hub routes on the body only with a JSON $.ct and $.ce=utf-8.
	if ct, _ := ps.Get(msg.PropContentType); IsJSON(ct) {
		if _, ok := ps.Get(msg.PropContentEncoding); !ok {
			ps = append(ps, msg.Prop{Key: msg.PropContentEncoding, Value: "utf-8"})
		}
	}
	return msg.EventsTopic(d.Device, ps)
}

func (d Azure) C2DFilter() string { return "devices/" + d.Device + "/messages/devicebound/#" }

func (d Azure) C2D(topic string) (string, msg.Props, error) {
	dev, ps, err := msg.ParseDeviceboundTopic(topic)
	if err != nil {
		return "", nil, err
	}
	if dev != d.Device {
		return "", nil, fmt.Errorf("cloudlink: C2D for %q on %q's connection", dev, d.Device)
	}
	if leaf, ok := ps.Get(PropDevice); ok {
		if err := msg.ValidDeviceID(leaf); err != nil {
			return "", nil, err
		}
		return leaf, ps, nil
	}
	return dev, ps, nil
}

// IsJSON reports whether a content type is JSON (application/json or
// +json), which IoT Hub routes on.
func IsJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
