package msg

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Reading is what an adapter produces per poll or event: named values of one
// device at one time. A point that failed carries its error in Errors
// instead of a value, so nothing is silently dropped.
type Reading struct {
	Device string
	Time   time.Time
	Values map[string]any
	Errors map[string]string
}

// ContentTypeJSON is the $.ct of readings and command results.
const ContentTypeJSON = "application/json"

// TimeFormat is the timestamp layout in reading bodies: UTC, milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// Body is the D2C body of a reading:
// {"ts":"2026-11-27T08:00:00.123Z","values":{...},"errors":{...}}.
func (r Reading) Body() []byte {
	type body struct {
		TS     string            `json:"ts"`
		Values map[string]any    `json:"values"`
		Errors map[string]string `json:"errors,omitempty"`
	}
	vals := r.Values
	if vals == nil {
		vals = map[string]any{}
	}
	b, err := json.Marshal(body{r.Time.UTC().Format(TimeFormat), vals, r.Errors})
	if err != nil {
		// Values hold only numbers, bools and strings; anything else is a
		// programming error in an adapter. Report it in-band.
		b, _ = json.Marshal(body{TS: r.Time.UTC().Format(TimeFormat), Values: map[string]any{}, Errors: map[string]string{"_": err.Error()}})
	}
	return b
}

// Record turns the reading into an outbox record (ID and Seq are assigned at append).
func (r Reading) Record(p Priority) *Record {
	return &Record{
		Device:   r.Device,
		Priority: p,
		Props:    Props{{PropContentType, ContentTypeJSON}},
		Payload:  r.Body(),
	}
}

// Command is one cloud-to-device command for an adapter device, decoded from
// its C2D body. Exactly one of Write, Send, Pulse is set.
type Command struct {
	ID       string // the C2D message's $.mid
	Device   string
	Deadline time.Time
	Write    map[string]any           // {"write":{"setpoint":21.5}}
	Send     *string                  // {"send":"RESET\r\n"}
	Pulse    map[string]time.Duration // {"pulse":{"relay":"500ms"}}
}

// ParseCommand decodes a C2D body into a Command.
func ParseCommand(id, device string, deadline time.Time, body []byte) (Command, error) {
	var raw struct {
		Write map[string]any    `json:"write"`
		Send  *string           `json:"send"`
		Pulse map[string]string `json:"pulse"`
	}
	c := Command{ID: id, Device: device, Deadline: deadline}
	if err := json.Unmarshal(body, &raw); err != nil {
		return c, fmt.Errorf("msg: command body: %w", err)
	}
	n := 0
	if raw.Write != nil {
		n++
		c.Write = raw.Write
	}
	if raw.Send != nil {
		n++
		c.Send = raw.Send
	}
	if raw.Pulse != nil {
		n++
		c.Pulse = make(map[string]time.Duration, len(raw.Pulse))
		for k, v := range raw.Pulse {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return c, fmt.Errorf("msg: command pulse %q: bad duration %q", k, v)
			}
			c.Pulse[k] = d
		}
	}
	if n != 1 {
		return c, errors.New(`msg: command body needs exactly one of "write", "send", "pulse"`)
	}
	return c, nil
}

// Command result states.
const (
	StatusDone     = "done"
	StatusFailed   = "failed"
	StatusRejected = "rejected"
	StatusExpired  = "expired"
)

// Result is the outcome of a command, sent upstream as one D2C message with
// type=command-result and $.cid = the command's id.
type Result struct {
	Status string         `json:"status"`
	Error  string         `json:"error,omitempty"`
	Values map[string]any `json:"values,omitempty"`
}
