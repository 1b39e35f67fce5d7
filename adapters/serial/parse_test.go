package serial

import (
	"reflect"
	"strings"
	"testing"
)

func TestParsers(t *testing.T) {
	tests := []struct {
		name    string
		p       Parse
		frame   string
		want    map[string]any
		wantErr string
	}{
		{"regex", Parse{Regex: `T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+)(?: (?P<state>\w+))?`},
			"T=-3.5 H=40", map[string]any{"temperature": -3.5, "humidity": 40.0}, ""},
		{"regex text group", Parse{Regex: `(?P<id>\w+):(?P<v>\S+)`},
			"dev7:fault", map[string]any{"id": "dev7", "v": "fault"}, ""},
		{"regex scale", Parse{Regex: `(?P<t>\d+)`, Scale: map[string]float64{"t": 0.1}},
			"raw 215", map[string]any{"t": 21.5}, ""},
		{"regex no match", Parse{Regex: `T=(?P<t>\d+)`}, "H=40", nil, "does not match"},
		{"regex binary", Parse{Regex: `(?P<t>\d+)`}, "\xff\xfe1", nil, "UTF-8"},
		{"kv", Parse{KV: true}, "T=21.5 H=40 OK", map[string]any{"T": 21.5, "H": 40.0}, ""},
		{"kv colons and semicolons", Parse{KV: true}, "V:230.1;I:512;st:run", map[string]any{"V": 230.1, "I": 512.0, "st": "run"}, ""},
		{"kv spaced", Parse{KV: true, Scale: map[string]float64{"I": 0.001}}, "V = 230, I = 512", map[string]any{"V": 230.0, "I": 0.512}, ""},
		{"kv nothing", Parse{KV: true}, "hello world", nil, "no key=value"},
		{"kv NaN stays text", Parse{KV: true}, "a=NaN b=Inf c=1e3", map[string]any{"a": "NaN", "b": "Inf", "c": 1000.0}, ""},
		{"json nested", Parse{JSON: true}, `{"t":21.5,"ok":true,"env":{"h":40,"n":null},"v":[1,2],"s":"x"}`,
			map[string]any{"t": 21.5, "ok": true, "env.h": 40.0, "v.0": 1.0, "v.1": 2.0, "s": "x"}, ""},
		{"json not object", Parse{JSON: true}, `[1,2]`, nil, "want an object"},
		{"json broken", Parse{JSON: true}, `{"t":`, nil, "json"},
		{"raw text", Parse{}, "abc\xff", map[string]any{"raw": "abc\uFFFD"}, ""},
		{"raw base64", Parse{Raw: "base64"}, "\xaa\x01\x02", map[string]any{"raw": "qgEC"}, ""},
		{"nmea GGA", Parse{NMEA: true}, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
			map[string]any{"sentence": "GPGGA", "utc": "12:35:19", "lat": 48.1173, "lon": 11.5166667, "fix": 1.0, "sats": 8.0, "hdop": 0.9, "alt": 545.4, "geoid": 46.9}, ""},
		{"nmea RMC south west", Parse{NMEA: true}, nmeaSentence("GPRMC,225446,A,4916.45,S,12311.12,W,000.5,054.7,191194,020.3,E"),
			map[string]any{"sentence": "GPRMC", "utc": "1994-11-19T22:54:46Z", "valid": true, "lat": -49.2741667, "lon": -123.1853333, "speed_kn": 0.5, "course": 54.7}, ""},
		{"nmea GGA no fix", Parse{NMEA: true}, "$GPGGA,,,,,,0,00,,,M,,M,,*66",
			map[string]any{"sentence": "GPGGA", "fix": 0.0, "sats": 0.0}, ""},
		{"nmea generic named", Parse{NMEA: true, Fields: map[string][]string{"MWV": {"angle", "_", "speed", "unit", "status"}}},
			"$WIMWV,214.8,R,0.1,K,A*28", map[string]any{"sentence": "WIMWV", "angle": 214.8, "speed": 0.1, "unit": "K", "status": "A"}, ""},
		{"nmea generic unnamed", Parse{NMEA: true}, nmeaSentence("GPVTG,054.7,T,,M"),
			map[string]any{"sentence": "GPVTG", "f1": 54.7, "f2": "T", "f4": "M"}, ""},
		{"nmea bad checksum", Parse{NMEA: true}, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", nil, "checksum mismatch"},
		{"nmea no checksum", Parse{NMEA: true}, "$GPGGA,123519", nil, "no checksum"},
		{"nmea not nmea", Parse{NMEA: true}, "hello*00", nil, "no '$'"},
		{"nmea bad hemisphere", Parse{NMEA: true}, nmeaSentence("GPGGA,1,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), nil, "hemisphere"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if errs := tc.p.validate(); len(errs) > 0 {
				t.Fatalf("parse config does not validate: %v", errs)
			}
			p, err := newParser(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p([]byte(tc.frame))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q (values %v)", err, tc.wantErr, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// nmeaSentence adds $ and a correct checksum to body.
func nmeaSentence(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	const hex = "0123456789ABCDEF"
	return "$" + body + "*" + string(hex[sum>>4]) + string(hex[sum&15])
}
