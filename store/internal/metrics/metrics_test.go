package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollectors(t *testing.T) {
	s := New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors(func() Values {
		return Values{Depth: [3]uint64{1, 2, 3}, Bytes: [3]int64{10, 20, 30}, MaxBytes: 100, Appends: 6}
	})...)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{"outpost_store_depth/high": 1, "outpost_store_depth/low": 3,
		"outpost_store_bytes/normal": 20, "outpost_store_max_bytes": 100, "outpost_store_appends_total": 6,
		"outpost_store_quarantined": 0, "outpost_store_disk_low_total": 0} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}
