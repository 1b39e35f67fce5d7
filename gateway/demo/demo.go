// Package demo runs the whole gateway job on one machine with no hardware
// and no config: simulated field devices and an MQTT leaf feed the local
// hub, the store keeps every message, and the cloud link forwards to a
// stand-in cloud broker on loopback, with a live one-line summary.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/adapters/sim"
	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Options configure a demo run.
type Options struct {
	For    time.Duration // 0 runs until ctx is done
	Every  time.Duration // summary interval (default 1 s)
	Out    io.Writer     // summary lines
	Logger *slog.Logger  // the gateway's log (nil: discarded)
}

// Summary is what the demo counted. Produced counts every reading and leaf
// message offered to the gateway; Stored those acknowledged (durable);
// Delivered the distinct message ids the stand-in cloud received; Queued
// what is still in the store; Lost what was stored and neither delivered
// nor queued; Commands the command round trips completed out of those sent.
type Summary struct {
	Produced, Stored, Delivered, Duplicates, Queued, Lost uint64
	CommandsDone, CommandsSent                            int
}

func (s Summary) String() string {
	return fmt.Sprintf("produced=%d stored=%d delivered=%d queued=%d lost=%d commands=%d/%d",
		s.Produced, s.Stored, s.Delivered, s.Queued, s.Lost, s.CommandsDone, s.CommandsSent)
}

const leafPassword = "demo-leaf-password"

// Run runs the demo until opt.For has passed or ctx is done, then prints the
// final line "demo: produced=N stored=N delivered=N queued=N lost=N
// commands=N/N" and returns the summary. Along the way the stand-in cloud
// sends two setpoint commands and goes away for a few seconds (an outage):
// the queue grows, then drains when it is back.
func Run(ctx context.Context, opt Options) (Summary, error) {
	if opt.Every == 0 {
		opt.Every = time.Second
	}
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	dir, err := os.MkdirTemp("", "outpost-demo-")
	if err != nil {
		return Summary{}, fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)

	up, err := startCloud("127.0.0.1:0")
	if err != nil {
		return Summary{}, err
	}
	defer up.close()

	hash, err := bcrypt.GenerateFromPassword([]byte(leafPassword), bcrypt.MinCost)
	if err != nil {
		return Summary{}, err
	}
	cfg := config.Default()
	cfg.Gateway.ID = "demo-gw"
	cfg.Gateway.DataDir = dir
	cfg.Hub.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Hub.Clients = []config.Client{{Client: hub.Client{ID: "leaf-1", PasswordHash: string(hash), Priority: msg.Normal}}}
	cfg.Cloud.Protocol = cloudlink.ProtocolMQTT
	cfg.Cloud.URL = "mqtt://" + up.addr
	cfg.Cloud.ClientID = "demo-gw"
	cfg.Cloud.MaxInflight = cloudlink.DefaultCloudInflight
	cfg.Devices = []config.Device{
		{ID: "meter-1", Priority: msg.Normal, Kind: "sim", Adapter: &sim.Config{Interval: 100 * time.Millisecond, Setpoint: 20}},
		{ID: "thermo-1", Priority: msg.Low, Kind: "sim", Adapter: &sim.Config{Mode: "sensor", Interval: 250 * time.Millisecond, FailEvery: 10}},
	}

	gwCtx, stopGW := context.WithCancel(context.Background())
	defer stopGW()
	g := gateway.New(cfg, opt.Logger)
	gwDone := make(chan error, 1)
	go func() { gwDone <- g.Run(gwCtx) }()
	select {
	case err := <-gwDone:
		return Summary{}, fmt.Errorf("demo: gateway: %w", err)
	case <-g.Ready():
	}
	fmt.Fprintf(opt.Out, "demo: gateway %s up: hub mqtt://%s, status page http://%s/, stand-in cloud mqtt://%s\n",
		cfg.Gateway.ID, g.HubAddr(), g.HTTPAddr(), up.addr)
	fmt.Fprintln(opt.Out, "demo: devices: meter-1 (simulated meter), thermo-1 (simulated serial sensor), leaf-1 (an MQTT leaf)")

	var leafSent, leafAcked atomic.Uint64
	leafCtx, stopLeaf := context.WithCancel(ctx)
	leafDone := make(chan struct{})
	go func() {
		defer close(leafDone)
		runLeaf(leafCtx, g.HubAddr(), &leafSent, &leafAcked, opt.Out)
	}()

	var sent []string // command ids
	summary := func() Summary {
		st := g.Status()
		uniq, dupes := up.delivered()
		s := Summary{
			Produced:     st.Produced + leafSent.Load(),
			Stored:       st.Stored + leafAcked.Load(),
			Delivered:    uint64(uniq),
			Duplicates:   uint64(dupes),
			Queued:       st.Queue.Depth,
			CommandsSent: len(sent),
		}
		if s.Stored > s.Delivered+s.Queued {
			s.Lost = s.Stored - s.Delivered - s.Queued
		}
		for _, id := range sent {
			if r, ok := up.result(id); ok && r.Status == msg.StatusDone {
				s.CommandsDone++
			}
		}
		return s
	}

	// The script: two commands, an outage between them, producers stopped
	// at the end so the final count is taken on a drained queue.
	total := opt.For
	if total == 0 {
		total = 30 * time.Second
	}
	type step struct {
		at time.Duration
		do func(elapsed time.Duration) (done bool) // false: try again next tick
	}
	command := func(n int, value float64) func(time.Duration) bool {
		return func(el time.Duration) bool {
			// Like a cloud service, send only to a connected gateway: this
			// stand-in keeps no C2D queue across its own restart.
			if st := g.Status(); st.Link == nil || !st.Link.Connected {
				return false
			}
			id := fmt.Sprintf("demo-cmd-%d", n)
			body := fmt.Sprintf(`{"write":{"setpoint":%g}}`, value)
			if err := up.command("meter-1", id, body); err != nil {
				return false
			}
			sent = append(sent, id)
			fmt.Fprintf(opt.Out, "demo: %3.0fs cloud sends command %s to meter-1: %s\n", el.Seconds(), id, body)
			return true
		}
	}
	outage := min(5*time.Second, total/5)
	steps := []step{{total * 15 / 100, command(1, 21.5)}}
	if total >= 6*time.Second {
		steps = append(steps,
			step{total * 30 / 100, func(el time.Duration) bool {
				up.down()
				fmt.Fprintf(opt.Out, "demo: %3.0fs stand-in cloud DOWN for %v: the gateway keeps storing\n", el.Seconds(), outage)
				return true
			}},
			step{total*30/100 + outage, func(el time.Duration) bool {
				if err := up.up(); err != nil {
					fmt.Fprintf(opt.Out, "demo: %3.0fs stand-in cloud failed to come back: %v\n", el.Seconds(), err)
					return false
				}
				fmt.Fprintf(opt.Out, "demo: %3.0fs stand-in cloud back: the queue drains by itself\n", el.Seconds())
				return true
			}})
	}
	steps = append(steps, step{total * 70 / 100, command(2, 19)})
	if opt.For > 0 {
		steps = append(steps, step{total - min(3*time.Second, total*15/100), func(el time.Duration) bool {
			// Stopping removes the devices: not while a command for one
			// of them still waits for its result.
			for _, id := range sent {
				if _, ok := up.result(id); !ok {
					return false
				}
			}
			stopLeaf()
			<-leafDone
			quiet := *cfg
			quiet.Devices = nil
			_, _ = g.Reload(&quiet)
			fmt.Fprintf(opt.Out, "demo: %3.0fs producers stopped; waiting for the queue to drain\n", el.Seconds())
			return true
		}})
	}

	start := time.Now()
	tick := time.NewTicker(opt.Every)
	defer tick.Stop()
	var end <-chan time.Time
	if opt.For > 0 {
		end = time.After(opt.For)
	}
	reported := map[string]bool{}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case err := <-gwDone:
			stopLeaf()
			<-leafDone
			return summary(), fmt.Errorf("demo: gateway stopped: %w", err)
		case <-tick.C:
			el := time.Since(start)
			for len(steps) > 0 && el >= steps[0].at && steps[0].do(el) {
				steps = steps[1:]
			}
			for _, id := range sent {
				if r, ok := up.result(id); ok && !reported[id] {
					reported[id] = true
					fmt.Fprintf(opt.Out, "demo: %3.0fs command %s result upstream: %s %v %s\n", el.Seconds(), id, r.Status, r.Values, r.Error)
				}
			}
			fmt.Fprintf(opt.Out, "demo: %3.0fs %s\n", el.Seconds(), summary())
		}
	}
	// A last short wait, so the final count sees the queue drained.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		if s := summary(); s.Queued == 0 && s.CommandsDone == s.CommandsSent {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopLeaf()
	<-leafDone
	s := summary()
	stopGW()
	if err := <-gwDone; err != nil {
		return s, fmt.Errorf("demo: gateway: %w", err)
	}
	fmt.Fprintf(opt.Out, "demo: %s\n", s)
	return s, nil
}

// runLeaf is a simulated MQTT leaf device: it publishes a JSON reading with
// QoS 1 every 200 ms through the local hub, counting PUBACKs (each one means
// the message is on disk).
func runLeaf(ctx context.Context, hubAddr string, sent, acked *atomic.Uint64, out io.Writer) {
	o := paho.NewClientOptions().AddBroker("tcp://" + hubAddr).
		SetClientID("leaf-1").SetUsername("leaf-1").SetPassword(leafPassword).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		fmt.Fprintf(out, "demo: leaf-1 could not connect: %v\n", t.Error())
		return
	}
	var pending sync.WaitGroup
	defer func() {
		pending.Wait() // count every PUBACK that is on its way
		c.Disconnect(250)
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		topic := msg.EventsTopic("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: fmt.Sprintf("leaf-1-%d-%d", time.Now().Unix(), n)}, {Key: msg.PropContentType, Value: msg.ContentTypeJSON}})
		body := fmt.Sprintf(`{"ts":%q,"values":{"temperature":%.1f}}`, time.Now().UTC().Format(msg.TimeFormat), 21+float64(n%10)/10)
		sent.Add(1)
		t := c.Publish(topic, 1, false, body)
		pending.Go(func() {
			if t.WaitTimeout(10*time.Second) && t.Error() == nil {
				acked.Add(1)
			}
		})
	}
}
