package hub

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

var _ Appender = (*store.Queue)(nil)

func openStore(t testing.TB, dir string, opt store.Options) *store.Queue {
	t.Helper()
	q, err := store.Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// leaseAll reads every record in the store (leasing them).
func leaseAll(t testing.TB, q *store.Queue) []*msg.Record {
	t.Helper()
	var all []*msg.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		recs, err := q.Lease(ctx, 4096)
		cancel()
		if err != nil {
			return all
		}
		all = append(all, recs...)
	}
}

func TestRealStoreRecordsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	q := openStore(t, dir, store.Options{})
	h := startHub(t, q, nil)
	c := mustPaho(t, h.Addr(), "leaf-1", nil)
	var toks []paho.Token
	for i := range 200 {
		toks = append(toks, c.Publish(fmt.Sprintf("devices/leaf-1/messages/events/%%24.mid=r%d&n=%d", i, i), 1, false, fmt.Sprint(i)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	c.Disconnect(0)
	h.Close()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openStore(t, dir, store.Options{})
	defer q.Close()
	recs := leaseAll(t, q)
	if len(recs) != 200 {
		t.Fatalf("%d records after reopen, want 200", len(recs))
	}
	for i, r := range recs {
		if r.ID != fmt.Sprintf("r%d", i) || r.Device != "leaf-1" || string(r.Payload) != fmt.Sprint(i) || r.Priority != msg.High {
			t.Fatalf("record %d = %+v", i, r)
		}
		if v, _ := r.Props.Get("n"); v != fmt.Sprint(i) {
			t.Fatalf("record %d props %v", i, r.Props)
		}
	}
}

func TestRealStoreRejectWhenFull(t *testing.T) {
	q := openStore(t, t.TempDir(), store.Options{Config: store.Config{MaxBytes: 2000, WhenFull: store.Reject}})
	defer q.Close()
	h := startHub(t, q, nil)
	c := rawConnect5(t, h.Addr(), "leaf-1")
	var full byte
	for i := 1; i <= 40 && full == 0; i++ {
		if _, err := c.Write(publish5("devices/leaf-1/messages/events/", uint16(i), make([]byte, 100))); err != nil {
			t.Fatal(err)
		}
		typ, body := readPacket(t, c)
		if typ != 0x40 || int(body[1]) != i {
			t.Fatalf("got %#x %x", typ, body)
		}
		if len(body) > 2 && body[2] != 0 {
			full = body[2]
		}
	}
	if full != 0x97 {
		t.Fatalf("reason %#x when the store is full, want 0x97", full)
	}
	// MQTT 3.1.1: no PUBACK, disconnected.
	c4 := rawConnect4(t, h.Addr(), "leaf-2")
	if _, err := c4.Write(publish4("devices/leaf-2/messages/events/", 1, make([]byte, 100))); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := readPacketErr(c4, 10*time.Second); err == nil {
		t.Fatalf("3.1.1 client got %#x %x from a full store, want disconnect", typ, body)
	}
	if s := h.Stats(); s.RefusedFull != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// The kill -9 test: a child process (this test binary again) runs a hub on
// the real store; the parent publishes and SIGKILLs the child right after
// a PUBACK arrives; every acknowledged message must be in the reopened store.
const childEnv = "HUB_TEST_CHILD_STORE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		runChild(dir)
		return
	}
	code := m.Run()
	if fuzzHub != nil {
		fuzzHub.Close()
	}
	if code == 0 {
		if leaked := hubGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind by the hub:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// hubGoroutines waits up to d for every goroutine running hub or mochi code
// to end, and returns the stacks of those that did not.
func hubGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "hubGoroutines") || strings.Contains(g, "(*fakeStore).run") {
				continue
			}
			if strings.Contains(g, "outpost/gateway/hub.") || strings.Contains(g, "mochi-mqtt/server") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runChild(dir string) {
	q, err := store.Open(dir, store.Options{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	h, err := New(Options{Config: Config{Listen: "127.0.0.1:0", Clients: []Client{{ID: "leaf-1", PasswordHash: testHash}}}}, q)
	if err == nil {
		err = h.Start()
	}
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", h.Addr())
	select {}
}

func TestKillNineAfterPuback(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt%d", v), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+dir)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			line, err := bufio.NewReader(out).ReadString('\n')
			addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
			if err != nil || !ok {
				t.Fatalf("child said %q (%v)", line, err)
			}
			c := rawConnect4(t, addr, "leaf-1")
			publish := publish4
			if v == 5 {
				c = rawConnect5(t, addr, "leaf-1")
				publish = publish5
			}
			// Keep 32 in flight; kill the child right after the 100th PUBACK.
			const inflight, killAt = 32, 100
			acked := map[string]bool{}
			sent := 0
			send := func() {
				sent++
				if _, err := c.Write(publish(fmt.Sprintf("devices/leaf-1/messages/events/%%24.mid=k%d", sent), uint16(sent), []byte("x"))); err != nil {
					t.Fatal(err)
				}
			}
			for range inflight {
				send()
			}
			for len(acked) < killAt {
				typ, body := readPacket(t, c)
				if typ != 0x40 || (len(body) > 2 && body[2] != 0) {
					t.Fatalf("got %#x %x", typ, body)
				}
				acked[fmt.Sprintf("k%d", int(body[0])<<8|int(body[1]))] = true
				if len(acked) == killAt {
					_ = cmd.Process.Signal(syscall.SIGKILL)
					break
				}
				send()
			}
			_ = cmd.Wait()
			q := openStore(t, dir, store.Options{})
			defer q.Close()
			have := map[string]bool{}
			for _, r := range leaseAll(t, q) {
				have[r.ID] = true
			}
			for id := range acked {
				if !have[id] {
					t.Errorf("acknowledged message %s lost after kill -9", id)
				}
			}
			t.Logf("acked %d, sent %d, in store %d", len(acked), sent, len(have))
		})
	}
}
