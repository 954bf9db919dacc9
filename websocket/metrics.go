package websocket

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/internal/promreg"
)

// hubMetrics are the browser side's Prometheus collectors. Labels are
// bounded enums (kind, reason): never an org, user or session id.
type hubMetrics struct {
	connections *prometheus.GaugeVec
	messagesOut *prometheus.CounterVec
	messagesIn  *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	fanout      *prometheus.HistogramVec
	published   *prometheus.CounterVec
	// listChecks and listUpdates count the periodic session-list checks (queries, one per
	// organization with listeners) and the sessions_update frames they sent.
	listChecks  prometheus.Counter
	listUpdates prometheus.Counter
	// recoveries counts sessions sockets opened with `since`, by outcome (recovered, gone).
	recoveries *prometheus.CounterVec
	// logLines counts log lines written to logs sockets, by source (kubernetes, agent).
	logLines *prometheus.CounterVec
}

func newHubMetrics(reg prometheus.Registerer) *hubMetrics {
	m := &hubMetrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamspace_connections", Help: "Open WebSocket connections by kind.",
		}, []string{"kind"}),
		messagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_messages_out_total", Help: "Messages queued to WebSocket connections by kind.",
		}, []string{"kind"}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_messages_in_total", Help: "Messages and control frames received on WebSocket connections by kind.",
		}, []string{"kind"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_disconnects_total", Help: "Closed WebSocket connections by kind and reason.",
		}, []string{"kind", "reason"}),
		fanout: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "streamspace_fanout_seconds",
			Help:    "Time to queue one message to all its receivers on this replica.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}, []string{"kind"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_events_published_total", Help: "Messages published to organization streams by kind.",
		}, []string{"kind"}),
		listChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_session_list_checks_total",
			Help: "Periodic session-list reads, one per organization with listeners per tick.",
		}),
		listUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_session_list_updates_total",
			Help: "sessions_update frames sent because a client's visible list changed.",
		}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_recoveries_total", Help: "Sessions sockets resumed with since, by outcome (recovered, gone).",
		}, []string{"outcome"}),
		logLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_log_lines_total", Help: "Log lines written to logs sockets by source.",
		}, []string{"source"}),
	}
	if reg != nil {
		m.connections = promreg.Register(reg, m.connections)
		m.messagesOut = promreg.Register(reg, m.messagesOut)
		m.messagesIn = promreg.Register(reg, m.messagesIn)
		m.disconnects = promreg.Register(reg, m.disconnects)
		m.fanout = promreg.Register(reg, m.fanout)
		m.published = promreg.Register(reg, m.published)
		m.listChecks = promreg.Register(reg, m.listChecks)
		m.listUpdates = promreg.Register(reg, m.listUpdates)
		m.logLines = promreg.Register(reg, m.logLines)
		m.recoveries = promreg.Register(reg, m.recoveries)
	}
	return m
}

// kindMetrics are one hub's children of the collectors, resolved once so
// the per-message path does no label lookup.
type kindMetrics struct {
	connections prometheus.Gauge
	messagesOut prometheus.Counter
	messagesIn  prometheus.Counter
	fanout      prometheus.Observer
	disconnects *prometheus.CounterVec // by reason
}

func (m *hubMetrics) forKind(kind string) kindMetrics {
	return kindMetrics{
		connections: m.connections.WithLabelValues(kind),
		messagesOut: m.messagesOut.WithLabelValues(kind),
		messagesIn:  m.messagesIn.WithLabelValues(kind),
		fanout:      m.fanout.WithLabelValues(kind),
		disconnects: m.disconnects.MustCurryWith(prometheus.Labels{"kind": kind}),
	}
}
