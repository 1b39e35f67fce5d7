package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// lockedBuffer is written by the tool's goroutine and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSerialSniffShowsParsedFrames runs "outpost serial sniff" on one end of
// a socat pty pair while the test plays a sensor on the other end.
func TestSerialSniffShowsParsedFrames(t *testing.T) {
	pp := peertest.StartPtyPair(t)
	var out, errOut lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- cmdSerial(ctx, []string{"sniff", pp.B, "--baud", "9600", "--parse", "kv", "--count", "2"}, &out, &errOut)
	}()
	for !strings.Contains(errOut.String(), "serial port open") {
		if ctx.Err() != nil {
			t.Fatalf("sniff did not open the port:\n%s", errOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	sensor, err := os.OpenFile(pp.A, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sensor.Close()
	if _, err := sensor.Write([]byte("T=21.5 H=40\r\nhello\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d:\n%s", c, errOut.String())
		}
	case <-ctx.Done():
		t.Fatalf("sniff did not stop after --count 2:\n%s", out.String())
	}
	for _, want := range []string{`"T=21.5 H=40"  {"H":40,"T":21.5}`, `"hello"  parse error: no key=value pairs`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSerialHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if c := cmdSerial(context.Background(), []string{"--help"}, &out, &errOut); c != 0 || !strings.Contains(out.String(), "outpost serial sniff PORT") {
		t.Errorf("--help = %d\n%s%s", c, out.String(), errOut.String())
	}
	if c := cmdSerial(context.Background(), nil, &out, &errOut); c != 2 {
		t.Errorf("no args = %d, want 2", c)
	}
}
