package serial

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", sub, s.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sniff runs the tool on a pty pair, feeds the sensor end, and returns the
// exit code, stdout and stderr.
func sniff(t *testing.T, args []string, feed ...string) (int, string, string) {
	t.Helper()
	pp := peertest.StartPtyPair(t)
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := make(chan int, 1)
	go func() { code <- Tool(ctx, append([]string{"sniff", pp.B}, args...), &out, &errOut) }()
	errOut.waitFor(t, "serial port open")
	sensor := openSensor(t, pp.A)
	for _, s := range feed {
		if _, err := sensor.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case c := <-code:
		return c, out.String(), errOut.String()
	case <-ctx.Done():
		t.Fatalf("sniff did not stop after --count; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		return 0, "", ""
	}
}

func TestToolSniffShowsParsedFrames(t *testing.T) {
	code, out, errOut := sniff(t, []string{"--baud", "9600", "--parse", "regex=T=(?P<t>-?[0-9.]+)", "--scale", "t=10", "--count", "3"},
		"T=21.5\n", "junk\r\n", "T=", "-2\n", "T=99\n")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{`"T=21.5"  {"t":215}`, `"junk"  parse error: regex does not match`, `"T=-2"  {"t":-20}`}
	if len(lines) != len(want) {
		t.Fatalf("stdout:\n%s\nwant %d lines", out, len(want))
	}
	for i, w := range want {
		// Each line is "hh:mm:ss.mmm  <frame>  <values or error>".
		if _, rest, _ := strings.Cut(lines[i], "  "); rest != w {
			t.Errorf("line %d = %q, want time + %q", i, lines[i], w)
		}
	}
	if !strings.Contains(errOut, "sniff: frames=3 parsed=2 parse_errors=1") {
		t.Errorf("no summary in stderr:\n%s", errOut)
	}
}

func TestToolSniffNMEA(t *testing.T) {
	code, out, errOut := sniff(t, []string{"--framing", `delimiter=\r\n`, "--start", "$", "--parse", "nmea", "--count", "2"},
		"noise$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n",
		"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48\r\n")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, w := range []string{`"lat":48.1173`, `"sats":8`, `parse error: nmea: checksum mismatch`} {
		if !strings.Contains(out, w) {
			t.Errorf("stdout lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(errOut, "noise_bytes=5") {
		t.Errorf("stderr:\n%s", errOut)
	}
}

func TestToolUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{nil, 2, "Usage: outpost serial ports"},
		{[]string{"--help"}, 0, "sniff opens PORT"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"sniff", "--help"}, 0, "-framing string"},
		{[]string{"sniff"}, 2, "want exactly one PORT"},
		{[]string{"sniff", "/dev/x", "--framing", "lines"}, 2, `--framing "lines"`},
		{[]string{"sniff", "/dev/x", "--parse", "regex=(unnamed)"}, 2, "parse.regex: needs at least one named group"},
		{[]string{"sniff", "/dev/x", "--baud", "12345"}, 2, "baud: unsupported baud rate 12345"},
		{[]string{"sniff", "/dev/x", "--start", `\q`}, 2, "--start: bad escape"},
		{[]string{"sniff", "/dev/x", "--scale", "t"}, 2, `--scale "t"`},
		{[]string{"ports", "--help"}, 0, "by-id"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		code := Tool(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
			t.Errorf("Tool(%q) = %d\n%s%s\nwant %d and %q", tc.args, code, out.String(), errOut.String(), tc.code, tc.want)
		}
	}
}

func TestSniffFlagsToConfig(t *testing.T) {
	fs, f := newSniffFlags(&bytes.Buffer{})
	pos, err := parseInterleaved(fs, []string{"--baud", "4800", "/dev/ttyACM0", "--framing", "fixed=9", "--start", `\xaa`, "--parse", "raw=base64", "--request", `R\r`, "--interval", "2s"})
	if err != nil || len(pos) != 1 || pos[0] != "/dev/ttyACM0" {
		t.Fatalf("pos %v, err %v", pos, err)
	}
	if err := f.apply(); err != nil {
		t.Fatal(err)
	}
	c := f.cfg
	if c.Baud != 4800 || c.Framing.Fixed != 9 || !bytes.Equal(Bytes(c.Framing.Start), []byte{0xaa}) || c.Parse.Raw != "base64" || c.Request != "R\r" || c.Interval != 2*time.Second {
		t.Errorf("config = %+v", c)
	}
}

func TestListPorts(t *testing.T) {
	root := t.TempDir()
	sys := filepath.Join(root, "sys", "class", "tty")
	dev := filepath.Join(root, "dev")
	drivers := filepath.Join(root, "sys", "bus", "drivers")
	mk := func(path string) {
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		mk(filepath.Dir(name))
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	port := func(name, typ, driver string) {
		devdir := filepath.Join(root, "sys", "devices", name)
		mk(devdir)
		mk(filepath.Join(sys, name))
		link(devdir, filepath.Join(sys, name, "device"))
		if typ != "" {
			os.WriteFile(filepath.Join(sys, name, "type"), []byte(typ+"\n"), 0o644)
		}
		if driver != "" {
			mk(filepath.Join(drivers, driver))
			link(filepath.Join(drivers, driver), filepath.Join(devdir, "driver"))
		}
	}
	port("ttyS0", "4", "")
	port("ttyS1", "0", "serial") // no UART behind it
	// Linux 6.5+: the tty's device is a serial-base "port" whose parent
	// carries the UART driver.
	serialBase := filepath.Join(root, "sys", "bus", "serial-base", "drivers", "port")
	mk(serialBase)
	uart := filepath.Join(root, "sys", "devices")
	link(serialBase, filepath.Join(uart, "ttyS0", "driver"))
	mk(filepath.Join(drivers, "serial"))
	link(filepath.Join(drivers, "serial"), filepath.Join(uart, "driver"))
	port("ttyUSB0", "", "ftdi_sio")
	port("ttyACM0", "", "cdc_acm")
	mk(filepath.Join(sys, "console")) // virtual: no device
	link("../../ttyUSB0", filepath.Join(dev, "serial", "by-id", "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"))
	link("../../ttyACM0", filepath.Join(dev, "serial", "by-id", "usb-u-blox_GNSS-if00"))

	ports, err := listPorts(sys, dev)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ports {
		got = append(got, strings.ReplaceAll(fmt.Sprintf("%s %s %v", p.Path, p.Driver, p.ByID), root, ""))
	}
	want := []string{
		"/dev/ttyACM0 cdc_acm [/dev/serial/by-id/usb-u-blox_GNSS-if00]",
		"/dev/ttyS0 serial []",
		"/dev/ttyUSB0 ftdi_sio [/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ports:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var out bytes.Buffer
	printPorts(&out, []PortInfo{{Path: "/dev/ttyS0", Driver: "serial"}, {Path: "/dev/ttyUSB0", Driver: "ftdi_sio", ByID: []string{"/dev/serial/by-id/usb-FTDI-if00-port0"}}})
	if want := `PORT             DRIVER       BY-ID
/dev/ttyS0       serial       -
/dev/ttyUSB0     ftdi_sio     /dev/serial/by-id/usb-FTDI-if00-port0
`; out.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", out.String(), want)
	}
	var none bytes.Buffer
	printPorts(&none, nil)
	if none.String() != "no serial ports found\n" {
		t.Errorf("empty list printed %q", none.String())
	}
}

func TestToolPortsHere(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Tool(context.Background(), []string{"ports"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if s := out.String(); !strings.HasPrefix(s, "PORT ") && s != "no serial ports found\n" {
		t.Errorf("output:\n%s", s)
	}
	t.Logf("this machine:\n%s", out.String())
}
