package codec

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

// mustField builds a Field as the adapter resolves a point: Words from the
// type, no scale, no bit.
func mustField(t testing.TB, typ, order string) *Field {
	t.Helper()
	ty, ok := ParseType(typ)
	o, ok2 := ParseOrder(order)
	if !ok || !ok2 {
		t.Fatalf("type %q order %q", typ, order)
	}
	return &Field{Name: "p", Type: ty, Words: ty.Words(), Order: o, Bit: -1, Scale: 1}
}

// TestOrderLayout pins the register layout of each order with 229.8 as a
// float32 (0x4365CCCD), as testdata/slave.py packs it.
func TestOrderLayout(t *testing.T) {
	for order, want := range map[string][2]uint16{
		"ABCD": {0x4365, 0xCCCD}, "CDAB": {0xCCCD, 0x4365},
		"BADC": {0x6543, 0xCDCC}, "DCBA": {0xCDCC, 0x6543},
	} {
		p := mustField(t, "float32", order)
		w, err := p.Encode(229.8)
		if err != nil || w[0] != want[0] || w[1] != want[1] {
			t.Errorf("%s: %04x %v, want %04x", order, w, err, want)
		}
		if v, err := p.Decode(want[:]); v != 229.8 || err != nil {
			t.Errorf("%s: decoded %v %v", order, v, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	values := map[string][]any{
		"int16":   {int64(0), int64(-1), int64(math.MinInt16), int64(math.MaxInt16)},
		"uint16":  {uint64(0), uint64(math.MaxUint16)},
		"int32":   {int64(math.MinInt32), int64(math.MaxInt32), int64(-123456789)},
		"uint32":  {uint64(math.MaxUint32), uint64(3000000000)},
		"int64":   {int64(math.MinInt64), int64(math.MaxInt64), int64(-9000000000000)},
		"uint64":  {uint64(math.MaxUint64), uint64(18000000000000000000)},
		"float32": {0.0, -0.5, 229.8, 1.5e6, 3.4e38},
		"float64": {math.Pi, -2.5e-3, math.MaxFloat64},
	}
	for typ, vs := range values {
		for _, order := range []string{"ABCD", "CDAB", "BADC", "DCBA"} {
			p := mustField(t, typ, order)
			for _, v := range vs {
				w, err := p.Encode(v)
				if err != nil {
					t.Errorf("%s %s encode %v: %v", typ, order, v, err)
					continue
				}
				got, err := p.Decode(w)
				if err != nil || got != v {
					t.Errorf("%s %s: %v -> %04x -> %v (%T) %v", typ, order, v, w, got, got, err)
				}
			}
		}
	}
	s := mustField(t, "string", "BADC")
	s.Words = 3
	w, _ := s.Encode("abcde")
	if got, _ := s.Decode(w); got != "abcde" || w[0] != 0x6261 {
		t.Errorf("string BADC: %04x -> %v", w, got)
	}
}

func TestScaleAndRange(t *testing.T) {
	sp := mustField(t, "int16", "")
	sp.Scale = 0.1
	for _, tc := range []struct {
		in   any
		raw  uint16
		back any
	}{
		{21.7, 217, 21.7}, {-3276.8, 0x8000, -3276.8}, {"1.25", 13, 1.3}, {int64(5), 50, 5.0},
	} {
		w, err := sp.Encode(tc.in)
		if err != nil || w[0] != tc.raw {
			t.Errorf("encode %v: %v %v, want raw %d", tc.in, w, err, tc.raw)
			continue
		}
		if got, _ := sp.Decode(w); got != tc.back {
			t.Errorf("decode %d: %v, want %v", tc.raw, got, tc.back)
		}
	}
	for _, bad := range []any{3276.8, -3276.9, true, nil, "x"} {
		if _, err := sp.Encode(bad); !errors.Is(err, ErrBadValue) {
			t.Errorf("encode %v: %v, want ErrBadValue", bad, err)
		}
	}
	u := mustField(t, "uint16", "")
	for _, bad := range []any{int64(-1), int64(65536), uint64(65536), -0.6} {
		if _, err := u.Encode(bad); !errors.Is(err, ErrBadValue) {
			t.Errorf("uint16 encode %v: %v, want ErrBadValue", bad, err)
		}
	}
	f := mustField(t, "float32", "")
	if _, err := f.Encode(1e39); !errors.Is(err, ErrBadValue) {
		t.Errorf("float32 1e39: %v", err)
	}
	if _, err := f.Decode([]uint16{0x7FC0, 0}); err == nil {
		t.Error("NaN decoded without error; it cannot be sent as JSON")
	}
	off := mustField(t, "int16", "")
	off.Scale, off.Offset = 0.01, -40
	if v, _ := off.Decode([]uint16{6512}); v != 25.12 {
		t.Errorf("scale 0.01 offset -40 of 6512 = %v", v)
	}
}

func TestBits(t *testing.T) {
	for bit := range 16 {
		p := mustField(t, "bool", "")
		p.Bit = bit
		v, _ := p.Decode([]uint16{1 << bit})
		nv, _ := p.Decode([]uint16{^uint16(1 << bit)})
		if v != true || nv != false {
			t.Errorf("bit %d: %v %v", bit, v, nv)
		}
	}
	for in, want := range map[any]bool{true: true, false: false, 1.0: true, 0.0: false, "true": true} {
		if got, err := BoolValue(in); got != want || err != nil {
			t.Errorf("BoolValue(%v) = %v %v", in, got, err)
		}
	}
	if _, err := BoolValue(2.0); err == nil {
		t.Error("BoolValue(2) accepted")
	}
}

func BenchmarkDecode(b *testing.B) {
	scaled := mustField(b, "int16", "")
	scaled.Scale = 0.1
	ps := []*Field{mustField(b, "float32", "CDAB"), scaled, mustField(b, "uint64", "DCBA")}
	w := []uint16{0xCCCD, 0x4365, 0x1234, 0x5678}
	for _, p := range ps {
		b.Run(fmt.Sprintf("%s-%v", p.Type, p.Scale), func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Decode(w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
