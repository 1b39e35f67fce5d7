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
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/adapters/sim"
	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/config"
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
// what is still in the store.
type Summary struct {
	Produced, Stored, Delivered, Duplicates, Queued uint64
}

func (s Summary) String() string {
	return fmt.Sprintf("produced=%d stored=%d delivered=%d queued=%d", s.Produced, s.Stored, s.Delivered, s.Queued)
}

const leafPassword = "demo-leaf-password"

// Run runs the demo until opt.For has passed or ctx is done, then prints the
// final line "demo: produced=N stored=N delivered=N queued=N" and returns the summary.
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
	cfg.Hub.Clients = []config.Client{{ID: "leaf-1", PasswordHash: string(hash), Priority: msg.Normal}}
	cfg.Cloud.Protocol = config.ProtocolMQTT
	cfg.Cloud.URL = "mqtt://" + up.addr
	cfg.Cloud.ClientID = "demo-gw"
	cfg.Cloud.MaxInflight = config.DefaultCloudInflight
	cfg.Devices = []config.Device{
		{ID: "meter-1", Priority: msg.Normal, Kind: "sim", Adapter: &sim.Config{Interval: 100 * time.Millisecond, Setpoint: 20}},
		{ID: "meter-2", Priority: msg.Normal, Kind: "sim", Adapter: &sim.Config{Interval: 250 * time.Millisecond, Setpoint: 18, FailEvery: 10}},
	}

	runCtx := ctx
	if opt.For > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, opt.For)
		defer cancel()
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
	fmt.Fprintf(opt.Out, "demo: gateway %s up: hub mqtt://%s, status http://%s/api/status, stand-in cloud mqtt://%s\n",
		cfg.Gateway.ID, g.HubAddr(), g.HTTPAddr(), up.addr)

	var leafSent, leafAcked atomic.Uint64
	leafCtx, stopLeaf := context.WithCancel(runCtx)
	leafDone := make(chan struct{})
	go func() {
		defer close(leafDone)
		runLeaf(leafCtx, g.HubAddr(), &leafSent, &leafAcked, opt.Out)
	}()

	summary := func() Summary {
		st := g.Status()
		uniq, dupes := up.delivered()
		return Summary{
			Produced:   st.Produced + leafSent.Load(),
			Stored:     st.Stored + leafAcked.Load(),
			Delivered:  uint64(uniq),
			Duplicates: uint64(dupes),
			Queued:     uint64(st.Queue.Depth),
		}
	}
	start := time.Now()
	tick := time.NewTicker(opt.Every)
	defer tick.Stop()
loop:
	for {
		select {
		case <-runCtx.Done():
			break loop
		case err := <-gwDone:
			stopLeaf()
			<-leafDone
			return summary(), fmt.Errorf("demo: gateway stopped: %w", err)
		case <-tick.C:
			fmt.Fprintf(opt.Out, "demo: %3.0fs %s\n", time.Since(start).Seconds(), summary())
		}
	}
	stopLeaf()
	<-leafDone
	stopGW()
	if err := <-gwDone; err != nil {
		return summary(), fmt.Errorf("demo: gateway: %w", err)
	}
	s := summary()
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
	defer c.Disconnect(250)
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
		go func() {
			if t.WaitTimeout(10*time.Second) && t.Error() == nil {
				acked.Add(1)
			}
		}()
	}
}
