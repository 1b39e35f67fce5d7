package iothub

import (
	"bytes"
	"encoding/json"
	"time"
)

// Direct method limits, as IoT Hub's service API has them.
const (
	DefaultMethodTimeout = 30 * time.Second
	MinMethodTimeout     = 5 * time.Second
	MaxMethodTimeout     = 300 * time.Second
	// MaxConnectTimeout bounds connectTimeoutInSeconds (default 0: the
	// device must be connected now).
	MaxConnectTimeout = 300 * time.Second
	// MaxMethodPayloadBytes bounds a request's and a response's payload.
	MaxMethodPayloadBytes = 128 << 10
)

// MethodCall is the body of a direct method invocation as the service API
// (and the gateway's HTTP API) takes it:
// {"methodName":..., "payload":..., "responseTimeoutInSeconds":N, "connectTimeoutInSeconds":M}.
type MethodCall struct {
	// Name is methodName; the gateway's HTTP API takes it from the path.
	Name string `json:"methodName,omitempty"`
	// Payload is any JSON value; empty when absent.
	Payload json.RawMessage `json:"payload,omitempty"`
	// ResponseTimeout is how long the device has to answer once it has the
	// request (responseTimeoutInSeconds: 5–300, default 30).
	ResponseTimeout time.Duration `json:"-"`
	// ConnectTimeout is how long to wait for the device to connect
	// (connectTimeoutInSeconds: 0–300, default 0).
	ConnectTimeout time.Duration `json:"-"`
}

// ParseMethodCall reads a method invocation body. An empty body is a call
// with no payload and the default timeouts. A timeout out of range, a bad
// method name or malformed JSON is an *Error with status 400, a payload over
// MaxMethodPayloadBytes one with status 413.
func ParseMethodCall(b []byte) (MethodCall, error) {
	var w struct {
		Name            string          `json:"methodName"`
		Payload         json.RawMessage `json:"payload"`
		ResponseTimeout *float64        `json:"responseTimeoutInSeconds"`
		ConnectTimeout  *float64        `json:"connectTimeoutInSeconds"`
	}
	if len(bytes.TrimSpace(b)) > 0 {
		d := json.NewDecoder(bytes.NewReader(b))
		if err := d.Decode(&w); err != nil {
			return MethodCall{}, errorf(StatusBadRequest, "method call: malformed JSON: %v", err)
		}
		if d.More() {
			return MethodCall{}, errorf(StatusBadRequest, "method call: data after the object")
		}
	}
	c := MethodCall{Name: w.Name, ResponseTimeout: DefaultMethodTimeout}
	if c.Name != "" {
		if err := ValidMethodName(c.Name); err != nil {
			return MethodCall{}, errorf(StatusBadRequest, "%v", err)
		}
	}
	if len(w.Payload) > MaxMethodPayloadBytes {
		return MethodCall{}, errorf(StatusTooLarge, "method payload of %d bytes, more than %d", len(w.Payload), MaxMethodPayloadBytes)
	}
	if !bytes.Equal(bytes.TrimSpace(w.Payload), []byte("null")) {
		c.Payload = w.Payload
	}
	if w.ResponseTimeout != nil {
		d, err := seconds("responseTimeoutInSeconds", *w.ResponseTimeout, MinMethodTimeout, MaxMethodTimeout)
		if err != nil {
			return MethodCall{}, err
		}
		c.ResponseTimeout = d
	}
	if w.ConnectTimeout != nil {
		d, err := seconds("connectTimeoutInSeconds", *w.ConnectTimeout, 0, MaxConnectTimeout)
		if err != nil {
			return MethodCall{}, err
		}
		c.ConnectTimeout = d
	}
	return c, nil
}

// MethodTimeout is the response timeout for responseTimeoutInSeconds n
// (0 = absent: the default of 30 s); out of 5–300 it is an *Error with
// status 400.
func MethodTimeout(n int) (time.Duration, error) {
	if n == 0 {
		return DefaultMethodTimeout, nil
	}
	return seconds("responseTimeoutInSeconds", float64(n), MinMethodTimeout, MaxMethodTimeout)
}

func seconds(name string, n float64, lo, hi time.Duration) (time.Duration, error) {
	if n != float64(int64(n)) || n < lo.Seconds() || n > hi.Seconds() {
		return 0, errorf(StatusBadRequest, "%s must be a whole number from %d to %d, got %v", name, int(lo.Seconds()), int(hi.Seconds()), n)
	}
	return time.Duration(n) * time.Second, nil
}

// MethodResult is a method's outcome as the service API answers it:
// {"status":<device status>,"payload":<device payload>}.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// MarshalJSON writes payload null when the device answered with no body,
// and a body that is not JSON as a JSON string.
func (r MethodResult) MarshalJSON() ([]byte, error) {
	p := bytes.TrimSpace(r.Payload)
	switch {
	case len(p) == 0:
		p = []byte("null")
	case !json.Valid(p):
		q, err := json.Marshal(string(r.Payload))
		if err != nil {
			return nil, err
		}
		p = q
	}
	return json.Marshal(struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}{r.Status, p})
}
