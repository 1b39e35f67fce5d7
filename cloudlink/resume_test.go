package cloudlink

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/outpost-iot/outpost/cloudlink/internal/tcpproxy"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// After the link dropped, a back-off of ~10 s is under way when the path
// comes back: the session's reachability probes (a TCP connect the broker
// holds open) end the wait, and it is connected again within a few
// seconds, not when the back-off runs out. While the path is still down
// (the proxy accepts and hangs up at once, like a balancer with no
// backend) the probes do not cut the wait short.
func TestResumeSoonAfterLongOutage(t *testing.T) {
	m := peertest.StartMosquitto(t)
	px := newProxy(t, m.Addr)
	q := newMemQueue()
	opt := Options{Config: Config{URL: "mqtt://" + px.Addr(), ClientID: "gw-resume", MaxInflight: 16, Keepalive: time.Second}, Logger: testLogger(t)}
	opt.RetryMin, opt.RetryMax = 10*time.Second, 60*time.Second
	s, err := New(opt, q)
	if err != nil {
		t.Fatal(err)
	}
	s.rng = func() float64 { return 0.99 } // the longest wait of each step: 9.9 s first
	runSession(t, s)
	waitConnected(t, s)

	px.Set(tcpproxy.Cut)
	waitOutages(t, s, 1)
	time.Sleep(3 * time.Second) // two probes find the path still down
	if s.Status().Connected {
		t.Fatal("connected through a cut link")
	}
	accepts := px.Accepts()
	px.Set(tcpproxy.Up)
	restored := time.Now()
	deadline := restored.Add(5 * time.Second) // the back-off alone would take ~6.9 s more
	for !s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatalf("not connected %v after the path returned (back-off 9.9 s): the probes did not end the wait", time.Since(restored).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("connected %v after the path returned; %d connections while cut (probes)", time.Since(restored).Round(time.Millisecond), accepts)
	if accepts < 2 {
		t.Errorf("%d connections while the path was down: the session did not probe", accepts)
	}
}

// A broker's refusal is not an unreachable path: the back-off is not cut
// short by probes then.
func TestRefusedIsNotProbed(t *testing.T) {
	for _, err := range []error{packets.ErrorRefusedNotAuthorised, packets.ErrorRefusedServerUnavailable,
		fmt.Errorf("cloudlink: connect x: %w", packets.ErrorRefusedBadUsernameOrPassword)} {
		if !refused(err) {
			t.Errorf("refused(%v) = false", err)
		}
	}
	for _, err := range []error{packets.ErrorNetworkError, errors.New("network Error : EOF"), fmt.Errorf("dial: %w", errors.New("connection refused"))} {
		if refused(err) {
			t.Errorf("refused(%v) = true", err)
		}
	}
}
