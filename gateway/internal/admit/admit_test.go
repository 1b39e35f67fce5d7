package admit

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func tcp(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1883} }

// Each address has its own bucket; an IPv6 /64 is one address; the number
// of buckets is bounded; what is not TCP is never limited.
func TestBuckets(t *testing.T) {
	b := NewBuckets(1, 2, 3)
	now := time.Unix(1_700_000_000, 0)
	for i, want := range []bool{true, true, false} {
		if _, ok := b.Allow(tcp("10.0.0.1"), now); ok != want {
			t.Fatalf("10.0.0.1 try %d: %v, want %v", i, ok, want)
		}
	}
	if key, ok := b.Allow(tcp("10.0.0.2"), now); !ok || key != "10.0.0.2/32" {
		t.Fatalf("another host: %q %v", key, ok)
	}
	b.Allow(tcp("2001:db8::1"), now)
	b.Allow(tcp("2001:db8::1"), now)
	if key, ok := b.Allow(tcp("2001:db8::ffff"), now); ok || key != "2001:db8::/64" {
		t.Fatalf("same /64: %q %v, want refused", key, ok)
	}
	if _, ok := b.Allow(tcp("10.0.0.1"), now.Add(time.Second)); !ok {
		t.Fatal("no refill after a second")
	}
	for i := range 10 {
		b.Allow(&net.TCPAddr{IP: net.IPv4(10, 1, 0, byte(i))}, now.Add(time.Hour))
	}
	if n := b.Len(); n > 3 {
		t.Fatalf("%d buckets kept, max 3", n)
	}
	if _, ok := b.Allow(&net.UnixAddr{Name: "@x", Net: "unix"}, now); !ok {
		t.Fatal("a unix socket was limited")
	}
}

// A kind of refusal is logged once per interval, with the count since the
// last line; kinds are counted apart.
func TestRefusals(t *testing.T) {
	var buf bytes.Buffer
	r := NewRefusals(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	for range 5 {
		r.Refused("rate", "refusing")
	}
	r.Refused("login", "bad login", "client", "c1")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "refusal=rate count=1") || !strings.Contains(lines[1], "refusal=login count=1 client=c1") {
		t.Fatalf("log:\n%s", buf.String())
	}
	r.every = 0
	r.Refused("rate", "refusing")
	if !strings.Contains(buf.String(), "refusal=rate count=5") {
		t.Fatalf("the count since the last line is not 5:\n%s", buf.String())
	}
}
