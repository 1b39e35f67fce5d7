package modbus

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

func runTool(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut strings.Builder
	if code := Tool(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("outpost modbus %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String()
}

var (
	mbpollLine = regexp.MustCompile(`(?m)^\[(\d+)\]:\s+(\S+)`)
	toolLine   = regexp.MustCompile(`(?m)^\w+\[(\d+)\] = (\S+)$`)
)

// numbers extracts "address value" pairs, bools as 0/1.
func numbers(t *testing.T, re *regexp.Regexp, out string) [][2]float64 {
	t.Helper()
	var got [][2]float64
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		a, _ := strconv.ParseFloat(m[1], 64)
		s := map[string]string{"true": "1", "false": "0"}[m[2]]
		if s == "" {
			s = m[2]
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("value %q in %q", m[2], out)
		}
		got = append(got, [2]float64{a, v})
	}
	if len(got) == 0 {
		t.Fatalf("no values in %q", out)
	}
	return got
}

func mbpoll(t *testing.T, args ...string) string {
	t.Helper()
	bin := peertest.Need(t, "mbpoll")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mbpoll %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func agree(t *testing.T, mb, ours [][2]float64) {
	t.Helper()
	if len(mb) != len(ours) {
		t.Fatalf("mbpoll %v, outpost %v", mb, ours)
	}
	for i := range mb {
		// mbpoll prints floats with 6 significant digits.
		if mb[i][0] != ours[i][0] || math.Abs(mb[i][1]-ours[i][1]) > 1e-5*math.Abs(mb[i][1]) {
			t.Errorf("at %d: mbpoll %v, outpost %v", i, mb[i], ours[i])
		}
	}
}

func TestToolAgreesWithMbpoll(t *testing.T) {
	peertest.Need(t, "mbpoll")
	s := startTCPSlave(t)
	port := fmt.Sprint(s.port)
	for _, tc := range []struct {
		name   string
		mbpoll []string
		ours   []string
	}{
		{"holding uint16", []string{"-t", "4", "-r", "0", "-c", "10"}, []string{"--count", "10"}},
		{"input", []string{"-t", "3", "-r", "0", "-c", "5"}, []string{"--table", "input", "--count", "5"}},
		{"coils", []string{"-t", "0", "-r", "0", "-c", "8"}, []string{"--table", "coil", "--count", "8"}},
		{"discrete", []string{"-t", "1", "-r", "0", "-c", "8"}, []string{"--table", "discrete", "--count", "8"}},
		{"float32 ABCD", []string{"-t", "4:float", "-B", "-r", "11", "-c", "2"}, []string{"--address", "11", "--count", "2", "--type", "float32"}},
		{"float32 CDAB", []string{"-t", "4:float", "-r", "13"}, []string{"--address", "13", "--type", "float32", "--order", "CDAB"}},
		{"int32 ABCD", []string{"-t", "4:int", "-B", "-r", "3"}, []string{"--address", "3", "--type", "int32"}},
		{"int32 CDAB", []string{"-t", "4:int", "-r", "5", "-c", "3"}, []string{"--address", "5", "--type", "int32", "--order", "CDAB", "--count", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mb := mbpoll(t, append([]string{"-m", "tcp", "-p", port, "-a", "1", "-0", "-1"}, append(tc.mbpoll, "127.0.0.1")...)...)
			ours := runTool(t, append([]string{"read", s.url()}, tc.ours...)...)
			agree(t, numbers(t, mbpollLine, mb), numbers(t, toolLine, ours))
		})
	}
	// 1-based references: mbpoll's default, our --address-base 1.
	mb := mbpoll(t, "-m", "tcp", "-p", port, "-a", "1", "-1", "-t", "4", "-r", "1", "-c", "3", "127.0.0.1")
	ours := runTool(t, "read", s.url(), "--address-base", "1", "--address", "1", "--count", "3")
	agree(t, numbers(t, mbpollLine, mb), numbers(t, toolLine, ours))

	// Writes each way: ours read by mbpoll, mbpoll's read by ours.
	if out := runTool(t, "write", s.url(), "--address", "130", "--type", "float32", "--order", "CDAB", "12.5"); out != "holding[130] = 12.5\n" {
		t.Errorf("write printed %q", out)
	}
	s.WaitFor(t, regexp.MustCompile(regexp.QuoteMeta("WRITE hr 130 [0, 16712]")), 3*time.Second)
	agree(t, numbers(t, mbpollLine, mbpoll(t, "-m", "tcp", "-p", port, "-a", "1", "-0", "-1", "-t", "4:float", "-r", "130", "127.0.0.1")), [][2]float64{{130, 12.5}})
	runTool(t, "write", s.url(), "--table", "coil", "--address", "20", "1", "0", "1")
	s.WaitFor(t, regexp.MustCompile(regexp.QuoteMeta("WRITE co 20 [1, 0, 1]")), 3*time.Second)
	mbpoll(t, "-m", "tcp", "-p", port, "-a", "1", "-0", "-1", "-t", "4", "-r", "140", "127.0.0.1", "4321")
	agree(t, numbers(t, toolLine, runTool(t, "read", s.url(), "--address", "140")), [][2]float64{{140, 4321}})
}

func TestToolAgreesWithMbpollRTU(t *testing.T) {
	peertest.Need(t, "mbpoll")
	s := startRTUSlave(t, 19200)
	rtu := []string{"-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-0", "-1"}
	mb := mbpoll(t, append(rtu, "-t", "4:float", "-r", "13", s.pty.A)...)
	ours := runTool(t, "read", s.url(), "--address", "13", "--type", "float32", "--order", "CDAB")
	agree(t, numbers(t, mbpollLine, mb), numbers(t, toolLine, ours))
	mb = mbpoll(t, append(rtu, "-t", "4", "-r", "0", "-c", "20", s.pty.A)...)
	agree(t, numbers(t, mbpollLine, mb), numbers(t, toolLine, runTool(t, "read", s.url(), "--count", "20")))
}

func TestToolUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage:"},
		{[]string{"--help"}, 0, "outpost modbus scan"},
		{[]string{"read", "--help"}, 0, "-order"},
		{[]string{"frob"}, 2, "unknown command"},
		{[]string{"read"}, 2, "missing URL"},
		{[]string{"read", "tcp://127.0.0.1:1", "--type", "float16"}, 1, "--type"},
		{[]string{"read", "tcp://127.0.0.1:1", "--count", "200"}, 1, "--count"},
		{[]string{"read", "nope://x"}, 1, "unknown scheme"},
		{[]string{"write", "tcp://127.0.0.1:1", "--table", "input", "1"}, 1, "read-only"},
		{[]string{"write", "tcp://127.0.0.1:1", "--type", "int16", "70000"}, 1, "out of int16 range"},
		{[]string{"scan", "tcp://127.0.0.1:1", "--units", "9-3"}, 1, "--units"},
	} {
		var out, errOut strings.Builder
		code := Tool(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, output %q %q; want %d with %q", tc.args, code, out.String(), errOut.String(), tc.code, tc.want)
		}
	}
}
