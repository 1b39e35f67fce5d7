package codec

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
)

var fuzzOrders = []string{"ABCD", "CDAB", "BADC", "DCBA"}

// fuzzScales are scale and offset pairs as configs write them.
var fuzzScales = [][2]float64{{1, 0}, {0.1, 0}, {0.01, -40}, {10, 0}, {0.5, 273.15}, {-1, 0}}

// fuzzField builds a Field the way the adapter resolves a valid point:
// sel picks the string length or the bit, and the scale.
func fuzzField(typ, order, sel uint8) *Field {
	ty := Type(typ % 10)
	f := &Field{Name: "p", Type: ty, Words: ty.Words(), Bit: -1, Scale: 1}
	f.Order, _ = ParseOrder(fuzzOrders[int(order)%len(fuzzOrders)])
	switch ty {
	case String:
		f.Words = 1 + int(sel%8)
	case Bool:
		if sel&0x10 != 0 {
			f.Bit = int(sel % 16)
		}
	default:
		s := fuzzScales[int(sel)%len(fuzzScales)]
		f.Scale, f.Offset = s[0], s[1]
	}
	return f
}

// FuzzCodec decodes registers and encodes command values for every type,
// order, bit and scale, and checks: no panic; too few registers is an
// error and registers past the value are ignored; a value has its type's
// Go type and is a finite number; whatever command value Encode accepts
// (a string, a json.Number, a float) gives registers that decode; and
// where no rounding applies (unscaled values, strings, scaled integers of
// up to 32 bits) what is decoded encodes back to the same registers and
// an encoded command value is a fixed point. Encode's
// errors wrap ErrBadValue. Seeds beyond these are in
// testdata/fuzz/FuzzCodec.
func FuzzCodec(f *testing.F) {
	f.Add(uint8(Float32), uint8(0), uint8(0), []byte{0x43, 0x65, 0xCC, 0xCD}, "229.8", 1.5)
	f.Add(uint8(Int16), uint8(2), uint8(1), []byte{0x08, 0x69}, "21.7", -3276.8)
	f.Add(uint8(Uint64), uint8(3), uint8(0), []byte{1, 2, 3, 4, 5, 6, 7, 8}, "18446744073709551615", 1e19)
	f.Add(uint8(String), uint8(2), uint8(2), []byte("bacd\x00e"), "abcde", 0.0)
	f.Add(uint8(Bool), uint8(0), uint8(0x13), []byte{0, 8}, "true", 1.0)
	f.Add(uint8(Float64), uint8(1), uint8(0), []byte{0x7F, 0xF0, 0, 0, 0, 0, 0, 1}, "NaN", math.Inf(1))
	f.Fuzz(func(t *testing.T, typ, order, sel uint8, regs []byte, cmd string, x float64) {
		fd := fuzzField(typ, order, sel)
		w := make([]uint16, len(regs)/2)
		for i := range w {
			w[i] = binary.BigEndian.Uint16(regs[2*i:])
		}
		v, err := fd.Decode(w)
		if len(w) < fd.Words {
			if err == nil {
				t.Fatalf("%+v: decoded %v from %d registers", fd, v, len(w))
			}
		} else {
			if v2, err2 := fd.Decode(append(slices.Clone(w[:fd.Words]), 0xFFFF)); !reflect.DeepEqual(v, v2) || (err == nil) != (err2 == nil) {
				t.Fatalf("%+v: registers past the value change %v to %v", fd, v, v2)
			}
			if err == nil {
				checkDecoded(t, fd, w[:fd.Words], v)
			}
		}
		if fd.Type == Bool {
			return // a bit is written by the caller, read-modify-write
		}
		for _, in := range []any{cmd, json.Number(cmd), x} {
			words, err := fd.Encode(in)
			if err != nil {
				if !errors.Is(err, ErrBadValue) {
					t.Fatalf("%+v: Encode(%#v): %v does not wrap ErrBadValue", fd, in, err)
				}
				continue
			}
			if len(words) != fd.Words {
				t.Fatalf("%+v: Encode(%#v) gave %d registers", fd, in, len(words))
			}
			got, err := fd.Decode(words)
			if err != nil {
				t.Fatalf("%+v: Encode(%#v) = %04x, which does not decode: %v", fd, in, words, err)
			}
			if !exact(fd) {
				continue
			}
			again, err := fd.Encode(got)
			if fd.Type == String && err == nil { // trailing NULs and spaces are not read back
				if got2, _ := fd.Decode(again); got2 == got {
					continue
				}
			}
			if err != nil || !slices.Equal(again, words) {
				t.Fatalf("%+v: Encode(%#v) = %04x -> %#v -> %04x %v", fd, in, words, got, again, err)
			}
		}
	})
}

func checkDecoded(t *testing.T, fd *Field, w []uint16, v any) {
	t.Helper()
	scaled := fd.Scale != 1 || fd.Offset != 0
	var want reflect.Kind
	switch {
	case fd.Type == Bool:
		want = reflect.Bool
	case fd.Type == String:
		want = reflect.String
	case fd.Type == Float32 || fd.Type == Float64 || scaled:
		want = reflect.Float64
	case fd.Type == Int16 || fd.Type == Int32 || fd.Type == Int64:
		want = reflect.Int64
	default:
		want = reflect.Uint64
	}
	if k := reflect.ValueOf(v).Kind(); k != want {
		t.Fatalf("%+v: decoded %#v, want a %v", fd, v, want)
	}
	if x, ok := v.(float64); ok && (math.IsNaN(x) || math.IsInf(x, 0)) {
		t.Fatalf("%+v: decoded %v", fd, x)
	}
	if fd.Type == Bool || !exact(fd) {
		return
	}
	back, err := fd.Encode(v)
	if err != nil {
		t.Fatalf("%+v: %04x -> %#v does not encode: %v", fd, w, v, err)
	}
	if fd.Type == String {
		// Trailing NULs and spaces are trimmed on reading; Encode pads with NULs.
		if got, _ := fd.Decode(back); got != v {
			t.Fatalf("%+v: %04x -> %q -> %04x -> %q", fd, w, v, back, got)
		}
		return
	}
	if !slices.Equal(back, w) {
		t.Fatalf("%+v: %04x -> %#v -> %04x", fd, w, v, back)
	}
}

// exact reports whether a decoded value encodes back to its registers: not
// for scaled floats or scaled 64-bit integers, which Decode rounds to 15
// digits (1e-30*0.5+273.15 reads 273.15).
func exact(fd *Field) bool {
	scaled := fd.Scale != 1 || fd.Offset != 0
	return !scaled || fd.Words <= 2 && fd.Type != Float32
}
