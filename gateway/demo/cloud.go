package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// cloud is the demo's stand-in for the upstream broker: an MQTT broker on
// loopback that counts every D2C message it receives by $.mid (so the demo
// can show that nothing stored was lost), collects command results by
// $.cid, and can go away for a while (an outage) and come back on the same
// address.
type cloud struct {
	addr string

	mu      sync.Mutex
	srv     *mqtt.Server
	seen    map[string]bool // data message ids
	dupes   int
	results map[string]msg.Result // command id -> result
}

func startCloud(addr string) (*cloud, error) {
	c := &cloud{seen: map[string]bool{}, results: map[string]msg.Result{}}
	if err := c.start(addr); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cloud) start(addr string) error {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	l := listeners.NewTCP(listeners.Config{ID: "cloud", Address: addr})
	var err error
	for range 50 { // after an outage the old socket may linger a moment
		if err = srv.AddListener(l); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("demo: stand-in cloud: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	if err := srv.Subscribe("devices/+/messages/events/#", 1, c.received); err != nil {
		return err
	}
	c.mu.Lock()
	c.srv, c.addr = srv, l.Address()
	c.mu.Unlock()
	return nil
}

func (c *cloud) received(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	_, ps, err := msg.ParseEventsTopic(pk.TopicName)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if typ, _ := ps.Get(msg.PropType); typ == "command-result" {
		cid, _ := ps.Get(msg.PropCorrelationID)
		var r msg.Result
		_ = json.Unmarshal(pk.Payload, &r)
		c.results[cid] = r
		return
	}
	mid, _ := ps.Get(msg.PropMessageID)
	if c.seen[mid] {
		c.dupes++
	}
	c.seen[mid] = true
}

// command sends a C2D message to device, as a cloud service would.
func (c *cloud) command(device, id, body string) error {
	c.mu.Lock()
	srv := c.srv
	c.mu.Unlock()
	if srv == nil {
		return fmt.Errorf("demo: stand-in cloud is down")
	}
	return srv.Publish(msg.DeviceboundTopic(device, msg.Props{{Key: msg.PropMessageID, Value: id}}), []byte(body), false, 1)
}

func (c *cloud) delivered() (unique, dupes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen), c.dupes
}

func (c *cloud) result(id string) (msg.Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.results[id]
	return r, ok
}

// down closes the broker: the gateway's link drops and its queue grows.
func (c *cloud) down() {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		hub.StopClients(srv, 5*time.Second)
		_ = srv.Close()
	}
}

// up starts the broker again on the same address.
func (c *cloud) up() error { return c.start(c.addr) }

func (c *cloud) close() { c.down() }
