package websocket

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/internal/promreg"
)

// agentMetrics are the agent side's Prometheus collectors. Labels are bounded enums (frame
// type, reason, command state): never an agent, command or session id.
type agentMetrics struct {
	connections prometheus.Gauge
	disconnects *prometheus.CounterVec
	framesIn    *prometheus.CounterVec
	messagesIn  prometheus.Counter // every frame, beside framesIn's count by type
	framesOut   prometheus.Counter
	refused     *prometheus.CounterVec
	commands    *prometheus.CounterVec
	heartbeats  prometheus.Counter
	flushes     prometheus.Counter
	// statusBatches counts the transactions that wrote agents' coalesced status reports.
	statusBatches prometheus.Counter
	// receiveDrops counts the frames left to the embedder that AgentConnection.Receive had no
	// room for within ReceiveTimeout, by type.
	receiveDrops *prometheus.CounterVec
	vnc          *vncMetrics
}

// knownAgentFrames are the inbound types counted by name; others count as "unknown", so an
// agent cannot grow the label set.
var knownAgentFrames = map[string]bool{
	"heartbeat": true, "ack": true, "complete": true, "failed": true, "status": true,
	"pong": true, "log": true, "log_end": true,
	"vnc_ready": true, "vnc_data": true, "vnc_error": true,
	"tunnel_opened": true, "tunnel_credit": true, "tunnel_close": true, "tunnel_data": true,
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	shared := newHubMetrics(reg) // connections and disconnects by kind, shared with browsers
	m := &agentMetrics{
		connections: shared.connections.WithLabelValues("agent"),
		disconnects: shared.disconnects.MustCurryWith(prometheus.Labels{"kind": "agent"}),
		framesOut:   shared.messagesOut.WithLabelValues("agent"),
		messagesIn:  shared.messagesIn.WithLabelValues("agent"),
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_agent_frames_in_total", Help: "Frames received from agents by type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_agent_frames_refused_total",
			Help: "Agent frames answered with an error or a close, by reason.",
		}, []string{"reason"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_agent_commands_total", Help: "Command state changes by state.",
		}, []string{"state"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_agent_heartbeats_total", Help: "Heartbeats received from agents.",
		}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_agent_heartbeat_flushes_total",
			Help: "Database writes of coalesced heartbeats (one transaction each).",
		}),
		statusBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_agent_status_batches_total",
			Help: "Database writes of agents' session status reports, coalesced per session (one transaction each).",
		}),
		receiveDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_agent_receive_dropped_total",
			Help: "Agent frames left to the embedder dropped because AgentConnection.Receive had no room within ReceiveTimeout, by type.",
		}, []string{"type"}),
		vnc: newVNCMetrics(reg),
	}
	if reg != nil {
		m.framesIn = promreg.Register(reg, m.framesIn)
		m.refused = promreg.Register(reg, m.refused)
		m.commands = promreg.Register(reg, m.commands)
		m.heartbeats = promreg.Register(reg, m.heartbeats)
		m.flushes = promreg.Register(reg, m.flushes)
		m.statusBatches = promreg.Register(reg, m.statusBatches)
		m.receiveDrops = promreg.Register(reg, m.receiveDrops)
	}
	return m
}

func (m *agentMetrics) frameIn(frameType string) {
	m.framesIn.WithLabelValues(frameLabel(frameType)).Inc()
	m.messagesIn.Inc()
}

func (m *agentMetrics) receiveDropped(frameType string) {
	m.receiveDrops.WithLabelValues(frameLabel(frameType)).Inc()
}

// frameLabel is a frame type as a label value: its name when the hub knows it, else "unknown".
func frameLabel(frameType string) string {
	if !knownAgentFrames[frameType] {
		return "unknown"
	}
	return frameType
}

// vncMetrics are the session-streaming collectors of PROTOCOL.md 6.4.
type vncMetrics struct {
	open         *prometheus.GaugeVec   // protocol: streamspace, tunnel/1
	bytes        *prometheus.CounterVec // direction: to_agent, to_viewer
	inputDropped *prometheus.CounterVec // message: the rfb kind a view-only viewer sent
	refused      *prometheus.CounterVec // reason
}

func newVNCMetrics(reg prometheus.Registerer) *vncMetrics {
	m := &vncMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamspace_vnc_tunnels_open", Help: "VNC tunnels with a viewer, by protocol.",
		}, []string{"protocol"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_vnc_bytes_total", Help: "RFB bytes relayed, by direction.",
		}, []string{"direction"}),
		inputDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_vnc_input_dropped_total", Help: "Input messages of view-only viewers dropped, by RFB message.",
		}, []string{"message"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_vnc_refused_total", Help: "VNC tunnels refused or closed for cause, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		m.open = promreg.Register(reg, m.open)
		m.bytes = promreg.Register(reg, m.bytes)
		m.inputDropped = promreg.Register(reg, m.inputDropped)
		m.refused = promreg.Register(reg, m.refused)
	}
	return m
}
