package iothub

import (
	"errors"
	"fmt"
	"strings"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// ErrUsername is wrapped by ParseUsername's errors.
var ErrUsername = errors.New("iothub: not an IoT Hub MQTT username")

// Username is the MQTT username of a device (or module) connecting to IoT
// Hub: "{host}/{deviceId}/?api-version={v}[&DeviceClientType=...][&model-id=...]".
type Username struct {
	// Host is the first segment: the IoT Hub's host name, or whatever the
	// device was configured with (a gateway's name).
	Host     string
	DeviceID string
	// ModuleID is set for a module identity ("{host}/{device}/{module}/?...").
	ModuleID string
	// APIVersion is api-version ("" when the device sent none).
	APIVersion string
	// ClientType is DeviceClientType, the SDK's user agent, decoded.
	ClientType string
	// ModelID is model-id (or modelId), an IoT Plug and Play model, decoded.
	ModelID string
}

// ParseUsername parses an IoT Hub MQTT username. Accepted forms:
//
//	{host}/{deviceId}/?api-version=2021-04-12&DeviceClientType=...   (current SDKs)
//	{host}/{deviceId}/api-version=2016-11-14&DeviceClientType=...    (older docs and SDKs)
//	{host}/{deviceId}/{moduleId}/?api-version=...                    (a module)
//	{host}/{deviceId}  or  {host}/{deviceId}/                        (no parameters)
//
// Host and ids are taken as written (IoT Hub does not URL-decode them); the
// device and module ids must be valid device ids (msg.ValidDeviceID). The
// parameters are a property bag, percent-decoded; unknown ones are ignored.
func ParseUsername(u string) (Username, error) {
	path, query, hasQuery := strings.Cut(u, "?")
	segs := strings.Split(path, "/")
	if n := len(segs); !hasQuery && n >= 3 && strings.Contains(segs[n-1], "=") {
		query, segs = segs[n-1], segs[:n-1]
	} else if n >= 3 && segs[n-1] == "" {
		segs = segs[:n-1]
	}
	if len(segs) != 2 && len(segs) != 3 {
		return Username{}, fmt.Errorf("%w: %.60q: want {host}/{deviceId}/?api-version=...", ErrUsername, u)
	}
	n := Username{Host: segs[0], DeviceID: segs[1]}
	if len(segs) == 3 {
		n.ModuleID = segs[2]
		if err := msg.ValidDeviceID(n.ModuleID); err != nil {
			return Username{}, fmt.Errorf("%w: module id: %v", ErrUsername, err)
		}
	}
	if n.Host == "" || strings.ContainsAny(n.Host, " \t") {
		return Username{}, fmt.Errorf("%w: %.60q: bad host", ErrUsername, u)
	}
	if err := msg.ValidDeviceID(n.DeviceID); err != nil {
		return Username{}, fmt.Errorf("%w: device id: %v", ErrUsername, err)
	}
	ps, err := msg.ParseBag(query)
	if err != nil {
		return Username{}, fmt.Errorf("%w: parameters: %v", ErrUsername, err)
	}
	for _, p := range ps {
		switch p.Key {
		case "api-version":
			n.APIVersion = p.Value
		case "DeviceClientType":
			n.ClientType = p.Value
		case "model-id", "modelId":
			n.ModelID = p.Value
		}
	}
	return n, nil
}

// String writes u in the current SDKs' form, "{host}/{device}/?api-version=..."
// (APIVersion defaults to DefaultAPIVersion).
func (u Username) String() string {
	s := u.Host + "/" + u.DeviceID + "/"
	if u.ModuleID != "" {
		s += u.ModuleID + "/"
	}
	v := u.APIVersion
	if v == "" {
		v = DefaultAPIVersion
	}
	s += "?api-version=" + msg.Escape(v)
	if u.ClientType != "" {
		s += "&DeviceClientType=" + msg.Escape(u.ClientType)
	}
	if u.ModelID != "" {
		s += "&model-id=" + msg.Escape(u.ModelID)
	}
	return s
}

// DefaultAPIVersion is the api-version IoT Hub's current device SDKs send.
const DefaultAPIVersion = "2021-04-12"
