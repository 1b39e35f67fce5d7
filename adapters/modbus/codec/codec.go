// Package codec converts between Modbus register words and typed values:
// the ten point types (bool, the 16-, 32- and 64-bit integers, float32,
// float64 and string), the byte and word orders relative to big endian,
// and the raw*scale+offset mapping with its range checks.
//
// A Field describes one value's registers; Decode turns the words read
// from a device into a value (int64, uint64, float64, bool or string) and
// Encode turns a command value into the words to write. The package knows
// nothing about tables, addresses or transports: the adapter resolves a
// point from its config into a Field and calls it on every poll and write.
package codec

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Type is a point's value type.
type Type uint8

// The point types.
const (
	Bool Type = iota
	Int16
	Uint16
	Int32
	Uint32
	Int64
	Uint64
	Float32
	Float64
	String
)

var typeByName = map[string]Type{"bool": Bool, "int16": Int16, "uint16": Uint16,
	"int32": Int32, "uint32": Uint32, "int64": Int64, "uint64": Uint64,
	"float32": Float32, "float64": Float64, "string": String}

// ParseType returns the type of a config name ("int16", "float32", ...).
func ParseType(name string) (Type, bool) {
	t, ok := typeByName[name]
	return t, ok
}

func (t Type) String() string {
	for k, v := range typeByName {
		if v == t {
			return k
		}
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// Words is the size in registers (1 for bool and string; a string's size
// comes from its length).
func (t Type) Words() int {
	switch t {
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	}
	return 1
}

// Order is a register value's layout relative to big endian: wordSwap
// reverses the registers, byteSwap swaps the two bytes of each register.
// The zero Order is big endian (ABCD).
type Order struct{ wordSwap, byteSwap bool }

var orderByName = map[string]Order{
	"": {}, "AB": {}, "ABCD": {}, "ABCDEFGH": {},
	"CDAB": {wordSwap: true}, "GHEFCDAB": {wordSwap: true},
	"BA": {byteSwap: true}, "BADC": {byteSwap: true}, "BADCFEHG": {byteSwap: true},
	"DCBA": {wordSwap: true, byteSwap: true}, "HGFEDCBA": {wordSwap: true, byteSwap: true},
}

// ParseOrder returns the order of a config name, in either case: ABCD
// (or "", the default), CDAB, BADC, DCBA, their 64-bit forms ABCDEFGH,
// GHEFCDAB, BADCFEHG, HGFEDCBA, and the 16-bit AB and BA.
func ParseOrder(name string) (Order, bool) {
	o, ok := orderByName[strings.ToUpper(name)]
	return o, ok
}

// bytes returns the value's bytes in big-endian order.
func (o Order) bytes(w []uint16) []byte {
	b := make([]byte, 2*len(w))
	for i, v := range w {
		j := i
		if o.wordSwap {
			j = len(w) - 1 - i
		}
		if o.byteSwap {
			v = v<<8 | v>>8
		}
		binary.BigEndian.PutUint16(b[2*j:], v)
	}
	return b
}

// words is the inverse of bytes.
func (o Order) words(b []byte) []uint16 {
	w := make([]uint16, len(b)/2)
	for j := range w {
		v := binary.BigEndian.Uint16(b[2*j:])
		if o.byteSwap {
			v = v<<8 | v>>8
		}
		i := j
		if o.wordSwap {
			i = len(w) - 1 - j
		}
		w[i] = v
	}
	return w
}

// A Field is the register layout of one value. Its zero value is not
// useful: Words must be Type.Words() (a string's length for a string),
// Bit -1 unless the value is a bool in a register, and Scale non-zero (1
// for none).
type Field struct {
	Name   string // names the value in errors
	Type   Type
	Words  int // registers, or 1 for a coil/discrete bit
	Order  Order
	Bit    int // -1 unless a bool in a register
	Scale  float64
	Offset float64
}

// Decode decodes the value from its registers (w may be longer; the rest
// is ignored). Integers without scale or offset come back exact as int64
// or uint64, other numbers as float64; NaN and infinities are errors.
func (f *Field) Decode(w []uint16) (any, error) {
	if len(w) < f.Words {
		return nil, fmt.Errorf("modbus: %s: %d registers, want %d", f.Name, len(w), f.Words)
	}
	w = w[:f.Words]
	if f.Type == Bool {
		if f.Bit < 0 { // a coil or discrete input: read() gives 0 or 1
			return w[0] != 0, nil
		}
		return w[0]>>f.Bit&1 == 1, nil
	}
	b := f.Order.bytes(w)
	if f.Type == String {
		return strings.TrimRight(string(b), "\x00 "), nil
	}
	var (
		v     float64
		exact any // the raw value when no scale or offset applies
	)
	switch f.Type {
	case Int16:
		i := int64(int16(binary.BigEndian.Uint16(b)))
		v, exact = float64(i), i
	case Uint16:
		u := uint64(binary.BigEndian.Uint16(b))
		v, exact = float64(u), u
	case Int32:
		i := int64(int32(binary.BigEndian.Uint32(b)))
		v, exact = float64(i), i
	case Uint32:
		u := uint64(binary.BigEndian.Uint32(b))
		v, exact = float64(u), u
	case Int64:
		i := int64(binary.BigEndian.Uint64(b))
		v, exact = float64(i), i
	case Uint64:
		u := binary.BigEndian.Uint64(b)
		v, exact = float64(u), u
	case Float32:
		x := math.Float32frombits(binary.BigEndian.Uint32(b))
		// The shortest decimal that round-trips as float32: 229.8, not 229.8000030517578.
		v, _ = strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		exact = v
	case Float64:
		v = math.Float64frombits(binary.BigEndian.Uint64(b))
		exact = v
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("modbus: %s: value is %v, not a number", f.Name, v)
	}
	if f.Scale == 1 && f.Offset == 0 {
		return exact, nil
	}
	s := f.applyScale(v)
	if math.IsInf(s, 0) {
		return nil, fmt.Errorf("modbus: %s: value %v scaled is %v, not a number", f.Name, v, s)
	}
	return s, nil
}

// applyScale maps raw to raw*scale+offset, rounded to 15 significant
// digits so that 2153 at scale 0.1 reads 215.3, not 215.30000000000001.
// A value that rounding would carry past MaxFloat64 is kept unrounded.
func (f *Field) applyScale(raw float64) float64 {
	x := raw*f.Scale + f.Offset
	v, err := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 15, 64), 64)
	if err != nil {
		return x
	}
	return v
}

// ErrBadValue marks a command value the field cannot take.
var ErrBadValue = errors.New("bad value")

// Encode encodes v for the field's registers; an error wraps ErrBadValue.
// A bool field (a bit of a register) is handled by the caller, which must
// read the register first.
func (f *Field) Encode(v any) ([]uint16, error) {
	if f.Type == String {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s wants a string, got %T", ErrBadValue, f.Name, v)
		}
		if len(s) > 2*f.Words {
			return nil, fmt.Errorf("%w: %s holds %d characters, got %d", ErrBadValue, f.Name, 2*f.Words, len(s))
		}
		b := make([]byte, 2*f.Words)
		copy(b, s)
		return f.Order.words(b), nil
	}
	b := make([]byte, 2*f.Words)
	if f.Type == Float32 || f.Type == Float64 {
		x, err := Number(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadValue, f.Name, err)
		}
		x = (x - f.Offset) / f.Scale
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: %s: %v is not a finite number", ErrBadValue, f.Name, v)
		}
		if f.Type == Float32 {
			if math.IsInf(float64(float32(x)), 0) { // beyond rounding to ±MaxFloat32
				return nil, fmt.Errorf("%w: %s: %v out of float32 range", ErrBadValue, f.Name, v)
			}
			binary.BigEndian.PutUint32(b, math.Float32bits(float32(x)))
		} else {
			binary.BigEndian.PutUint64(b, math.Float64bits(x))
		}
		return f.Order.words(b), nil
	}
	raw, err := f.rawInteger(v)
	if err != nil {
		return nil, err
	}
	switch f.Words {
	case 1:
		binary.BigEndian.PutUint16(b, uint16(raw))
	case 2:
		binary.BigEndian.PutUint32(b, uint32(raw))
	case 4:
		binary.BigEndian.PutUint64(b, raw)
	}
	return f.Order.words(b), nil
}

// rawInteger converts v to the field's integer type, as two's complement
// bits, checking its range. Exact integers skip the float round trip.
func (f *Field) rawInteger(v any) (uint64, error) {
	signed := f.Type == Int16 || f.Type == Int32 || f.Type == Int64
	bits := 16 * f.Words
	if f.Scale == 1 && f.Offset == 0 {
		switch x := v.(type) {
		case int64:
			return f.checkInt(x)
		case uint64:
			if signed && x > math.MaxInt64 || !signed && bits < 64 && x >= 1<<bits {
				return 0, fmt.Errorf("%w: %s: %d out of %s range", ErrBadValue, f.Name, x, f.Type)
			}
			return x, nil
		case json.Number:
			if i, err := x.Int64(); err == nil {
				return f.checkInt(i)
			}
			if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
				return f.rawInteger(u)
			}
		}
	}
	x, err := Number(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrBadValue, f.Name, err)
	}
	r := (x - f.Offset) / f.Scale
	if f.Scale != 1 || f.Offset != 0 {
		// 1.25 at scale 0.1 is 12.499999999999998 in binary; round the
		// float noise away before rounding to the register's integer.
		r, _ = strconv.ParseFloat(strconv.FormatFloat(r, 'g', 12, 64), 64)
	}
	r = math.Round(r)
	lo, hi := 0.0, math.Ldexp(1, bits)
	if signed {
		lo, hi = -math.Ldexp(1, bits-1), math.Ldexp(1, bits-1)
	}
	if r < lo || r >= hi || math.IsNaN(r) {
		return 0, fmt.Errorf("%w: %s: %v out of %s range", ErrBadValue, f.Name, v, f.Type)
	}
	if signed {
		return uint64(int64(r)), nil
	}
	return uint64(r), nil
}

func (f *Field) checkInt(x int64) (uint64, error) {
	signed := f.Type == Int16 || f.Type == Int32 || f.Type == Int64
	bits := 16 * f.Words
	ok := true
	switch {
	case signed && bits < 64:
		ok = x >= -(1<<(bits-1)) && x < 1<<(bits-1)
	case !signed && bits < 64:
		ok = x >= 0 && x < 1<<bits
	case !signed:
		ok = x >= 0
	}
	if !ok {
		return 0, fmt.Errorf("%w: %s: %d out of %s range", ErrBadValue, f.Name, x, f.Type)
	}
	return uint64(x), nil
}

// BoolValue reads a command value for a bool field: true/false, or 0/1.
func BoolValue(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		return strconv.ParseBool(x)
	}
	f, err := Number(v)
	if err == nil && (f == 0 || f == 1) {
		return f == 1, nil
	}
	return false, fmt.Errorf("want true, false, 0 or 1, got %v", v)
}

// Number reads a numeric value: a Go number, a json.Number or a decimal
// string.
func Number(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case json.Number:
		return x.Float64()
	case string:
		return strconv.ParseFloat(x, 64)
	}
	return 0, fmt.Errorf("want a number, got %T", v)
}
