package serial

import (
	"bytes"
	"encoding/base64"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// fuzzParses are the parsers FuzzParsers drives, one of each kind.
var fuzzParses = []Parse{
	{Regex: `(?P<a>-?\d+(?:\.\d+)?)(?:\s+(?P<b>\w+))?`},
	{KV: true},
	{KV: true, Scale: map[string]float64{"T": 0.1}},
	{JSON: true},
	{NMEA: true},
	{NMEA: true, Fields: map[string][]string{"MWV": {"angle", "_", "speed", "unit", "status"}}},
	{Raw: "base64"},
	{},
}

// FuzzParsers checks every parser on any frame: no panic; an error or a
// non-empty set of values, never both; values are finite numbers, text or
// booleans under non-empty names; the parser keeps nothing of the frame;
// raw frames come back exactly; NMEA positions are in range; and a
// sentence framed with a correct checksum never fails its checksum.
// Seeds beyond these are in testdata/fuzz/FuzzParsers.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{"T=1 H=2", `{"a":{"b":[1]}}`, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", "$*", "$GPRMC,1,A,9999.9,N,1,E,,,010180,*00"} {
		f.Add([]byte(s))
	}
	ps := make([]parser, len(fuzzParses))
	for i, pc := range fuzzParses {
		if errs := pc.validate(); len(errs) > 0 {
			f.Fatalf("%+v: %v", pc, errs)
		}
		p, err := newParser(pc)
		if err != nil {
			f.Fatal(err)
		}
		ps[i] = p
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		for i, p := range ps {
			pc := fuzzParses[i]
			mine := bytes.Clone(frame)
			vs, err := p(mine)
			for j := range mine {
				mine[j] ^= 0xFF // the framer reuses its buffer
			}
			if err != nil {
				if vs != nil {
					t.Fatalf("%+v on %q: values %v with error %v", pc, frame, vs, err)
				}
				continue
			}
			if len(vs) == 0 {
				t.Fatalf("%+v on %q: no values and no error", pc, frame)
			}
			checkValues(t, pc, frame, vs)
			if again, _ := p(frame); !reflect.DeepEqual(again, vs) {
				t.Fatalf("%+v on %q: values changed with the frame's buffer:\n%v\n%v", pc, frame, vs, again)
			}
			switch {
			case pc.Raw == "base64":
				if b, err := base64.StdEncoding.DecodeString(vs["raw"].(string)); err != nil || !bytes.Equal(b, frame) {
					t.Fatalf("base64 of %q does not decode back: %v", frame, err)
				}
			case reflect.DeepEqual(pc, Parse{}):
				if vs["raw"] != strings.ToValidUTF8(string(frame), "\uFFFD") {
					t.Fatalf("raw %q -> %q", frame, vs["raw"])
				}
			case pc.NMEA:
				if _, ok := vs["sentence"].(string); !ok {
					t.Fatalf("nmea %q: no sentence in %v", frame, vs)
				}
				if lat, ok := vs["lat"].(float64); ok && math.Abs(lat) > 90 {
					t.Fatalf("nmea %q: lat %v", frame, lat)
				}
				if lon, ok := vs["lon"].(float64); ok && math.Abs(lon) > 180 {
					t.Fatalf("nmea %q: lon %v", frame, lon)
				}
			}
		}
		// Any body without framing characters, given $ and its checksum,
		// passes the checksum check: a failure names something else.
		body := string(frame)
		if !strings.ContainsAny(body, "$!*\r\n") && strings.TrimRight(body, " ") == body {
			_, err := ps[4]([]byte(nmeaSentence(body)))
			if err != nil && strings.Contains(err.Error(), "checksum") {
				t.Fatalf("nmea %q: %v", nmeaSentence(body), err)
			}
		}
	})
}

func checkValues(t *testing.T, pc Parse, frame []byte, vs map[string]any) {
	t.Helper()
	for k, v := range vs {
		if k == "" && !pc.JSON { // JSON may name a key ""
			t.Fatalf("%+v on %q: empty name in %v", pc, frame, vs)
		}
		switch x := v.(type) {
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("%+v on %q: %s = %v", pc, frame, k, x)
			}
		case string, bool:
		default:
			t.Fatalf("%+v on %q: %s is a %T", pc, frame, k, v)
		}
	}
}

// fuzzFramings are the framings FuzzFramer drives; max is set per input.
var fuzzFramings = []Framing{
	{},                              // lines, CR dropped
	{Delimiter: "\r\n"},             // two-byte delimiter
	{Delimiter: "END"},              // overlapping-prone delimiter
	{Start: "$", Delimiter: "\r\n"}, // NMEA-style
	{Start: "\xAA", Fixed: 6},       // binary fixed-length with a marker
	{Fixed: 4},                      // fixed-length without a marker
	{Idle: 50 * time.Millisecond},   // gap-framed
	{Start: "\xAA", Idle: 50 * time.Millisecond},
}

// FuzzFramer feeds a stream to each framing, cut into chunks where cuts
// says (each cut byte is a chunk length, and for idle framing a gap in
// milliseconds), and checks: no panic; no frame longer than max; the
// framer never holds more than max plus a delimiter; fixed frames have
// their length; frames start with the start marker and hold no second one;
// delimited frames hold no delimiter; where the stream holds no overlong
// line, lines come back exactly; and how a stream is cut into reads does
// not change the frames (except for idle framing, where the gaps are the
// frames). Seeds beyond these are in testdata/fuzz/FuzzFramer.
func FuzzFramer(f *testing.F) {
	f.Add(uint8(64), []byte("T=1\r\nT=2\n\nT=3\r\n"), []byte{3, 1, 7})
	f.Add(uint8(4), []byte("1234\n12345\n6789\nok\n"), []byte{5, 0, 2})
	f.Add(uint8(16), []byte("\x00\xffgarb$GPG$GPGGA,1*00\r\nxx$A\r\n"), []byte{9, 3})
	f.Add(uint8(6), []byte("\xAA\x01\x02\x03\x04\x05\x00\xAA\xAA\x01\x02\x03\x04"), []byte{1, 200, 4})
	f.Add(uint8(3), []byte("abcdefghijkENDxyzEND"), []byte{8, 4, 7})
	f.Fuzz(func(t *testing.T, max uint8, stream, cuts []byte) {
		for _, fr := range fuzzFramings {
			fr.Max = int(max)%64 + 1
			if fr.Fixed > fr.Max {
				fr.Max = fr.Fixed
			}
			if errs := fr.validate(); len(errs) > 0 {
				t.Fatalf("%+v: %v", fr, errs)
			}
			whole := runFramer(t, fr, stream, nil)
			cut := runFramer(t, fr, stream, cuts)
			for _, got := range [][]string{whole.frames, cut.frames} {
				checkFrames(t, fr, stream, got)
			}
			if fr.Idle == 0 && (!slices.Equal(whole.frames, cut.frames) || whole.overlong != cut.overlong || whole.noise != cut.noise) {
				t.Fatalf("%+v on %q: cut %v changes the frames:\n%q %d %d\n%q %d %d", fr, stream, cuts,
					whole.frames, whole.overlong, whole.noise, cut.frames, cut.overlong, cut.noise)
			}
			if fr.Delimiter == "" && fr.Fixed == 0 && fr.Idle == 0 && whole.overlong == 0 {
				lines := strings.Split(string(stream), "\n")
				lines = lines[:len(lines)-1] // the last has no delimiter yet
				for i, l := range lines {
					lines[i] = strings.TrimSuffix(l, "\r")
				}
				if !slices.Equal(lines, whole.frames) {
					t.Fatalf("%q: lines %q, framer %q", stream, lines, whole.frames)
				}
			}
		}
	})
}

type framed struct {
	frames          []string
	overlong, noise uint64
}

// runFramer feeds stream to a new framer, whole or in the chunks cuts
// gives, then lets the line go silent.
func runFramer(t *testing.T, fr Framing, stream, cuts []byte) framed {
	t.Helper()
	fm := newFramer(fr)
	var out framed
	emit := func(frame []byte, _ time.Time) { out.frames = append(out.frames, string(frame)) }
	now := time.Unix(0, 0)
	limit := fm.max + len(fm.delim) + len(fm.start)
	rest := stream
	for i := 0; len(rest) > 0; i++ {
		n := len(rest)
		if i < len(cuts) {
			n = min(int(cuts[i])%16, n)
			now = now.Add(time.Duration(cuts[i]) * time.Millisecond)
		}
		if n == 0 {
			fm.tick(now, emit)
			continue
		}
		fm.feed(rest[:n], now, emit)
		rest = rest[n:]
		if len(fm.buf) > limit {
			t.Fatalf("%+v: framer holds %d bytes, max %d", fr, len(fm.buf), fm.max)
		}
	}
	fm.tick(now.Add(time.Hour), emit)
	if fm.frames != uint64(len(out.frames)) {
		t.Fatalf("%+v: counted %d frames, emitted %d", fr, fm.frames, len(out.frames))
	}
	out.overlong, out.noise = fm.overlong, fm.noise
	return out
}

func checkFrames(t *testing.T, fr Framing, stream []byte, frames []string) {
	t.Helper()
	start := string(Bytes(fr.Start))
	for _, fm := range frames {
		switch {
		case len(fm) > fr.Max:
			t.Fatalf("%+v on %q: frame %q over max", fr, stream, fm)
		case fr.Fixed > 0 && len(fm) != fr.Fixed:
			t.Fatalf("%+v on %q: frame %q is not %d bytes", fr, stream, fm, fr.Fixed)
		case start != "" && !strings.HasPrefix(fm, start):
			t.Fatalf("%+v on %q: frame %q does not start with %q", fr, stream, fm, start)
		case start != "" && fr.Fixed == 0 && strings.Contains(fm[len(start):], start):
			t.Fatalf("%+v on %q: frame %q holds a second start", fr, stream, fm)
		case fr.Fixed == 0 && fr.Idle == 0 && strings.Contains(fm, string((&fr).delimiter())):
			t.Fatalf("%+v on %q: frame %q holds the delimiter", fr, stream, fm)
		}
	}
}
