package iothub

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Topic filters a device subscribes to.
const (
	TwinResponseFilter  = "$iothub/twin/res/#"
	TwinDesiredFilter   = "$iothub/twin/PATCH/properties/desired/#"
	MethodRequestFilter = "$iothub/methods/POST/#"
)

const (
	twinPrefix     = "$iothub/twin/"
	twinGet        = "GET"
	twinReported   = "PATCH/properties/reported"
	twinDesired    = "PATCH/properties/desired"
	twinRes        = "res/"
	methodsPrefix  = "$iothub/methods/"
	methodsPost    = "POST/"
	methodsRes     = "res/"
	maxMethodName  = 128
	maxRequestID   = 128
	maxStatusValue = 999
)

// Errors of the topic parsers.
var (
	ErrNotTwin   = errors.New("iothub: not a $iothub/twin topic")
	ErrNotMethod = errors.New("iothub: not a $iothub/methods topic")
)

// TwinOp is what a twin topic carries.
type TwinOp int

// Twin operations.
const (
	TwinGet      TwinOp = iota + 1 // device → hub: $iothub/twin/GET/?$rid=
	TwinReported                   // device → hub: $iothub/twin/PATCH/properties/reported/?$rid=
	TwinResponse                   // hub → device: $iothub/twin/res/{status}/?$rid=[&$version=]
	TwinDesired                    // hub → device: $iothub/twin/PATCH/properties/desired/?$version=
)

func (o TwinOp) String() string {
	switch o {
	case TwinGet:
		return "GET"
	case TwinReported:
		return "PATCH reported"
	case TwinResponse:
		return "response"
	case TwinDesired:
		return "PATCH desired"
	}
	return "TwinOp(" + strconv.Itoa(int(o)) + ")"
}

// TwinTopic is a parsed twin topic.
type TwinTopic struct {
	Op TwinOp
	// RID is the request id ($rid), percent-decoded: set for GET, reported
	// and responses.
	RID string
	// Status is the response's status (TwinResponse only).
	Status int
	// Version is $version (responses to a reported patch, desired
	// patches); 0 when absent. IoT Hub's versions start at 1.
	Version int64
}

// ParseTwinTopic parses a twin topic. The parameters follow "/?" (a "?"
// straight after the operation is accepted too); unknown parameters are
// ignored. GET, reported and responses need $rid, desired patches $version.
func ParseTwinTopic(topic string) (TwinTopic, error) {
	rest, ok := strings.CutPrefix(topic, twinPrefix)
	if !ok {
		return TwinTopic{}, ErrNotTwin
	}
	path, ps, err := splitParams(rest, ErrNotTwin)
	if err != nil {
		return TwinTopic{}, err
	}
	var t TwinTopic
	switch {
	case path == twinGet:
		t.Op = TwinGet
	case path == twinReported:
		t.Op = TwinReported
	case path == twinDesired:
		t.Op = TwinDesired
	case strings.HasPrefix(path, twinRes):
		t.Op = TwinResponse
		if t.Status, err = parseStatus(path[len(twinRes):]); err != nil {
			return TwinTopic{}, fmt.Errorf("%w: %v", ErrNotTwin, err)
		}
	default:
		return TwinTopic{}, fmt.Errorf("%w: unknown operation %.40q", ErrNotTwin, path)
	}
	rid, hasRID := ps.Get("$rid")
	if v, ok := ps.Get("$version"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return TwinTopic{}, fmt.Errorf("%w: bad $version %.20q", ErrNotTwin, v)
		}
		t.Version = n
	}
	if t.Op == TwinDesired {
		if t.Version == 0 {
			return TwinTopic{}, fmt.Errorf("%w: desired patch without $version", ErrNotTwin)
		}
		return t, nil
	}
	if err := checkRID(rid, hasRID); err != nil {
		return TwinTopic{}, fmt.Errorf("%w: %v", ErrNotTwin, err)
	}
	t.RID = rid
	return t, nil
}

// String builds the topic; it is the inverse of ParseTwinTopic.
func (t TwinTopic) String() string {
	switch t.Op {
	case TwinGet:
		return TwinGetTopic(t.RID)
	case TwinReported:
		return TwinReportedTopic(t.RID)
	case TwinResponse:
		return TwinResponseTopic(t.Status, t.RID, t.Version)
	case TwinDesired:
		return TwinDesiredTopic(t.Version)
	}
	return ""
}

// TwinGetTopic is $iothub/twin/GET/?$rid={rid}.
func TwinGetTopic(rid string) string { return twinPrefix + twinGet + "/?$rid=" + msg.Escape(rid) }

// TwinReportedTopic is $iothub/twin/PATCH/properties/reported/?$rid={rid}.
func TwinReportedTopic(rid string) string {
	return twinPrefix + twinReported + "/?$rid=" + msg.Escape(rid)
}

// TwinResponseTopic is $iothub/twin/res/{status}/?$rid={rid}, with
// &$version={version} when version > 0 (the answer to a reported patch).
func TwinResponseTopic(status int, rid string, version int64) string {
	s := twinPrefix + twinRes + strconv.Itoa(status) + "/?$rid=" + msg.Escape(rid)
	if version > 0 {
		s += "&$version=" + strconv.FormatInt(version, 10)
	}
	return s
}

// TwinDesiredTopic is $iothub/twin/PATCH/properties/desired/?$version={version}.
func TwinDesiredTopic(version int64) string {
	return twinPrefix + twinDesired + "/?$version=" + strconv.FormatInt(version, 10)
}

// MethodTopic is a parsed direct-method topic: a request
// ($iothub/methods/POST/{name}/?$rid=) or a response
// ($iothub/methods/res/{status}/?$rid=).
type MethodTopic struct {
	// Name is the method name (requests only).
	Name string
	// Status is the device's answer (responses only); Response tells which.
	Status   int
	Response bool
	// RID is the request id, percent-decoded.
	RID string
}

// ParseMethodTopic parses a direct-method topic. A method name is 1–128
// characters with no "/", "?", "#" or "+"; a status is an integer from 0 to
// 999 (the device chooses it); $rid is required.
func ParseMethodTopic(topic string) (MethodTopic, error) {
	rest, ok := strings.CutPrefix(topic, methodsPrefix)
	if !ok {
		return MethodTopic{}, ErrNotMethod
	}
	path, ps, err := splitParams(rest, ErrNotMethod)
	if err != nil {
		return MethodTopic{}, err
	}
	var m MethodTopic
	switch {
	case strings.HasPrefix(path, methodsPost):
		m.Name = path[len(methodsPost):]
		if err := ValidMethodName(m.Name); err != nil {
			return MethodTopic{}, fmt.Errorf("%w: %v", ErrNotMethod, err)
		}
	case strings.HasPrefix(path, methodsRes):
		m.Response = true
		if m.Status, err = parseStatus(path[len(methodsRes):]); err != nil {
			return MethodTopic{}, fmt.Errorf("%w: %v", ErrNotMethod, err)
		}
	default:
		return MethodTopic{}, fmt.Errorf("%w: unknown operation %.40q", ErrNotMethod, path)
	}
	rid, hasRID := ps.Get("$rid")
	if err := checkRID(rid, hasRID); err != nil {
		return MethodTopic{}, fmt.Errorf("%w: %v", ErrNotMethod, err)
	}
	m.RID = rid
	return m, nil
}

// String builds the topic; it is the inverse of ParseMethodTopic.
func (m MethodTopic) String() string {
	if m.Response {
		return MethodResponseTopic(m.Status, m.RID)
	}
	return MethodRequestTopic(m.Name, m.RID)
}

// MethodRequestTopic is $iothub/methods/POST/{name}/?$rid={rid}.
func MethodRequestTopic(name, rid string) string {
	return methodsPrefix + methodsPost + name + "/?$rid=" + msg.Escape(rid)
}

// MethodResponseTopic is $iothub/methods/res/{status}/?$rid={rid}.
func MethodResponseTopic(status int, rid string) string {
	return methodsPrefix + methodsRes + strconv.Itoa(status) + "/?$rid=" + msg.Escape(rid)
}

// ValidMethodName accepts a direct method's name: 1–128 printable ASCII
// characters without "/", "?", "#", "+" or a space (it is a topic level).
func ValidMethodName(name string) error {
	if name == "" || len(name) > maxMethodName {
		return fmt.Errorf("method name must be 1 to %d characters, got %d", maxMethodName, len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("/?#+", c) >= 0 {
			return fmt.Errorf("method name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// splitParams splits "{path}/?{bag}" (or "{path}?{bag}", or "{path}/") into
// the path and its decoded parameters. The path must not be empty.
func splitParams(s string, notOurs error) (string, msg.Props, error) {
	path, query, _ := strings.Cut(s, "?")
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return "", nil, notOurs
	}
	ps, err := msg.ParseBag(query)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", notOurs, err)
	}
	return path, ps, nil
}

func parseStatus(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxStatusValue || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("bad status %.20q", s)
	}
	return n, nil
}

func checkRID(rid string, ok bool) error {
	switch {
	case !ok || rid == "":
		return errors.New("no $rid")
	case len(rid) > maxRequestID:
		return fmt.Errorf("$rid longer than %d characters", maxRequestID)
	}
	return nil
}
