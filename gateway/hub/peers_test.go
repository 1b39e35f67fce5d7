package hub

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// mosqPub runs mosquitto_pub -d with a 5 s limit and returns its output and
// whether it exited 0 on its own.
func mosqPub(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	bin := peertest.Need(t, "mosquitto_pub")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-d"}, args...)...).CombinedOutput()
	return string(out), err == nil
}

func hostPort(addr string) []string {
	i := strings.LastIndexByte(addr, ':')
	return []string{"-h", addr[:i], "-p", addr[i+1:]}
}

func leafArgs(h *Hub, version, id, pass, topic, payload string) []string {
	a := hostPort(h.Addr())
	return append(a, "-V", version, "-q", "1", "-i", id, "-u", id, "-P", pass, "-t", topic, "-m", payload)
}

func TestMosquittoPubStored(t *testing.T) {
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			st := &fakeStore{delay: 20 * time.Millisecond}
			h := startHub(t, st, nil)
			out, ok := mosqPub(t, leafArgs(h, v, "leaf-1", testPassword, "devices/leaf-1/messages/events/%24.mid=p1&a=b", "hello")...)
			if !ok || !strings.Contains(out, "received PUBACK") {
				t.Fatalf("mosquitto_pub failed:\n%s", out)
			}
			recs := st.records()
			if len(recs) != 1 || recs[0].ID != "p1" || string(recs[0].Payload) != "hello" || recs[0].Props.Encode() != "a=b" {
				t.Fatalf("records %+v", recs)
			}
		})
	}
}

func TestMosquittoPubRefusals(t *testing.T) {
	cases := []struct {
		name     string
		version  string
		id, pass string
		topic    string
		payload  string
		fail     error
		want     string // in the output; "" = no PUBACK at all
	}{
		{"wrong password 3.1.1", "mqttv311", "leaf-1", "nope", "devices/leaf-1/messages/events/", "x", nil, "not authorised"},
		{"wrong password 5", "mqttv5", "leaf-1", "nope", "devices/leaf-1/messages/events/", "x", nil, "CONNACK (134)"},
		{"other device 3.1.1", "mqttv311", "leaf-1", testPassword, "devices/leaf-2/messages/events/", "x", nil, ""},
		{"other device 5", "mqttv5", "leaf-1", testPassword, "devices/leaf-2/messages/events/", "x", nil, "RC:135"},
		{"not an events topic 5", "mqttv5", "leaf-1", testPassword, "devices/leaf-1/messages/devicebound/", "x", nil, "RC:135"},
		{"full 3.1.1", "mqttv311", "leaf-1", testPassword, "devices/leaf-1/messages/events/", "x", fullErr, ""},
		{"full 5", "mqttv5", "leaf-1", testPassword, "devices/leaf-1/messages/events/", "x", fullErr, "RC:151"},
		{"disk error 5", "mqttv5", "leaf-1", testPassword, "devices/leaf-1/messages/events/", "x", errors.New("io"), "RC:128"},
		// Never storable: acknowledged and dropped (a disconnect would
		// have a persistent session resend it for ever).
		{"oversize 3.1.1", "mqttv311", "leaf-1", testPassword, "devices/leaf-1/messages/events/", strings.Repeat("x", 101), nil, "received PUBACK"},
		{"oversize 5", "mqttv5", "leaf-1", testPassword, "devices/leaf-1/messages/events/", strings.Repeat("x", 101), nil, "RC:131"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeStore{}
			if tc.fail != nil {
				st.setFail(func(*msg.Record) error { return tc.fail })
			}
			h := startHub(t, st, func(o *Options) { o.MaxMessageBytes = 100 })
			out, ok := mosqPub(t, leafArgs(h, tc.version, tc.id, tc.pass, tc.topic, tc.payload)...)
			if tc.want == "" {
				if strings.Contains(out, "received PUBACK") {
					t.Fatalf("got a PUBACK:\n%s", out)
				}
			} else if !strings.Contains(out, tc.want) {
				t.Fatalf("want %q in output:\n%s", tc.want, out)
			}
			if tc.want != "" && strings.Contains(tc.want, "RC:") && ok {
				t.Logf("mosquitto_pub exited 0 on %s", tc.want)
			}
			if n := len(st.records()); n != 0 {
				t.Fatalf("%d records stored", n)
			}
		})
	}
}

func TestMosquittoSubObserverAndC2D(t *testing.T) {
	sub := peertest.Need(t, "mosquitto_sub")
	stdbuf := peertest.Need(t, "stdbuf")
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			h := startHub(t, &fakeStore{}, nil)
			// stdbuf: mosquitto_sub's stdout is block-buffered into a pipe.
			subArgs := func(id, filter string) []string {
				a := append([]string{"-oL", sub}, hostPort(h.Addr())...)
				return append(a, "-V", v, "-q", "1", "-i", id, "-u", id, "-P", testPassword, "-t", filter, "-v", "-d")
			}
			obs := peertest.Start(t, exec.Command(stdbuf, subArgs("dash", "devices/+/messages/events/#")...), regexpMust(`SUBACK`))
			leaf := peertest.Start(t, exec.Command(stdbuf, subArgs("leaf-1", "devices/leaf-1/messages/devicebound/#")...), regexpMust(`SUBACK`))
			out, ok := mosqPub(t, leafArgs(h, v, "leaf-2", testPassword, "devices/leaf-2/messages/events/%24.mid=o1", "seen")...)
			if !ok {
				t.Fatalf("publish: %s", out)
			}
			obs.WaitFor(t, regexpMust(`devices/leaf-2/messages/events/%24.mid=o1&outpost-seq=1 seen`), 10*time.Second)

			ch, done := doneChan()
			if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: "cmd-1"}}, []byte(`{"send":"RESET"}`), done); err != nil {
				t.Fatal(err)
			}
			leaf.WaitFor(t, regexpMust(`devices/leaf-1/messages/devicebound/%24.mid=cmd-1 \{"send":"RESET"\}`), 10*time.Second)
			if err := waitDone(t, ch); err != nil {
				t.Fatalf("done(%v)", err)
			}
		})
	}
}
