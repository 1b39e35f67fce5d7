// Package gateway is the core that ties the parts into the appliance a user
// runs: it opens the store, starts the local hub, the adapters and the cloud
// link from one config, routes adapter readings into the same durable ingest
// path as leaf messages, and serves health and status over HTTP.
//
// Subpackages hold the parts that are the gateway's own: config (the YAML
// contract), hub (the embedded MQTT broker), commands (the C2D command
// ledger), twins (the leaves' device twins and direct methods), iothub (IoT
// Hub's device protocol as pure code), msg (shared message types), service
// (systemd integration), demo (the self-contained demo), and peertest (real
// third-party peers for tests).
//
// # Following a message
//
// A D2C message from an MQTT leaf: mochi decodes the PUBLISH and calls
// hub's mochiHook.OnPublish, which checks it (Hub.record: topic, property
// bag, size) and hands it to the connection's connIngest (Hub.ingestFor);
// store.Queue.Submit queues it, the store's writeLoop commits the batch
// (Queue.commit, one fsync), and connIngest.run writes the PUBACK, in
// receive order, only after that, then calls Hub.Publish so local
// subscribers see the stored record. The cloud link's forwarder leases it
// (forwarder.lease, forwarder.liveFirst or leaseBacklog), publishes it
// upstream (forwarder.publishRec) and, on the upstream PUBACK, deletes it
// (forwarder.ack, store.Queue.Ack).
//
// A D2C reading from an adapter: the adapter's Source.Run calls Emit on the
// gateway's emitter, which turns each msg.Reading into a record
// (msg.Reading.Record) and appends it (store.Queue.Append); Emit returns
// nil, the acknowledgement, once it is durable, and then emitter.Emit calls
// Hub.Publish, the same fan-out leaf messages take. From the store on it
// travels as a leaf message does.
//
// A C2D command: the cloud link's Session.intake receives it and calls
// Session.takeIn, which hands it to the msg.Intake in Options.Inbox; that
// is commands.Ledger.Accept (an operator client on the hub reaches it from
// mochiHook.OnPublish, the HTTP API from the ledger's POST handler). Accept
// stores it (store.Queue.PutCommand) before the cloud gets its PUBACK; the
// ledger's per-device worker (Ledger.work, Ledger.execute) then applies it,
// on an adapter through its Sink's Apply (Ledger.executeAdapter, waiting
// while its Health is adapters.Down), on a leaf through hub.Hub.Deliver
// (Ledger.executeLeaf, waiting for the leaf's PUBACK), and Ledger.finish
// queues its one result as a D2C record (store.Queue.FinishCommand), which
// travels upstream like any other.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/commands"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/twins"
	"github.com/outpost-iot/outpost/store"
)

// Gateway is one running gateway. Create it with New and start it with Run.
type Gateway struct {
	cfg *config.Config
	log *slog.Logger

	queue  *store.Queue
	hubPtr atomic.Pointer[hub.Hub] // nil while the hub cannot listen
	link   cloudlink.Link
	ledger *commands.Ledger
	twins  *twins.Manager
	dtwins *devTwins // the adapter devices' side of twins
	// twinCloud is the link that syncs the twins upstream, once it runs.
	twinCloud atomic.Pointer[cloudlink.Fleet]
	http      *http.Server
	// httpToken is http.token_file's token (nil: none), read by startHTTP.
	httpToken []byte

	httpAddr atomic.Value // string
	ready    chan struct{}

	progress *progress // ingest and forwarding progress, for health

	produced atomic.Uint64 // readings and leaf messages offered for ingest
	stored   atomic.Uint64 // ... of which durably appended

	reloadMu sync.Mutex // one Reload at a time

	mu      sync.Mutex
	runCtx  context.Context    // the context devices run under; nil before Run
	failed  map[string]error   // part -> why it stopped
	devices map[string]*device // by id
}

// New returns a gateway for cfg. Nothing is opened until Run.
func New(cfg *config.Config, log *slog.Logger) *Gateway {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gateway{cfg: cfg, log: log, ready: make(chan struct{}), failed: map[string]error{}, devices: map[string]*device{},
		progress: newProgress(cfg.Gateway.StallTimeout)}
}

// Ready is closed once the store is open, the hub listens and the adapters
// and cloud link are started.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Run opens the store and runs every part until ctx is done or a part fails
// for good. Parts stop in reverse order and the store closes last, so
// nothing acknowledged is ever in a half-written state. What was leased and
// not acknowledged upstream is simply delivered again next time.
func (g *Gateway) Run(ctx context.Context) (err error) {
	q, err := store.Open(g.cfg.Gateway.DataDir, store.Options{Config: g.cfg.Store, Logger: g.log.With("part", "store")})
	if err != nil {
		return fmt.Errorf("gateway: open store: %w", err)
	}
	g.queue = q
	defer func() {
		if cerr := q.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("gateway: close store: %w", cerr)
		}
	}()
	if dir := q.Quarantined(); dir != "" {
		g.log.Error("store was corrupt: moved aside, running on a fresh store", "quarantine", dir)
	}

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred calls run last-in first-out)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The hub: a listener that cannot bind (a port taken by another
	// broker) does not stop the gateway; it keeps storing and forwarding
	// adapter data, reports 503 on /healthz, and retries the hub.
	g.dtwins = newDevTwins(g)
	g.ledger = commands.New(commands.Options{Inbox: q, Targets: targets{g}, Leaves: targets{g},
		TTL: g.cfg.Commands.TTL, Finished: g.dtwins.finished, Logger: g.log.With("part", "commands")})
	if g.twins, err = g.newTwins(q); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	hubUp := g.startHub(q)
	wg.Go(func() { g.superviseHub(ctx, q, hubUp) })

	if err := g.startHTTP(ctx, &wg); err != nil {
		return err
	}

	if g.cfg.Cloud.Protocol != cloudlink.ProtocolNone {
		opt, err := g.linkOptions()
		if err != nil {
			return err
		}
		opt.Inbox = g.ledger.Accept
		link, err := cloudlink.Open(opt, q)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		g.link = link
		if f, ok := link.(*cloudlink.Fleet); ok {
			g.twinCloud.Store(f)
		}
		wg.Go(func() {
			if err := link.Run(ctx); err != nil && ctx.Err() == nil {
				if q.Failed() != nil {
					return // watchStore ends the run, after reporting it
				}
				g.fail("cloudlink", err)
				cancel(fmt.Errorf("gateway: cloud link: %w", err))
			}
		})
	}

	g.mu.Lock()
	g.runCtx = ctx
	g.mu.Unlock()
	for _, dc := range g.cfg.Devices {
		d, err := g.startDevice(ctx, dc)
		if err != nil {
			return err
		}
		g.mu.Lock()
		g.devices[dc.ID] = d
		g.mu.Unlock()
	}
	defer func() {
		for _, d := range g.deviceList() {
			d.stop()
		}
	}()

	if g.link != nil {
		wg.Go(func() { g.watchLink(ctx) })
	}
	wg.Go(func() { g.monitorProgress(ctx) })
	wg.Go(func() { g.watchStore(ctx, q, cancel) })
	wg.Go(func() { g.dtwins.run(ctx) })
	wg.Go(func() { g.watchLosses(ctx, q, g.cfg.Store) })
	wg.Go(func() {
		if err := g.ledger.Run(ctx); err != nil {
			g.fail("commands", err)
			cancel(err)
		}
	})

	close(g.ready)
	g.log.Info("gateway ready", "id", g.cfg.Gateway.ID, "hub", g.HubAddr(), "http", g.HTTPAddr(),
		"cloud", string(g.cfg.Cloud.Protocol), "devices", len(g.cfg.Devices))
	<-ctx.Done()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

func (g *Gateway) fail(part string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failed[part] = err
}

func (g *Gateway) hubOptions() hub.Options {
	opt := hub.Options{Config: g.cfg.Hub.HubConfig(), Logger: g.log.With("part", "hub")}
	for _, cl := range g.cfg.Hub.Clients {
		if cl.Operator {
			opt.Commands = g.ledger.Accept
		}
	}
	if g.twins != nil {
		opt.Twins = g.twins
	}
	return opt
}

func (g *Gateway) linkOptions() (cloudlink.Options, error) {
	opt := cloudlink.Options{Config: g.cfg.Cloud, GatewayID: g.cfg.Gateway.ID, Logger: g.log.With("part", "cloudlink")}
	if g.cfg.Cloud.Protocol != cloudlink.ProtocolAzure || g.cfg.Cloud.Identity != cloudlink.IdentityPerDevice {
		return opt, nil
	}
	keys, err := g.deviceKeys()
	if err != nil {
		return opt, err
	}
	opt.DeviceKeys = keys
	if g.twins != nil {
		opt.Twins = g.twins
	}
	for _, d := range g.cfg.Devices {
		opt.Leaves = append(opt.Leaves, d.ID)
	}
	for _, c := range g.cfg.Hub.Clients {
		if c.IsDevice() {
			opt.Leaves = append(opt.Leaves, c.ID)
		} else {
			opt.NotDevices = append(opt.NotDevices, c.ID)
		}
	}
	return opt, nil
}

// sasKey is an IoT Hub key given inline or in a file (section names the
// config section, for the error).
func sasKey(section, key, file string) (string, error) {
	if file == "" {
		return key, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("gateway: %s.shared_access_key_file: %w", section, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// deviceKeys collects the leaves' own IoT Hub keys (identity per-device)
// from devices[].azure and hub.clients[].azure.
func (g *Gateway) deviceKeys() (map[string]string, error) {
	keys := map[string]string{}
	add := func(path, id string, a *config.DeviceAzure) error {
		if a == nil {
			return nil // signed with the policy key
		}
		k, err := sasKey(path+".azure", a.SharedAccessKey, a.SharedAccessKeyFile)
		if err != nil {
			return err
		}
		if k != "" {
			keys[id] = k
		}
		return nil
	}
	for i, d := range g.cfg.Devices {
		if err := add(fmt.Sprintf("devices[%d]", i), d.ID, d.Azure); err != nil {
			return nil, err
		}
	}
	for i, c := range g.cfg.Hub.Clients {
		if err := add(fmt.Sprintf("hub.clients[%d]", i), c.ID, c.Azure); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// HTTPAddr is the bound HTTP address ("" before Run or when disabled).
func (g *Gateway) HTTPAddr() string {
	s, _ := g.httpAddr.Load().(string)
	return s
}

// HubAddr is the bound plain MQTT address of the local hub ("" while it
// is not listening).
func (g *Gateway) HubAddr() string {
	if h := g.hub(); h != nil {
		return h.Addr()
	}
	return ""
}

// hub returns the running local hub, or nil while it cannot listen.
func (g *Gateway) hub() *hub.Hub { return g.hubPtr.Load() }

// targets is the gateway as the command ledger sees it: the running
// adapter devices, the configured hub clients, and the hub for delivery.
type targets struct{ g *Gateway }

// Adapter implements commands.Targets.
func (t targets) Adapter(id string) (adapters.Source, string, bool) {
	d := t.g.device(id)
	if d == nil {
		return nil, "", false
	}
	return d.src, d.cfg.Kind, true
}

// IsLeaf implements commands.Targets: id is a configured MQTT client of the
// hub.
func (t targets) IsLeaf(id string) bool {
	for _, c := range t.g.cfg.Hub.Clients {
		if c.ID == id {
			return true
		}
	}
	return false
}

// Deliver implements commands.Deliverer on the running hub.
func (t targets) Deliver(device string, props msg.Props, payload []byte, done func(error)) error {
	h := t.g.hub()
	if h == nil {
		return commands.ErrNoHub
	}
	return h.Deliver(device, props, payload, done)
}

// startHub makes one attempt to start the hub; it reports whether it runs.
func (g *Gateway) startHub(q *store.Queue) bool {
	h, err := hub.New(g.hubOptions(), meteredQueue{q, g.progress})
	if err == nil {
		if err = h.Start(); err != nil {
			_ = h.Close()
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		if _, was := g.failed["hub"]; !was {
			g.log.Error("local hub cannot start; retrying", "err", err)
		}
		g.failed["hub"] = err
		return false
	}
	if _, was := g.failed["hub"]; was {
		g.log.Info("local hub started after failing")
		delete(g.failed, "hub")
	}
	g.hubPtr.Store(h)
	return true
}

// superviseHub retries a hub that could not start, with back-off, and
// closes the running hub when ctx is done.
func (g *Gateway) superviseHub(ctx context.Context, q *store.Queue, up bool) {
	backoff := time.Second
	for !up {
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		up = g.startHub(q)
	}
	<-ctx.Done()
	_ = g.hub().Close()
}

func (g *Gateway) startHTTP(ctx context.Context, wg *sync.WaitGroup) error {
	if g.cfg.HTTP.Listen == "" {
		return nil
	}
	l, err := net.Listen("tcp", g.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("gateway: http listen %s: %w", g.cfg.HTTP.Listen, err)
	}
	tok, err := readToken(g.cfg.HTTP.TokenFile)
	if err != nil {
		l.Close()
		return err
	}
	g.httpToken = tok
	g.httpAddr.Store(l.Addr().String())
	g.http = newHTTPServer(g.routes())
	wg.Go(func() {
		if err := g.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.fail("http", err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = g.http.Shutdown(sctx)
	})
	return nil
}
