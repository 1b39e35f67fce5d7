package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway"
)

// `outpost status` shows each identity of a per-device link, with what
// waits for a leaf whose connection is down.
func TestPrintStatusPerDevice(t *testing.T) {
	since := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	st := gateway.Status{ID: "gw-01", Healthy: true, Link: &cloudlink.Status{Protocol: "azure-iothub", Since: since, Forwarded: 12,
		Devices: map[string]cloudlink.DeviceStatus{
			"leaf-2": {Since: since, Parked: 700, LastError: "not authorized"},
			"gw-01":  {Connected: true, Since: since, Forwarded: 12},
		}}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{
		"link      azure-iothub down since 2026-11-27T08:00:00Z, 12 forwarded, 0 outages\n" +
			"  as      gw-01        up   12 forwarded, 0 outages\n" +
			"  as      leaf-2       down 0 forwarded, 0 outages, 700 waiting (not authorized)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks\n%s\ngot:\n%s", want, out)
		}
	}
}
