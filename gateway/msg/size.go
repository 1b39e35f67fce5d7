package msg

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a byte count, written in YAML as a plain integer (4096) or with a
// unit: 4KB, 512MiB, "1.5 GB". KB/MB/GB/TB are powers of 1000 and
// KiB/MiB/GiB/TiB powers of 1024; units are case-insensitive and "B" alone
// means bytes.
type Size int64

// Byte multiples.
const (
	B   Size = 1
	KB  Size = 1000
	MB  Size = 1000 * KB
	GB  Size = 1000 * MB
	TB  Size = 1000 * GB
	KiB Size = 1024
	MiB Size = 1024 * KiB
	GiB Size = 1024 * MiB
	TiB Size = 1024 * GiB
)

var sizeUnits = map[string]Size{
	"": B, "b": B,
	"k": KB, "kb": KB, "m": MB, "mb": MB, "g": GB, "gb": GB, "t": TB, "tb": TB,
	"ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB, "ti": TiB, "tib": TiB,
}

// ParseSize reads a size such as "512MiB", "4 KB" or "4096".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("bad size %q: want a number of bytes, optionally with a unit (4096, 4KiB, 512MiB)", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("bad size %q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, strings.TrimSpace(t[i:]))
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("bad size %q: too large", s)
		}
		return Size(n) * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %q is not a number", s, num)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("bad size %q: too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("bad size %q: not a whole number of bytes", s)
	}
	return Size(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, so Size also works
// with other decoders (such as goccy/go-yaml decoding an adapter config).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// String prints the size with the largest binary unit that divides it
// exactly: 512MiB, 4KiB, 1000B.
func (s Size) String() string {
	for _, u := range []struct {
		n    string
		mult Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.n
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
