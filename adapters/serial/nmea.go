package serial

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseNMEA reads one NMEA 0183 sentence ("$GPGGA,...*47"). The checksum is
// required and checked. Every reading carries "sentence" (the address, e.g.
// "GPGGA"). GGA and RMC are decoded; other sentences give their fields under
// the names in fields[type] ("_" skips a field), or f1..fN. Empty fields are
// left out.
func parseNMEA(frame []byte, fields map[string][]string) (map[string]any, error) {
	i := bytes.IndexAny(frame, "$!")
	if i < 0 {
		return nil, errors.New("nmea: no '$' or '!'")
	}
	s := string(bytes.TrimRight(frame[i:], " \r\n"))
	star := strings.LastIndexByte(s, '*')
	if star < 0 {
		return nil, errors.New("nmea: no checksum")
	}
	if len(s) != star+3 {
		return nil, fmt.Errorf("nmea: checksum must be two hex digits, got %q", s[star+1:])
	}
	want, err := strconv.ParseUint(s[star+1:], 16, 8)
	if err != nil {
		return nil, fmt.Errorf("nmea: bad checksum %q", s[star+1:])
	}
	var sum byte
	for j := 1; j < star; j++ {
		sum ^= s[j]
	}
	if sum != byte(want) {
		return nil, fmt.Errorf("nmea: checksum mismatch: sentence says %02X, computed %02X", want, sum)
	}
	f := strings.Split(s[1:star], ",")
	addr := f[0]
	if len(addr) < 3 {
		return nil, fmt.Errorf("nmea: bad address %q", addr)
	}
	vs := map[string]any{"sentence": addr}
	typ := addr
	if len(addr) == 5 && addr[0] != 'P' {
		typ = addr[2:]
	}
	switch {
	case typ == "GGA" && len(f) >= 10:
		if err := latLon(vs, f[2], f[3], f[4], f[5]); err != nil {
			return nil, err
		}
		put(vs, "utc", clock(f[1]))
		putNum(vs, "fix", f[6])
		putNum(vs, "sats", f[7])
		putNum(vs, "hdop", f[8])
		putNum(vs, "alt", f[9])
		if len(f) > 11 {
			putNum(vs, "geoid", f[11])
		}
	case typ == "RMC" && len(f) >= 10:
		if err := latLon(vs, f[3], f[4], f[5], f[6]); err != nil {
			return nil, err
		}
		vs["valid"] = f[2] == "A"
		putNum(vs, "speed_kn", f[7])
		putNum(vs, "course", f[8])
		if t := clock(f[1]); t != "" && len(f[9]) == 6 {
			// ddmmyy; NMEA has no century. 80-99 are 1980-1999.
			yy, _ := strconv.Atoi(f[9][4:6])
			century := 2000
			if yy >= 80 {
				century = 1900
			}
			vs["utc"] = fmt.Sprintf("%04d-%s-%sT%sZ", century+yy, f[9][2:4], f[9][0:2], t)
		}
	default:
		names := fields[typ]
		for j, v := range f[1:] {
			name := fmt.Sprintf("f%d", j+1)
			if j < len(names) {
				name = names[j]
			}
			if name == "_" || v == "" {
				continue
			}
			vs[name] = number(v)
		}
	}
	return vs, nil
}

func put(vs map[string]any, k, v string) {
	if v != "" {
		vs[k] = v
	}
}

func putNum(vs map[string]any, k, v string) {
	if v != "" {
		vs[k] = number(v)
	}
}

// clock turns hhmmss(.ss) into hh:mm:ss(.ss).
func clock(s string) string {
	if len(s) < 6 {
		return ""
	}
	return s[0:2] + ":" + s[2:4] + ":" + s[4:]
}

// latLon sets lat and lon in decimal degrees from NMEA's (d)ddmm.mmmm and
// hemisphere fields; both are left out when the position is empty (no fix).
func latLon(vs map[string]any, lat, ns, lon, ew string) error {
	if lat == "" || lon == "" {
		return nil
	}
	la, err := degrees(lat, ns, "N", "S")
	if err != nil {
		return fmt.Errorf("nmea: latitude: %w", err)
	}
	lo, err := degrees(lon, ew, "E", "W")
	if err != nil {
		return fmt.Errorf("nmea: longitude: %w", err)
	}
	if math.Abs(la) > 90 || math.Abs(lo) > 180 {
		return fmt.Errorf("nmea: position %v,%v out of range", la, lo)
	}
	vs["lat"], vs["lon"] = la, lo
	return nil
}

func degrees(v, hemi, pos, neg string) (float64, error) {
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || x < 0 {
		return 0, fmt.Errorf("bad value %q", v)
	}
	deg := math.Floor(x / 100)
	min := x - deg*100
	if min >= 60 {
		return 0, fmt.Errorf("bad minutes in %q", v)
	}
	d := math.Round((deg+min/60)*1e7) / 1e7
	switch hemi {
	case pos:
		return d, nil
	case neg:
		return -d, nil
	}
	return 0, fmt.Errorf("bad hemisphere %q", hemi)
}
