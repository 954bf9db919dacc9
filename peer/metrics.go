package peer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/internal/promreg"
)

type metrics struct {
	links      *prometheus.GaugeVec
	streams    prometheus.Gauge
	handshakes *prometheus.CounterVec
	dials      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		links: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamspace_peer_links", Help: "Open links with other replicas, by who dialled (in, out).",
		}, []string{"direction"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamspace_peer_streams_open", Help: "Open streams over the links with other replicas.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_peer_handshakes_total",
			Help: "Inbound peer links by result: ok, refused_tls, refused_proof, refused_name, busy, failed.",
		}, []string{"result"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_peer_dials_total",
			Help: "Outbound peer links by result: ok, unreachable, not_authenticated, wrong_replica, failed.",
		}, []string{"result"}),
	}
	if reg != nil {
		m.links = promreg.Register(reg, m.links)
		m.streams = promreg.Register(reg, m.streams)
		m.handshakes = promreg.Register(reg, m.handshakes)
		m.dials = promreg.Register(reg, m.dials)
	}
	return m
}
