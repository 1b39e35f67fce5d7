package demo

import (
	"fmt"
	"io"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// cloud is the demo's stand-in for the upstream broker: a second MQTT broker
// on loopback that counts every D2C message it receives, by $.mid, so the
// demo can show that nothing stored was lost.
type cloud struct {
	srv  *mqtt.Server
	addr string

	mu    sync.Mutex
	seen  map[string]bool
	dupes int
}

func startCloud(addr string) (*cloud, error) {
	c := &cloud{seen: map[string]bool{}}
	c.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := c.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "cloud", Address: addr})
	if err := c.srv.AddListener(l); err != nil {
		return nil, fmt.Errorf("demo: stand-in cloud: %w", err)
	}
	c.addr = l.Address()
	if err := c.srv.Serve(); err != nil {
		return nil, err
	}
	err := c.srv.Subscribe("devices/+/messages/events/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		_, ps, err := msg.ParseEventsTopic(pk.TopicName)
		if err != nil {
			return
		}
		mid, _ := ps.Get(msg.PropMessageID)
		c.mu.Lock()
		if c.seen[mid] {
			c.dupes++
		}
		c.seen[mid] = true
		c.mu.Unlock()
	})
	return c, err
}

func (c *cloud) delivered() (unique, dupes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen), c.dupes
}

func (c *cloud) close() { _ = c.srv.Close() }
