package serial

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A parser turns one frame into named values. It must not keep frame (the
// framer reuses it) and must not panic on any input: a frame that does not
// parse is an error, counted by the device, never fatal.
type parser func(frame []byte) (map[string]any, error)

// newParser builds the parser a validated Parse selects, with scaling.
func newParser(p Parse) (parser, error) {
	var base parser
	switch {
	case p.Regex != "":
		re, err := regexp.Compile(p.Regex)
		if err != nil {
			return nil, fmt.Errorf("serial: parse.regex: %w", err)
		}
		base = regexParser(re)
	case p.KV:
		base = parseKV
	case p.JSON:
		base = parseJSON
	case p.NMEA:
		fields := p.Fields
		base = func(frame []byte) (map[string]any, error) { return parseNMEA(frame, fields) }
	case p.Raw == "base64":
		base = func(frame []byte) (map[string]any, error) {
			return map[string]any{"raw": base64.StdEncoding.EncodeToString(frame)}, nil
		}
	default: // raw text
		base = func(frame []byte) (map[string]any, error) {
			return map[string]any{"raw": strings.ToValidUTF8(string(frame), "\uFFFD")}, nil
		}
	}
	if len(p.Scale) == 0 {
		return base, nil
	}
	scale := p.Scale
	return func(frame []byte) (map[string]any, error) {
		vs, err := base(frame)
		if err != nil {
			return nil, err
		}
		for k, f := range scale {
			if v, ok := vs[k].(float64); ok {
				vs[k] = v * f
			}
		}
		return vs, nil
	}, nil
}

// number returns s as a float64 when it is a finite number, else s itself.
func number(s string) any {
	t := strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(t, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		// ParseFloat also takes "Inf", "NaN" and hex floats; a sensor's
		// number is plain decimal.
		if t != "" && strings.IndexFunc(t, func(r rune) bool { return r >= 'a' && r <= 'z' && r != 'e' || r >= 'A' && r <= 'Z' && r != 'E' }) < 0 {
			return f
		}
	}
	return t
}

func regexParser(re *regexp.Regexp) parser {
	names := re.SubexpNames()
	return func(frame []byte) (map[string]any, error) {
		if !utf8.Valid(frame) {
			return nil, errors.New("not valid UTF-8 text")
		}
		m := re.FindSubmatchIndex(frame)
		if m == nil {
			return nil, errors.New("regex does not match")
		}
		vs := make(map[string]any)
		for i, n := range names {
			if n == "" || m[2*i] < 0 {
				continue
			}
			vs[n] = number(string(frame[m[2*i]:m[2*i+1]]))
		}
		if len(vs) == 0 {
			return nil, errors.New("regex matched but no named group did")
		}
		return vs, nil
	}
}

var kvSpace = regexp.MustCompile(`\s*([=:])\s*`)

// parseKV reads pairs such as "T=21.5 H=40", "T:21.5;H:40" or "T = 21.5, H = 40".
func parseKV(frame []byte) (map[string]any, error) {
	if !utf8.Valid(frame) {
		return nil, errors.New("not valid UTF-8 text")
	}
	s := kvSpace.ReplaceAllString(string(frame), "$1")
	vs := make(map[string]any)
	for _, tok := range strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == ',' || r == ';' || r == '\r' || r == '\n'
	}) {
		i := strings.IndexAny(tok, "=:")
		if i <= 0 {
			continue // a bare word such as "OK"
		}
		vs[tok[:i]] = number(tok[i+1:])
	}
	if len(vs) == 0 {
		return nil, errors.New("no key=value pairs")
	}
	return vs, nil
}

// parseJSON reads one JSON object, flattening nested objects ("a.b") and
// arrays ("a.0"); nulls are left out.
func parseJSON(frame []byte) (map[string]any, error) {
	var v any
	if err := json.Unmarshal(frame, &v); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("json: want an object, got %T", v)
	}
	vs := make(map[string]any)
	flatten("", obj, vs)
	if len(vs) == 0 {
		return nil, errors.New("json: no values")
	}
	return vs, nil
}

func flatten(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			flatten(join(prefix, k), e, out)
		}
	case []any:
		for i, e := range x {
			flatten(join(prefix, strconv.Itoa(i)), e, out)
		}
	case nil:
	default:
		out[prefix] = x
	}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
