// Package server is the HTTP face of StreamSpace Realtime: routes,
// authentication and origin checks before any upgrade, the publish and
// broadcast APIs, health, readiness and Prometheus metrics, and the orderly
// shutdown of everything it started.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	gorilla "github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/agentadmin"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/novnc"
	"github.com/streamspace/streamspace-realtime/web"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// Server wires storage, authentication and the websocket Manager behind
// HTTP. It is safe for concurrent use; Serve runs it and Shutdown (or the
// cancellation of Serve's context) stops it, once.
type Server struct {
	cfg     Config
	log     *slog.Logger
	db      *db.Database
	cluster *redisCluster // nil on a single node
	manager *websocket.Manager
	agents  *websocket.AgentHub
	// admin is the administration of agents behind the agent and admin APIs.
	admin    *agentadmin.Service
	verifier *auth.Verifier
	origins  *auth.OriginPolicy
	registry *prometheus.Registry
	metrics  *httpMetrics
	upgrader *gorilla.Upgrader
	// agentUpgrader accepts agents, which send no Origin a browser policy could judge.
	agentUpgrader *gorilla.Upgrader
	// vncUpgrader accepts viewer sockets (binary subprotocol, larger buffers).
	vncUpgrader *gorilla.Upgrader
	// mesh links this replica to the others, which relay viewers to the agents held here and
	// from the viewers here to the agents held there; peers is where they listen. Both nil on
	// a single node. peerUpgrader accepts the viewers they relay.
	mesh         peerLink
	peers        peerLocator
	peerUpgrader *gorilla.Upgrader
	// relayUpgrader accepts viewers relayed to another replica: the viewer socket's, with a
	// smaller read buffer, as their frames are read past it.
	relayUpgrader *gorilla.Upgrader
	relayMetrics  *relayMetrics
	peerServing   sync.WaitGroup // the peer listener's accept loop
	// viewerLife ends at Shutdown, ending every viewer socket; viewers counts those being
	// served, which Shutdown waits for.
	viewerLife context.Context
	endViewers context.CancelFunc
	viewers    sync.WaitGroup
	http       *http.Server
	draining   atomic.Bool
	// closeKube closes the Kubernetes client the server built (nil: none, or the caller's).
	closeKube func()
	// dashboard serves the page at / and its files.
	dashboard *web.Handler
	// novnc serves noVNC at /novnc/ (nil: none found).
	novnc http.Handler
	// upgradeRates (nil: off) and connCounts are the limits applied before an upgrade.
	upgradeRates *ipRates
	connCounts   *connCounts

	shutdownOnce sync.Once
	shutdownErr  error
}

// New opens the database (applying migrations) and builds the server.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.checkKubernetes(); err != nil {
		return nil, err
	}
	verifier, err := auth.NewVerifier([]byte(cfg.JWTSecret), nil)
	if err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	origins, err := auth.NewOriginPolicy(cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("allowed origins: %w", err)
	}
	if cfg.Dev {
		// A development server hands its admin token to loopback: no rebinding name may pass
		// for its own host (auth.OriginPolicy).
		origins = origins.WithLiteralSameHost()
	}
	dashboard, err := web.New()
	if err != nil {
		return nil, err
	}
	// noVNC for the dashboard's viewer: the configured directory, else the system's. The
	// --dev download happens before (cmd serve), which then passes its directory here.
	novncDir, err := novnc.Resolve(ctx, novnc.Options{Dir: cfg.NoVNCDir})
	switch {
	case errors.Is(err, novnc.ErrNotFound):
		log.Info("noVNC not found: the dashboard's view button explains how to get it")
	case err != nil:
		return nil, err
	default:
		dashboard.SetNoVNC(novnc.Prefix)
	}
	registry := prometheus.NewRegistry()
	// The live heap (go_gc_heap_live_bytes) beside the default Go metrics: what survived the
	// last GC, the figure `bench` divides by the connections to cost one in memory.
	registry.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var (
		bus cluster.Bus
		dir cluster.Directory
		rc  *redisCluster
	)
	// The cluster first: a replica that cannot join refuses before touching the database. Its
	// peer listener comes before, so that the address published is the one listened on.
	var peerLn net.Listener
	if cfg.RedisURL != "" {
		if peerLn, err = listenPeers(&cfg); err != nil {
			return nil, err
		}
		if rc, err = openCluster(ctx, cfg, log, registry); err != nil {
			_ = peerLn.Close()
			return nil, err
		}
		bus, dir = rc.node.Bus(), rc.node.Directory()
	}
	closeCluster := func() {
		if rc != nil {
			_ = peerLn.Close()
			_ = rc.close()
		}
	}
	database, err := db.Open(ctx, cfg.DatabaseURL, cfg.dbOptions(log)...)
	if err != nil {
		closeCluster()
		return nil, err
	}
	if rc != nil && database.Dialect() == db.SQLite {
		log.Warn("several replicas on SQLite: each replica has its own file unless they share one; use PostgreSQL")
	}
	kube, closeKube, err := openKubernetes(cfg, log)
	if err != nil {
		_ = database.Close()
		closeCluster()
		return nil, err
	}
	// Pod logs first: the Manager serves logs sockets with them, and the hub (made after the
	// Manager, whose Notifier it publishes through) hands them its agents' log frames.
	logs := websocket.NewPodLogs(websocket.PodLogsConfig{Directory: dir, Logger: log, Registerer: registry})
	manager := websocket.NewManagerWithConfig(database, kube, websocket.Config{
		Logs:              logs,
		QueueSize:         cfg.ClientQueue,
		SessionsInterval:  cfg.SessionsInterval,
		Replica:           cfg.Replica,
		MetricsInterval:   cfg.MetricsInterval,
		History:           cfg.history(),
		PingInterval:      cfg.PingInterval,
		PongWait:          cfg.PongWait,
		WriteWait:         cfg.WriteWait,
		MaxMessageSize:    cfg.MaxMessageSize,
		ClientMessageRate: offIfZero(cfg.BrowserMessageRate),
		MaxSubscriptions:  offIfZero(cfg.MaxSubscriptions),
		DrainTimeout:      cfg.ShutdownTimeout,
		DefaultOrg:        cfg.DefaultOrg,
		DefaultNamespace:  cfg.DefaultNamespace,
		Bus:               bus,
		Logger:            log,
		Registerer:        registry,
	})
	agents := websocket.NewAgentHubWithConfig(database, websocket.AgentHubConfig{
		Replica:          cfg.Replica,
		HeartbeatTimeout: cfg.AgentHeartbeatTimeout,
		CheckInterval:    cfg.AgentCheckInterval,
		HeartbeatFlush:   cfg.AgentHeartbeatFlush,
		AckTimeout:       cfg.CommandAckTimeout,
		MaxAttempts:      cfg.CommandMaxAttempts,
		CommandTTL:       cfg.CommandTTL,
		PingInterval:     cfg.PingInterval,
		PongWait:         cfg.PongWait,
		WriteWait:        cfg.WriteWait,
		DrainTimeout:     cfg.ShutdownTimeout,
		Directory:        dir,
		Logs:             logs,
		Events:           manager.GetNotifier(),
		VNC: websocket.VNCConfig{
			MaxPerUser:  noLimitIfZero(cfg.VNCMaxPerUser),
			MaxPerAgent: noLimitIfZero(cfg.VNCMaxPerAgent),
			Window:      cfg.VNCWindow,
		},
		Logger:     log,
		Registerer: registry,
	})
	s := &Server{
		closeKube: closeKube,
		cfg:       cfg,
		log:       log,
		db:        database,
		cluster:   rc,
		manager:   manager,
		agents:    agents,
		admin: agentadmin.New(database, agents, manager, agentadmin.Config{
			DefaultOrg: cfg.DefaultOrg, BootstrapKey: cfg.AgentBootstrapKey, AutoApprove: cfg.AgentAutoApprove, Logger: log,
		}),
		verifier:     verifier,
		origins:      origins,
		registry:     registry,
		dashboard:    dashboard,
		novnc:        novncHandler(novncDir),
		upgradeRates: newIPRates(cfg.UpgradeRate, cfg.UpgradeBurst),
		connCounts:   newConnCounts(cfg.MaxConnectionsPerUser, cfg.MaxConnectionsPerOrg),
		metrics:      newHTTPMetrics(registry),
		// Origins are checked before the upgrade, with a JSON 403.
		upgrader:      websocket.NewUpgrader(nil),
		agentUpgrader: websocket.NewUpgrader(nil),
		vncUpgrader:   newVNCUpgrader(),
		peerUpgrader:  newPeerUpgrader(),
		relayUpgrader: newRelayUpgrader(),
		relayMetrics:  newRelayMetrics(registry),
	}
	s.viewerLife, s.endViewers = context.WithCancel(context.Background())
	// Agents send heartbeats, results and log lines: a read buffer that takes a frame or more,
	// the HTTP server's own 4 KiB one, kept (tunnel data is read past it, into pooled chunks).
	s.agentUpgrader.ReadBufferSize = 0
	// The handshake's own failures (bad version, missing key) are JSON too.
	s.upgrader.Error = func(w http.ResponseWriter, r *http.Request, status int, reason error) {
		s.fail(w, r, status, "upgrade_failed", reason.Error())
	}
	s.vncUpgrader.Error = s.upgrader.Error
	s.peerUpgrader.Error = s.upgrader.Error
	s.relayUpgrader.Error = s.upgrader.Error
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Bounds on plain HTTP; an upgraded connection's deadlines are its
		// own (each read and write sets them).
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  2 * time.Minute,
		// A larger request line and headers are answered 431 before any handler runs.
		MaxHeaderBytes: cmp.Or(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	manager.Start()
	go agents.Run()
	if rc != nil {
		// Only now: the streams other replicas open are served by this server's handler.
		if err := s.startPeers(peerLn, rc.node.Directory()); err != nil {
			_ = s.Shutdown(ctx)
			return nil, err
		}
	}
	return s, nil
}

// Database returns the server's storage (for seeding in dev mode and tests).
func (s *Server) Database() *db.Database { return s.db }

// Manager returns the websocket manager, whose Notifier in-process callers use.
func (s *Server) Manager() *websocket.Manager { return s.manager }

// Agents returns the agent hub.
func (s *Server) Agents() *websocket.AgentHub { return s.agents }

// Serve accepts connections on ln until ctx is cancelled or Shutdown is
// called, then shuts down within the configured timeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return s.shutdownErr
		}
		_ = s.Shutdown(context.Background())
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		err := s.Shutdown(sctx)
		<-errc
		return err
	}
}

// Shutdown stops accepting, reports not ready, closes every agent and every
// browser with 1001 after its queue is written (agents reconnect to another
// replica), leaves the cluster, and closes the database. It is idempotent; later calls return the
// first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.draining.Store(true)
		httpErr := s.http.Shutdown(ctx)
		s.endViewers()
		viewersErr := s.waitViewers(ctx)
		// After the viewers relayed from other replicas were told 1001: their replicas pass it on.
		var peerErr error
		if s.mesh != nil {
			peerErr = s.mesh.Close()
			s.peerServing.Wait()
		}
		agentErr := s.agents.Shutdown(ctx)
		wsErr := s.manager.Shutdown(ctx)
		var clusterErr error
		if s.cluster != nil {
			clusterErr = s.cluster.close()
		}
		if s.closeKube != nil {
			s.closeKube()
		}
		dbErr := s.db.Close()
		s.shutdownErr = errors.Join(httpErr, viewersErr, peerErr, agentErr, wsErr, clusterErr, dbErr)
		s.log.Info("server stopped", "err", s.shutdownErr)
	})
	return s.shutdownErr
}

// offIfZero maps the server's "0 turns it off" onto the websocket package's "negative turns
// it off" (where zero means its default).
func offIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// waitViewers waits for the viewer sockets being closed, within ctx.
func (s *Server) waitViewers(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.viewers.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("viewer sockets still closing: %w", ctx.Err())
	}
}

// noLimitIfZero maps the server's "0 turns a limit off" onto the VNC config's "zero means the
// default".
func noLimitIfZero(n int) int {
	if n == 0 {
		return math.MaxInt32
	}
	return n
}
