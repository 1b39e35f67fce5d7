package gateway

import (
	"net/http"

	"github.com/outpost-iot/outpost/adapters"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves /metrics: the store's collectors, the gateway's own
// (hub, link, devices, commands), and Go's process metrics.
func (g *Gateway) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if g.queue != nil {
		reg.MustRegister(g.queue.Collectors()...)
	}
	reg.MustRegister(gatewayCollector{g})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("outpost_"+name, help, labels, nil)
}

var (
	dHealthy       = desc("healthy", "1 when /healthz would answer 200.")
	dProduced      = desc("ingest_produced_total", "Adapter readings offered for ingest.")
	dStored        = desc("ingest_stored_total", "Adapter readings stored durably.")
	dHubConnected  = desc("hub_clients_connected", "MQTT clients connected to the local hub.")
	dHubReceived   = desc("hub_received_total", "Leaf publishes to D2C topics.")
	dHubStored     = desc("hub_stored_total", "Leaf publishes stored (acknowledged).")
	dHubRefused    = desc("hub_refused_total", "Leaf publishes refused (not stored, not acknowledged).")
	dHubAuthFail   = desc("hub_auth_failures_total", "CONNECTs refused for identity or credentials.")
	dHubACLDenied  = desc("hub_acl_denied_total", "Publishes or subscriptions refused by the ACL.")
	dHubPanics     = desc("hub_panics_total", "Connections closed after a panic in packet handling.")
	dLinkUp        = desc("link_up", "1 while the cloud link is connected.")
	dLinkOutages   = desc("link_outages_total", "Cloud link outages.")
	dLinkForwarded = desc("link_forwarded_total", "Records acknowledged upstream.")
	dLinkGaps      = desc("link_gap_reports_total", "Gap reports (type=gap: records dropped or expired in the store) acknowledged upstream.")
	dLinkInflight  = desc("link_inflight", "Publishes awaiting their upstream PUBACK.")
	dLinkDevUp     = desc("link_device_up", "1 while the device's own IoT Hub connection is up (identity per-device).", "device")
	dLinkParked    = desc("link_device_parked", "Records waiting in the store for the device's own connection (identity per-device).", "device")
	dDrainLeft     = desc("link_drain_remaining", "Backlog records still to replay after the last outage.")
	dDrainRate     = desc("link_drain_rate", "Backlog replay rate, records/s.")
	dDrainETA      = desc("link_drain_eta_seconds", "Estimated time to finish the backlog replay.")
	dDevUp         = desc("device_health", "Device health: 1 ok, 0.5 degraded, 0 down.", "device", "kind")
	dDevReadings   = desc("device_readings_total", "Readings stored per device.", "device", "kind")
	dCommands      = desc("commands", "Commands in the ledger by state.", "state")
)

type gatewayCollector struct{ g *Gateway }

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dHealthy, dProduced, dStored, dHubConnected, dHubReceived, dHubStored,
		dHubRefused, dHubAuthFail, dHubACLDenied, dHubPanics, dLinkUp, dLinkOutages, dLinkForwarded, dLinkGaps,
		dLinkInflight, dLinkDevUp, dLinkParked, dDrainLeft, dDrainRate, dDrainETA, dDevUp, dDevReadings, dCommands} {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.g
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	b := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	m(dHealthy, prometheus.GaugeValue, b(len(g.problems()) == 0))
	m(dProduced, prometheus.CounterValue, float64(g.produced.Load()))
	m(dStored, prometheus.CounterValue, float64(g.stored.Load()))
	if hb := g.hub(); hb != nil {
		h := hb.Stats()
		m(dHubConnected, prometheus.GaugeValue, float64(h.Connected))
		m(dHubReceived, prometheus.CounterValue, float64(h.Received))
		m(dHubStored, prometheus.CounterValue, float64(h.Stored))
		m(dHubRefused, prometheus.CounterValue, float64(h.Refused))
		m(dHubAuthFail, prometheus.CounterValue, float64(h.AuthFailures))
		m(dHubACLDenied, prometheus.CounterValue, float64(h.ACLDenied))
		m(dHubPanics, prometheus.CounterValue, float64(h.Panics))
	}
	if g.link != nil {
		l := g.link.Status()
		m(dLinkUp, prometheus.GaugeValue, b(l.Connected))
		m(dLinkOutages, prometheus.CounterValue, float64(l.Outages))
		m(dLinkForwarded, prometheus.CounterValue, float64(l.Forwarded))
		m(dLinkGaps, prometheus.CounterValue, float64(l.Gaps))
		m(dLinkInflight, prometheus.GaugeValue, float64(l.InFlight))
		m(dDrainLeft, prometheus.GaugeValue, float64(l.Drain.Remaining))
		m(dDrainRate, prometheus.GaugeValue, l.Drain.Rate)
		m(dDrainETA, prometheus.GaugeValue, l.Drain.ETA.Seconds())
		for id, d := range l.Devices {
			m(dLinkDevUp, prometheus.GaugeValue, b(d.Connected), id)
			m(dLinkParked, prometheus.GaugeValue, float64(d.Parked), id)
		}
	}
	for _, d := range g.deviceList() {
		s := d.status()
		v := 1.0
		switch s.Health {
		case adapters.Degraded:
			v = 0.5
		case adapters.Down:
			v = 0
		}
		m(dDevUp, prometheus.GaugeValue, v, s.ID, s.Kind)
		m(dDevReadings, prometheus.CounterValue, float64(s.Readings), s.ID, s.Kind)
	}
	if g.ledger != nil {
		for state, n := range g.ledger.Counts() {
			m(dCommands, prometheus.GaugeValue, float64(n), string(state))
		}
	}
}
