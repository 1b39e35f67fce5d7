package iothub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Limits of a twin, as IoT Hub enforces them (and Azure IoT Edge's hub
// copies them).
const (
	// MaxSectionBytes bounds the desired and the reported section each,
	// counted as IoT Hub counts (SectionSize).
	MaxSectionBytes = 32 << 10
	// MaxDepth is the deepest nesting of objects and arrays in a section.
	MaxDepth = 10
	// MaxNameBytes bounds a property name (UTF-8).
	MaxNameBytes = 1024
	// MaxStringBytes bounds a string value (UTF-8).
	MaxStringBytes = 4096
	// MaxSafeInt and MinSafeInt bound integer values (±2^52).
	MaxSafeInt = 1<<52 - 1
	MinSafeInt = -1 << 52
)

const versionKey = "$version"

// Patch is a JSON merge patch of a twin section: a member set to nil
// deletes that property, an object merges into an object, any other value
// replaces. Numbers are json.Number, so they keep their text.
type Patch map[string]any

// Section is the desired or the reported section of a twin: its properties
// and its $version, which grows by one with every applied patch.
type Section struct {
	Props   map[string]any
	Version int64
}

// Twin is a device twin's properties as a device sees them.
type Twin struct {
	Desired  Section
	Reported Section
}

// NewTwin returns an empty twin, each section at version 1 as IoT Hub
// creates them.
func NewTwin() Twin {
	return Twin{Desired: Section{Props: map[string]any{}, Version: 1}, Reported: Section{Props: map[string]any{}, Version: 1}}
}

// MarshalJSON writes the section with its "$version" member.
func (s Section) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(s.Props)+1)
	maps.Copy(m, s.Props)
	m[versionKey] = s.Version
	return json.Marshal(m)
}

// UnmarshalJSON reads a section with its "$version" member (other "$"
// members, such as "$metadata", are dropped).
func (s *Section) UnmarshalJSON(b []byte) error {
	m, err := decodeObject(b)
	if err != nil {
		return err
	}
	v, err := takeVersion(m)
	if err != nil {
		return err
	}
	for k := range m {
		if len(k) > 0 && k[0] == '$' {
			delete(m, k)
		}
	}
	s.Props, s.Version = m, v
	return nil
}

// MarshalJSON writes {"desired":{...,"$version":n},"reported":{...,"$version":m}},
// the body of a twin GET response.
func (t Twin) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Desired  Section `json:"desired"`
		Reported Section `json:"reported"`
	}{t.Desired, t.Reported})
}

// ParseTwin reads a twin GET response body.
func ParseTwin(b []byte) (Twin, error) {
	var w struct {
		Desired  *Section `json:"desired"`
		Reported *Section `json:"reported"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return Twin{}, errorf(StatusBadRequest, "twin: %v", err)
	}
	t := NewTwin()
	if w.Desired != nil {
		t.Desired = *w.Desired
	}
	if w.Reported != nil {
		t.Reported = *w.Reported
	}
	return t, nil
}

// ParsePatch reads a reported patch as a device sends it: a JSON object
// whose names and values obey IoT Hub's rules (ValidatePatch). Malformed
// JSON and broken rules are *Error with status 400.
func ParsePatch(b []byte) (Patch, error) {
	m, err := decodeObject(b)
	if err != nil {
		return nil, err
	}
	p := Patch(m)
	if err := ValidatePatch(p); err != nil {
		return nil, err
	}
	return p, nil
}

// ParseDesiredPatch reads a desired patch as IoT Hub pushes it, with its
// "$version" member (required), which it returns apart from the patch.
func ParseDesiredPatch(b []byte) (Patch, int64, error) {
	m, err := decodeObject(b)
	if err != nil {
		return nil, 0, err
	}
	v, err := takeVersion(m)
	if err != nil {
		return nil, 0, err
	}
	if v == 0 {
		return nil, 0, errorf(StatusBadRequest, "desired patch without $version")
	}
	p := Patch(m)
	if err := ValidatePatch(p); err != nil {
		return nil, 0, err
	}
	return p, v, nil
}

func decodeObject(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, errorf(StatusBadRequest, "malformed JSON: %v", err)
	}
	if d.More() {
		return nil, errorf(StatusBadRequest, "malformed JSON: data after the object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errorf(StatusBadRequest, "want a JSON object")
	}
	return m, nil
}

func takeVersion(m map[string]any) (int64, error) {
	raw, ok := m[versionKey]
	if !ok {
		return 0, nil
	}
	delete(m, versionKey)
	n, ok := raw.(json.Number)
	if !ok {
		return 0, errorf(StatusBadRequest, "$version is not a number")
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v < 0 {
		return 0, errorf(StatusBadRequest, "bad $version %s", n)
	}
	return v, nil
}

// ValidatePatch checks p against IoT Hub's rules for twin properties:
// names of 1–1024 bytes without control characters, white space, ".", "$"
// or "#"; objects and arrays at most MaxDepth deep; strings of at most 4096
// bytes; integers within ±2^52; no null inside an array, nor in an object
// inside one (null elsewhere deletes). Values must be what encoding/json decodes with UseNumber.
func ValidatePatch(p Patch) error {
	return validateObject(p, 1, false)
}

func validateObject(m map[string]any, depth int, inArray bool) error {
	if depth > MaxDepth {
		return errorf(StatusBadRequest, "nested deeper than %d", MaxDepth)
	}
	for k, v := range m {
		if err := validName(k); err != nil {
			return err
		}
		if err := validateValue(k, v, depth, inArray); err != nil {
			return err
		}
	}
	return nil
}

func validateValue(name string, v any, depth int, inArray bool) error {
	switch v := v.(type) {
	case nil:
		if inArray {
			return errorf(StatusBadRequest, "property %q: null inside an array", name)
		}
	case bool:
	case string:
		if len(v) > MaxStringBytes {
			return errorf(StatusBadRequest, "property %q: string of %d bytes, more than %d", name, len(v), MaxStringBytes)
		}
	case json.Number:
		if i, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			if i > MaxSafeInt || i < MinSafeInt {
				return errorf(StatusBadRequest, "property %q: integer %d out of range ±2^52", name, i)
			}
		} else if _, err := strconv.ParseFloat(v.String(), 64); err != nil {
			return errorf(StatusBadRequest, "property %q: number %s out of range", name, v)
		}
	case map[string]any:
		return validateObject(v, depth+1, inArray)
	case []any:
		if depth+1 > MaxDepth {
			return errorf(StatusBadRequest, "nested deeper than %d", MaxDepth)
		}
		for _, e := range v {
			if err := validateValue(name, e, depth+1, true); err != nil {
				return err
			}
		}
	default:
		return errorf(StatusBadRequest, "property %q: unsupported value %T", name, v)
	}
	return nil
}

func validName(k string) error {
	if k == "" || len(k) > MaxNameBytes {
		return errorf(StatusBadRequest, "property name of %d bytes (want 1 to %d)", len(k), MaxNameBytes)
	}
	if !utf8.ValidString(k) {
		return errorf(StatusBadRequest, "property name %q is not UTF-8", k)
	}
	for _, r := range k {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '.' || r == '$' || r == '#' {
			return errorf(StatusBadRequest, "property name %q: character %q not allowed", k, r)
		}
	}
	return nil
}

// Apply merges p into s (RFC 7386 merge patch: null deletes, objects merge,
// anything else replaces; later wins) and counts one more version. A patch
// that would make the section larger than MaxSectionBytes changes nothing
// and is an *Error with status 413; p must have passed ValidatePatch. The
// properties are copied on write: maps returned earlier are not changed.
func (s *Section) Apply(p Patch) error {
	next := mergeInto(s.Props, p)
	if n := SectionSize(next); n > MaxSectionBytes {
		return errorf(StatusTooLarge, "section would be %d bytes, more than %d", n, MaxSectionBytes)
	}
	s.Props = next
	s.Version++
	return nil
}

// Merge returns the merge patch p applied to target, leaving both unchanged.
func Merge(target map[string]any, p Patch) map[string]any { return mergeInto(target, p) }

func mergeInto(target map[string]any, p Patch) map[string]any {
	out := make(map[string]any, len(target)+len(p))
	maps.Copy(out, target)
	for k, v := range p {
		switch v := v.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			old, _ := out[k].(map[string]any)
			out[k] = mergeInto(old, v)
		default:
			out[k] = v
		}
	}
	return out
}

// SectionSize is a section's size as IoT Hub counts it: for every property
// the length of its name plus that of its value, where a string counts its
// UTF-8 bytes less control characters, a number 8 bytes, a boolean 4, and
// an object or array the sum of its members.
func SectionSize(props map[string]any) int {
	n := 0
	for k, v := range props {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(v any) int {
	switch v := v.(type) {
	case string:
		n := 0
		for _, r := range v {
			if !unicode.IsControl(r) {
				n += utf8.RuneLen(r)
			}
		}
		return n
	case json.Number, float64, int, int64:
		return 8
	case bool:
		return 4
	case map[string]any:
		return SectionSize(v)
	case []any:
		n := 0
		for _, e := range v {
			n += valueSize(e)
		}
		return n
	}
	return 0
}

// String is the section as JSON (for logs and tests).
func (s Section) String() string {
	b, err := s.MarshalJSON()
	if err != nil {
		return fmt.Sprintf("section(%v)", err)
	}
	return string(b)
}
