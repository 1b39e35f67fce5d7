//go:build hardware

package gpio

// Real-driver tests: go test -tags hardware ./adapters/gpio
//
// They need a gpiochip (/dev/gpiochip*, periph's gpioioctl driver), such as
// a Raspberry Pi or a kernel with gpio-sim. The loopback test also needs two
// pins wired together, named in the environment:
//
//	OUTPOST_GPIO_OUT=GPIO20 OUTPOST_GPIO_IN=GPIO21 go test -tags hardware ./adapters/gpio
//
// The output pin is driven; use pins with nothing else connected.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio/gpioreg"

	"github.com/outpost-iot/outpost/adapters/adaptertest"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func needChip(t *testing.T) {
	t.Helper()
	chips, _ := filepath.Glob("/dev/gpiochip*")
	if len(chips) == 0 {
		t.Skip("no /dev/gpiochip*: run on a board with GPIO or a kernel with gpio-sim")
	}
	if hostErr != nil {
		t.Fatalf("periph host init: %v", hostErr)
	}
}

func TestHardwareRegistry(t *testing.T) {
	needChip(t)
	pins := gpioreg.All()
	if len(pins) == 0 {
		t.Fatal("a gpiochip exists but periph registered no pins")
	}
	t.Logf("%d pins, first %s, last %s", len(pins), pins[0], pins[len(pins)-1])
}

func TestHardwareLoopback(t *testing.T) {
	needChip(t)
	outPin, inPin := os.Getenv("OUTPOST_GPIO_OUT"), os.Getenv("OUTPOST_GPIO_IN")
	if outPin == "" || inPin == "" {
		t.Skip("set OUTPOST_GPIO_OUT and OUTPOST_GPIO_IN to two pins wired together")
	}
	cfg := Config{Interval: time.Minute, Points: []Point{
		{Name: "out", Pin: outPin, Direction: "out", Initial: "low", Writable: true, Failsafe: "low"},
		{Name: "in", Pin: inPin, Edge: "both", Pull: "down"},
	}}
	d, err := New("hw-1", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := adaptertest.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, rec) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	rec.WaitN(t, 1, 2*time.Second) // the start report

	// waitIn waits for a reading of the input with value v, after reading n.
	waitIn := func(n int, v bool) (int, time.Time) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			rs := rec.Readings()
			for i := n; i < len(rs); i++ {
				if got, ok := rs[i].Values["in"]; ok && got == v {
					return i + 1, rs[i].Time
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("no reading in=%v", v)
		return 0, time.Time{}
	}
	n := 1
	for _, v := range []bool{true, false} {
		if _, err := d.Apply(ctx, msg.Command{Write: map[string]any{"out": v}}); err != nil {
			t.Fatal(err)
		}
		n, _ = waitIn(n, v)
	}
	res, err := d.Apply(ctx, msg.Command{Pulse: map[string]time.Duration{"out": 200 * time.Millisecond}})
	if err != nil || res.Status != msg.StatusDone {
		t.Fatalf("pulse = %+v, %v", res, err)
	}
	n, on := waitIn(n, true)
	_, off := waitIn(n, false)
	width := off.Sub(on)
	t.Logf("pulse of 200ms seen on the input as %v", width)
	if width < 180*time.Millisecond || width > 250*time.Millisecond {
		t.Errorf("pulse width %v, want about 200ms", width)
	}
}
