package faults

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Config bombs sent to the running daemon by SIGHUP: each reload is
// refused quickly and cheaply, the gateway stays up and healthy, and its
// leaves keep publishing.
func TestFaultReloadBombs(t *testing.T) {
	l := NewLedger()
	spec := leafSpec{paho: 1, rate: 50, window: 8, size: 64}
	g := newGateway(t, gwConfig{leaves: spec.ids()})
	g.start()
	ls := startLeaves(t, spec, g.hubAddr, l)
	defer ls.stop()
	ls.awaitAcks(t, 20, 10*time.Second)
	good, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var merge strings.Builder
	merge.WriteString("x-0: &a0 {k: v}\n")
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&merge, "x-%d: &a%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	bombs := []struct{ name, src string }{
		{"nested brackets, 40 KB", string(good) + "devices: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"},
		{"merge-key bomb", string(good) + merge.String()},
		{"2 MiB", string(good) + "# " + strings.Repeat("x", 2<<20) + "\n"},
	}
	for i, b := range bombs {
		if err := os.WriteFile(g.cfgPath, []byte(b.src), 0o600); err != nil {
			t.Fatal(err)
		}
		g.proc.Signal(syscall.SIGHUP)
		re := regexp.MustCompile(`(?s)(reload refused.*){` + fmt.Sprint(i+1) + `}`)
		g.proc.WaitFor(t, re, 20*time.Second)
		before := ls.acks()
		time.Sleep(500 * time.Millisecond)
		if ls.acks() == before {
			t.Errorf("%s: the leaf got no PUBACK in the 500 ms after the reload", b.name)
		}
	}
	if !g.alive() {
		t.Fatalf("gateway died:\n%s", g.proc.Output())
	}
	if code, body := g.health(); code != 200 {
		t.Errorf("/healthz %d %q after the bombs", code, body)
	}
	rss := g.peakRSSMiB()
	t.Logf("peak RSS %.1f MiB", rss)
	if rss > 150 {
		t.Errorf("peak RSS %.1f MiB: a refused reload cost the running gateway memory", rss)
	}
}
