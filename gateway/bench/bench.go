// Package bench measures this hardware with the gateway's own parts, for
// `outpost bench`: durable appends to the store (Store), QoS 1 ingest
// through the hub (Ingest), a backlog forwarded by the cloud link (Drain),
// and the time `outpost run` takes to be ready on a large queue (Restart).
//
// Each benchmark returns a Report whose Metrics use the keys listed under
// "Benchmarks" in the design notes; a figure a run could not measure is
// absent, never faked. The peers a benchmark compares against (Mosquitto,
// a Mosquitto bridge) are started by the benchmark on loopback.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// A Report is what one benchmark measured.
type Report struct {
	Bench   string             `json:"bench"`   // "store", "ingest", "drain" or "restart"
	Machine string             `json:"machine"` // host, OS/arch, CPUs and CPU model
	Metrics map[string]float64 `json:"metrics"`
	Text    string             `json:"-"` // the human table, each line ending in a newline
}

// JSON is the report as one JSON object,
// {"bench":"NAME","machine":"...","metrics":{"key":number,...}}.
func (r *Report) JSON() []byte {
	b, _ := json.Marshal(r)
	return b
}

// Log receives what a benchmark says while it runs; a nil func is silent.
type Log struct {
	Progress func(format string, args ...any) // what it is doing, one line a call
	Note     func(format string, args ...any) // a note on the run, or a figure it could not measure
}

func (l Log) progress(format string, args ...any) {
	if l.Progress != nil {
		l.Progress(format, args...)
	}
}

func (l Log) note(format string, args ...any) {
	if l.Note != nil {
		l.Note(format, args...)
	}
}

// errInterrupted is returned when ctx ends a benchmark before it is done.
var errInterrupted = errors.New("interrupted")

// machine describes this machine for the report.
func machine() string {
	host, _ := os.Hostname()
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (strings.TrimSpace(k) == "model name" || strings.TrimSpace(k) == "Model") {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	s := fmt.Sprintf("%s %s/%s %d CPU", host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if model != "" {
		s += " (" + model + ")"
	}
	return s
}

// peakRSS is this process's peak resident set in MiB (VmHWM).
func peakRSS() (float64, bool) { return selfStatus("VmHWM:") }

// selfStatus reads a kB field of /proc/self/status, in MiB.
func selfStatus(field string) (float64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, false
			}
			return kb / 1024, true
		}
	}
	return 0, false
}

// procPeakRSS is VmHWM of process pid in MiB (0 when unreadable).
func procPeakRSS(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// round rounds v to digits decimal places.
func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
