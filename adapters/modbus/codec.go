package modbus

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Protocol limits of one read request.
const (
	maxRegisters = 125
	maxBits      = 2000
)

type table uint8

const (
	tableCoil table = iota
	tableDiscrete
	tableInput
	tableHolding
	numTables
)

var tableByName = map[string]table{"coil": tableCoil, "discrete": tableDiscrete, "input": tableInput, "holding": tableHolding}

func (t table) String() string {
	return [...]string{"coil", "discrete", "input", "holding"}[t]
}

// bits reports whether the table holds single bits rather than registers.
func (t table) bits() bool { return t == tableCoil || t == tableDiscrete }

// limit is the most items one read request of the table may carry.
func (t table) limit() int {
	if t.bits() {
		return maxBits
	}
	return maxRegisters
}

type dtype uint8

const (
	typeBool dtype = iota
	typeInt16
	typeUint16
	typeInt32
	typeUint32
	typeInt64
	typeUint64
	typeFloat32
	typeFloat64
	typeString
)

var typeByName = map[string]dtype{"bool": typeBool, "int16": typeInt16, "uint16": typeUint16,
	"int32": typeInt32, "uint32": typeUint32, "int64": typeInt64, "uint64": typeUint64,
	"float32": typeFloat32, "float64": typeFloat64, "string": typeString}

func (t dtype) String() string {
	for k, v := range typeByName {
		if v == t {
			return k
		}
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// words is the size in registers (1 for bool and string; a string's size
// comes from its length).
func (t dtype) words() int {
	switch t {
	case typeInt32, typeUint32, typeFloat32:
		return 2
	case typeInt64, typeUint64, typeFloat64:
		return 4
	}
	return 1
}

// order is a register value's layout relative to big endian: wordSwap
// reverses the registers, byteSwap swaps the two bytes of each register.
type order struct{ wordSwap, byteSwap bool }

var orderByName = map[string]order{
	"": {}, "AB": {}, "ABCD": {}, "ABCDEFGH": {},
	"CDAB": {wordSwap: true}, "GHEFCDAB": {wordSwap: true},
	"BA": {byteSwap: true}, "BADC": {byteSwap: true}, "BADCFEHG": {byteSwap: true},
	"DCBA": {wordSwap: true, byteSwap: true}, "HGFEDCBA": {wordSwap: true, byteSwap: true},
}

// bytes returns the value's bytes in big-endian order.
func (o order) bytes(w []uint16) []byte {
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
func (o order) words(b []byte) []uint16 {
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

// point is one resolved register-map entry.
type point struct {
	name      string
	table     table
	addr      uint16 // protocol (0-based) address
	typ       dtype
	words     int // registers, or 1 for a coil/discrete bit
	order     order
	bit       int // -1 unless a bool in a register
	scale     float64
	offset    float64
	interval  time.Duration
	deadband  float64
	heartbeat time.Duration
	writable  bool
}

// filtered reports whether the point is reported on change only.
func (p *point) filtered() bool { return p.deadband > 0 || p.heartbeat > 0 }

// end is one past the point's last register or bit.
func (p *point) end() int { return int(p.addr) + p.words }

// decodeWords decodes the point from its registers.
func (p *point) decodeWords(w []uint16) (any, error) {
	if len(w) < p.words {
		return nil, fmt.Errorf("modbus: %s: %d registers, want %d", p.name, len(w), p.words)
	}
	w = w[:p.words]
	if p.typ == typeBool {
		if p.bit < 0 { // a coil or discrete input: read() gives 0 or 1
			return w[0] != 0, nil
		}
		return w[0]>>p.bit&1 == 1, nil
	}
	b := p.order.bytes(w)
	if p.typ == typeString {
		return strings.TrimRight(string(b), "\x00 "), nil
	}
	var (
		f     float64
		exact any // the raw value when no scale or offset applies
	)
	switch p.typ {
	case typeInt16:
		v := int64(int16(binary.BigEndian.Uint16(b)))
		f, exact = float64(v), v
	case typeUint16:
		v := uint64(binary.BigEndian.Uint16(b))
		f, exact = float64(v), v
	case typeInt32:
		v := int64(int32(binary.BigEndian.Uint32(b)))
		f, exact = float64(v), v
	case typeUint32:
		v := uint64(binary.BigEndian.Uint32(b))
		f, exact = float64(v), v
	case typeInt64:
		v := int64(binary.BigEndian.Uint64(b))
		f, exact = float64(v), v
	case typeUint64:
		v := binary.BigEndian.Uint64(b)
		f, exact = float64(v), v
	case typeFloat32:
		v := math.Float32frombits(binary.BigEndian.Uint32(b))
		// The shortest decimal that round-trips as float32: 229.8, not 229.8000030517578.
		f, _ = strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
		exact = f
	case typeFloat64:
		f = math.Float64frombits(binary.BigEndian.Uint64(b))
		exact = f
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("modbus: %s: value is %v, not a number", p.name, f)
	}
	if p.scale == 1 && p.offset == 0 {
		return exact, nil
	}
	return p.applyScale(f), nil
}

// applyScale maps raw to raw*scale+offset, rounded to 15 significant
// digits so that 2153 at scale 0.1 reads 215.3, not 215.30000000000001.
func (p *point) applyScale(raw float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(raw*p.scale+p.offset, 'g', 15, 64), 64)
	return v
}

// errBadValue marks a command value the point cannot take.
var errBadValue = errors.New("bad value")

// encodeWords encodes v for the point's registers. A bool point (a bit of
// a register) is handled by the caller, which must read the register first.
func (p *point) encodeWords(v any) ([]uint16, error) {
	if p.typ == typeString {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s wants a string, got %T", errBadValue, p.name, v)
		}
		if len(s) > 2*p.words {
			return nil, fmt.Errorf("%w: %s holds %d characters, got %d", errBadValue, p.name, 2*p.words, len(s))
		}
		b := make([]byte, 2*p.words)
		copy(b, s)
		return order{byteSwap: p.order.byteSwap}.words(b), nil
	}
	b := make([]byte, 2*p.words)
	if p.typ == typeFloat32 || p.typ == typeFloat64 {
		f, err := number(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errBadValue, p.name, err)
		}
		f = (f - p.offset) / p.scale
		if p.typ == typeFloat32 {
			if math.Abs(f) > math.MaxFloat32 {
				return nil, fmt.Errorf("%w: %s: %v out of float32 range", errBadValue, p.name, v)
			}
			binary.BigEndian.PutUint32(b, math.Float32bits(float32(f)))
		} else {
			binary.BigEndian.PutUint64(b, math.Float64bits(f))
		}
		return p.order.words(b), nil
	}
	raw, err := p.rawInteger(v)
	if err != nil {
		return nil, err
	}
	switch p.words {
	case 1:
		binary.BigEndian.PutUint16(b, uint16(raw))
	case 2:
		binary.BigEndian.PutUint32(b, uint32(raw))
	case 4:
		binary.BigEndian.PutUint64(b, raw)
	}
	return p.order.words(b), nil
}

// rawInteger converts v to the point's integer type, as two's complement
// bits, checking its range. Exact integers skip the float round trip.
func (p *point) rawInteger(v any) (uint64, error) {
	signed := p.typ == typeInt16 || p.typ == typeInt32 || p.typ == typeInt64
	bits := 16 * p.words
	if p.scale == 1 && p.offset == 0 {
		switch x := v.(type) {
		case int64:
			return p.checkInt(x)
		case uint64:
			if signed && x > math.MaxInt64 || !signed && bits < 64 && x >= 1<<bits {
				return 0, fmt.Errorf("%w: %s: %d out of %s range", errBadValue, p.name, x, p.typ)
			}
			return x, nil
		case json.Number:
			if i, err := x.Int64(); err == nil {
				return p.checkInt(i)
			}
			if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
				return p.rawInteger(u)
			}
		}
	}
	f, err := number(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", errBadValue, p.name, err)
	}
	r := (f - p.offset) / p.scale
	if p.scale != 1 || p.offset != 0 {
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
		return 0, fmt.Errorf("%w: %s: %v out of %s range", errBadValue, p.name, v, p.typ)
	}
	if signed {
		return uint64(int64(r)), nil
	}
	return uint64(r), nil
}

func (p *point) checkInt(x int64) (uint64, error) {
	signed := p.typ == typeInt16 || p.typ == typeInt32 || p.typ == typeInt64
	bits := 16 * p.words
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
		return 0, fmt.Errorf("%w: %s: %d out of %s range", errBadValue, p.name, x, p.typ)
	}
	return uint64(x), nil
}

// boolValue reads a command value for a bool point: true/false, or 0/1.
func boolValue(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		return strconv.ParseBool(x)
	}
	f, err := number(v)
	if err == nil && (f == 0 || f == 1) {
		return f == 1, nil
	}
	return false, fmt.Errorf("want true, false, 0 or 1, got %v", v)
}

// number reads a numeric command value.
func number(v any) (float64, error) {
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
