package msg

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		err  bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"4KB", 4000, false},
		{"4kb", 4000, false},
		{"4KiB", 4096, false},
		{"4 KiB", 4096, false},
		{"512MiB", 512 << 20, false},
		{"1.5GiB", 3 << 29, false},
		{"1.5KB", 1500, false},
		{"2TiB", 2 << 40, false},
		{"10B", 10, false},
		{"1M", 1000000, false},
		{"1Mi", 1 << 20, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"-1", 0, true},
		{"1.5B", 0, true},
		{"512MiBs", 0, true},
		{"1.2.3KB", 0, true},
		{"99999999999TiB", 0, true},
		{"99999999999999999999", 0, true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestSizeString(t *testing.T) {
	for s, want := range map[Size]string{0: "0B", 1000: "1000B", 4096: "4KiB", 512 << 20: "512MiB", 3 << 29: "1536MiB", 2 << 40: "2TiB"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %s, want %s", int64(s), got, want)
		}
		if back, err := ParseSize(s.String()); err != nil || back != s {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s.String(), back, err, int64(s))
		}
	}
}
