package serial

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// chunk is bytes arriving at an offset from t0; tick marks a read that
// returned no data at that offset.
type chunk struct {
	at   time.Duration
	data string
	tick bool
}

func TestFramer(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name     string
		f        Framing
		in       []chunk
		want     []string
		overlong uint64
		noise    uint64
	}{
		{
			name: "default lines, CRLF and split",
			f:    Framing{},
			in:   []chunk{{data: "T=1\r\nT="}, {at: ms, data: "2\n\nT=3"}, {at: 2 * ms, data: "\r"}, {at: 3 * ms, data: "\n"}},
			want: []string{"T=1", "T=2", "", "T=3"},
		},
		{
			name: "CRLF delimiter keeps a lone LF",
			f:    Framing{Delimiter: "\r\n"},
			in:   []chunk{{data: "a\nb\r"}, {data: "\nc\r\n"}},
			want: []string{"a\nb", "c"},
		},
		{
			name:     "overlong line is dropped up to its delimiter",
			f:        Framing{Max: 4},
			in:       []chunk{{data: "1234\n12345"}, {data: "6789"}, {data: "0\nok\n"}},
			want:     []string{"1234", "ok"},
			overlong: 1,
		},
		{
			name:     "overlong across many chunks never buffers",
			f:        Framing{Max: 3, Delimiter: "END"},
			in:       []chunk{{data: "abcdefgh"}, {data: "ijkE"}, {data: "NDxyzEN"}, {data: "D"}},
			want:     []string{"xyz"},
			overlong: 1,
		},
		{
			name:  "start marker drops noise and restarts on a second start",
			f:     Framing{Start: "$", Delimiter: "\r\n"},
			in:    []chunk{{data: "\x00\xffgarb$GPG"}, {data: "$GPGGA,1*00\r\n"}, {data: "xx$A\r\n"}},
			want:  []string{"$GPGGA,1*00", "$A"},
			noise: 6 + 4 + 2,
		},
		{
			name:     "overlong with start resyncs on the next start",
			f:        Framing{Start: "<", Delimiter: ">", Max: 5},
			in:       []chunk{{data: "<123456789<ok>"}},
			want:     []string{"<ok"},
			overlong: 1,
			noise:    4, // "6789": after the drop, before the next "<"
		},
		{
			name:  "multi-byte start split across chunks",
			f:     Framing{Start: "\xaa\x55", Fixed: 4},
			in:    []chunk{{data: "\x01\xaa"}, {data: "\x55\x01"}, {data: "\x02\xaa\xaa\x55\x03\x04"}},
			want:  []string{"\xaa\x55\x01\x02", "\xaa\x55\x03\x04"},
			noise: 2,
		},
		{
			name: "fixed without start",
			f:    Framing{Fixed: 3},
			in:   []chunk{{data: "abcd"}, {data: "ef"}, {data: "gh"}},
			want: []string{"abc", "def"},
		},
		{
			name: "idle gap ends a frame, on a tick or on the next byte",
			f:    Framing{Idle: 50 * ms},
			in: []chunk{
				{at: 0, data: "burst "}, {at: 10 * ms, data: "one"}, {at: 40 * ms, tick: true},
				{at: 100 * ms, tick: true},
				{at: 200 * ms, data: "two"}, {at: 230 * ms, data: "!"}, {at: 300 * ms, data: "three"},
			},
			want: []string{"burst one", "two!"},
		},
		{
			name:     "idle overlong is dropped until the gap",
			f:        Framing{Idle: 50 * ms, Max: 4},
			in:       []chunk{{at: 0, data: "abc"}, {at: 1 * ms, data: "defg"}, {at: 2 * ms, data: "hi"}, {at: 100 * ms, data: "ok"}, {at: 200 * ms, tick: true}},
			want:     []string{"ok"},
			overlong: 1,
		},
		{
			name:  "idle with start",
			f:     Framing{Idle: 50 * ms, Start: "#"},
			in:    []chunk{{at: 0, data: "xx#a"}, {at: 10 * ms, data: "b#c"}, {at: 100 * ms, tick: true}},
			want:  []string{"#c"},
			noise: 2 + 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.f.Max == 0 {
				tc.f.Max = DefaultMax
			}
			if errs := tc.f.validate(); len(errs) > 0 {
				t.Fatalf("framing does not validate: %v", errs)
			}
			fr := newFramer(tc.f)
			t0 := time.Unix(1e9, 0)
			var got []string
			emit := func(b []byte, at time.Time) { got = append(got, string(b)) }
			for _, c := range tc.in {
				if c.tick {
					fr.tick(t0.Add(c.at), emit)
				} else {
					fr.feed([]byte(c.data), t0.Add(c.at), emit)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("frames = %q, want %q", got, tc.want)
			}
			if fr.overlong != tc.overlong || fr.noise != tc.noise {
				t.Errorf("overlong=%d noise=%d, want %d and %d", fr.overlong, fr.noise, tc.overlong, tc.noise)
			}
			if fr.frames != uint64(len(tc.want)) {
				t.Errorf("frames counter = %d, want %d", fr.frames, len(tc.want))
			}
			if cap(fr.buf) > tc.f.Max+16 {
				t.Errorf("buffer grew to %d bytes with max %d", cap(fr.buf), tc.f.Max)
			}
		})
	}
}

func TestBytes(t *testing.T) {
	for in, want := range map[string]string{
		"\u00aa\u0055": "\xaa\x55", // what YAML makes of "\xAA\x55"
		"\r\n":         "\r\n",
		"°C":           "\xb0C", // every code point fits a byte
		"→":            "→",     // does not: UTF-8
		"\xaa":         "\xaa",  // raw bytes from Go code
	} {
		if got := string(Bytes(in)); got != want {
			t.Errorf("Bytes(%q) = %q, want %q", in, got, want)
		}
	}
}

func ExampleBytes() {
	fmt.Printf("% x\n", Bytes("\u00aa\r\n"))
	// Output: aa 0d 0a
}

// BenchmarkFrameAndParse cuts an NMEA stream into sentences and parses them,
// as the read loop does, in 64-byte reads.
func BenchmarkFrameAndParse(b *testing.B) {
	for _, tc := range []struct {
		name string
		f    Framing
		p    Parse
		line string
	}{
		{"nmea", Framing{Start: "$", Delimiter: "\r\n", Max: 128}, Parse{NMEA: true}, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"},
		{"regex", Framing{Max: 128}, Parse{Regex: `T=(?P<t>-?[0-9.]+) H=(?P<h>[0-9.]+)`}, "T=21.5 H=40.2\n"},
		{"kv", Framing{Max: 128}, Parse{KV: true}, "T=21.5 H=40.2 P=1013.2\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			stream := []byte(strings.Repeat(tc.line, 64))
			fr := newFramer(tc.f)
			parse, err := newParser(tc.p)
			if err != nil {
				b.Fatal(err)
			}
			var n, bad int
			emit := func(frame []byte, _ time.Time) {
				if _, err := parse(frame); err != nil {
					bad++
				}
				n++
			}
			now := time.Now()
			b.SetBytes(int64(len(stream)))
			for b.Loop() {
				for p := stream; len(p) > 0; {
					k := min(64, len(p))
					fr.feed(p[:k], now, emit)
					p = p[k:]
				}
			}
			if bad > 0 {
				b.Fatalf("%d of %d frames did not parse", bad, n)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}
