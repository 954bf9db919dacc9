package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/agentsim"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/desktop"
	"github.com/streamspace/streamspace-realtime/internal/novnc"
	"github.com/streamspace/streamspace-realtime/internal/server"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// devAgentID names the simulated agent `serve --dev` runs in its own process.
const devAgentID = "dev-agent"

// devAgentConnectWait bounds how long the banner waits for dev-agent: long enough for a slow
// first connection, short enough that a broken agent does not hide how to use the server.
const devAgentConnectWait = 10 * time.Second

// serveDev serves like serve, plus what a developer needs to try the server at once: the
// default organization, a browser token, an in-process agent (dev-agent) so that there is a
// live agent to see and command, and a banner of lines to copy. The agent is owned here: it
// stops when ctx ends, and serveDev waits for it (up to the shutdown timeout) before returning.
func serveDev(ctx context.Context, srv *server.Server, cfg server.Config, ln net.Listener, log *slog.Logger, stdout io.Writer) error {
	banner, err := devSetup(ctx, srv, cfg, ln.Addr())
	if err != nil {
		_ = ln.Close()
		_ = srv.Shutdown(context.Background())
		return err
	}
	log.Info("listening", "addr", ln.Addr().String(), "replica", cfg.Replica, "dev", true)

	stopAgent := startDevAgent(ctx, srv.Database(), "http://"+banner.Host, cfg.ShutdownTimeout, log.With("component", devAgentID))
	// Deferred, so that the agent also stops when Serve fails on its own.
	defer stopAgent()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	banner.AgentConnected = awaitAgent(ctx, srv.Agents(), devAgentID, devAgentConnectWait)
	if ctx.Err() == nil {
		if err := banner.write(stdout); err != nil {
			log.Warn("dev: printing the banner failed", "err", err)
		}
	}
	return <-served
}

// devSetup makes sure the default organization exists and gathers what the banner prints: a
// browser token and the addresses and secrets of the lines to copy.
func devSetup(ctx context.Context, srv *server.Server, cfg server.Config, addr net.Addr) (devBanner, error) {
	if err := srv.Database().UpsertOrganization(ctx, models.Organization{
		ID: cfg.DefaultOrg, Name: "Default organization", K8sNamespace: cfg.DefaultNamespace,
	}); err != nil {
		return devBanner{}, fmt.Errorf("dev: create default organization: %w", err)
	}
	id := auth.Identity{UserID: "dev-user", Username: "dev", OrgID: cfg.DefaultOrg, Role: auth.RoleAdmin}
	tok, err := auth.Mint([]byte(cfg.JWTSecret), id, 24*time.Hour, time.Now())
	if err != nil {
		return devBanner{}, fmt.Errorf("dev: mint token: %w", err)
	}
	srv.SetDevToken(tok)
	return devBanner{
		Host:         displayHost(addr),
		Database:     redactURL(cfg.DatabaseURL),
		ServiceToken: cfg.ServiceToken,
		Org:          cfg.DefaultOrg,
		BrowserToken: tok,
		AgentID:      devAgentID,
		BootstrapKey: cfg.AgentBootstrapKey,
		AutoApprove:  cfg.AgentAutoApprove,
		NoVNC:        cfg.NoVNCDir != "" || novnc.Valid(novnc.DebianDir),
	}, nil
}

// displayHost is the address to print and to dial: localhost for a wildcard or loopback
// listener, so that the printed lines work as they are on the developer's machine.
func displayHost(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP.IsUnspecified() || tcp.IP.IsLoopback()) {
		return fmt.Sprintf("localhost:%d", tcp.Port)
	}
	return addr.String()
}

// devBanner is what `serve --dev` prints once it is ready.
type devBanner struct {
	Host, Database, ServiceToken, Org, BrowserToken string
	AgentID, BootstrapKey                           string
	AutoApprove, AgentConnected                     bool
	// NoVNC: noVNC is served, so the dashboard's view button works.
	NoVNC bool
}

// write prints the banner in one write, so that it is never interleaved with other output.
func (b devBanner) write(w io.Writer) error {
	if _, err := io.WriteString(w, b.text()); err != nil {
		return fmt.Errorf("dev: print banner: %w", err)
	}
	return nil
}

// text fills bannerText in. It is not a text/template: a template looks fields and methods up
// by name through reflection, and a binary that may call a method by name keeps every
// exported method of every type it links (go-redis's thousand commands, 4 MB of code), which
// an idle server then pays for in pages of its executable (docs/PERFORMANCE.md).
func (b devBanner) text() string {
	noVNC := ""
	if !b.NoVNC {
		noVNC = ", once noVNC is installed: scripts/tools.sh"
	}
	agent := "is not connected yet, see its logs"
	if b.AgentConnected {
		agent = "is connected"
	}
	approval := "(auto-approval is off: approve it with curl -sS -X POST http://{host}/api/v1/admin/agents/my-agent/approve -H 'Authorization: Bearer {service-token}'\n" +
		"                  then run it with the apiKey of the answer)"
	if b.AutoApprove {
		approval = "(auto-approval is on: the server issues the agent its own key and the command prints it; later runs use that key)"
	}
	// The sections go in first (they hold placeholders of their own); the values go in last, in
	// one pass that never rescans what it put in, so no value can inject a placeholder.
	sections := strings.NewReplacer("{novnc}", noVNC, "{agent-state}", agent, "{approval}", approval)
	values := strings.NewReplacer(
		"{host}", b.Host, "{database}", b.Database, "{service-token}", b.ServiceToken,
		"{org}", b.Org, "{browser-token}", b.BrowserToken, "{agent}", b.AgentID,
		"{bootstrap-key}", b.BootstrapKey,
	)
	return values.Replace(sections.Replace(bannerText))
}

// bannerText keeps each printed command on lines a shell accepts when pasted.
const bannerText = `StreamSpace Realtime (dev mode) on http://{host}
  dashboard:     http://{host}/   (open it in a browser on this machine: the token below is filled in;
                 a running session's "view" shows its desktop through noVNC{novnc})
  database:      {database}
  service token: {service-token}
  browser token (admin of {org}, 24h):
    {browser-token}

  watch events:  go run ./cmd/streamspace-realtime watch --server ws://{host} --token {browser-token}
                 (or: websocat 'ws://{host}/api/v1/ws/sessions?token={browser-token}')
  org metrics:   websocat 'ws://{host}/api/v1/ws/cluster?token={browser-token}'   (every 5 s)
  publish one:   curl -sS -X POST http://{host}/api/v1/events \
                   -H 'Authorization: Bearer {service-token}' -H 'Content-Type: application/json' \
                   -d '{"orgId":"{org}","type":"session.created","sessionId":"demo-1","userId":"dev-user","data":{"template":"firefox-browser","state":"running"}}'

  agent:         {agent} (docker, shared, simulated) runs in this process and {agent-state} (component={agent})
  start a session on it (the watcher sees session.created, then session.state.changed pending → running):
                 curl -sS -X POST http://{host}/api/v1/admin/agents/{agent}/command \
                   -H 'Authorization: Bearer {service-token}' -H 'Content-Type: application/json' \
                   -d '{"action":"start_session","sessionId":"demo-2","payload":{"user":"dev-user","template":"firefox-browser"}}'
  its pod logs:  websocat 'ws://{host}/api/v1/ws/logs/sim-demo-2?token={browser-token}'   (the last 100 lines, then one a second, relayed by {agent})
  run another:   go run ./cmd/streamspace-realtime agent --server http://{host} --id my-agent --platform docker --key {bootstrap-key}
                 {approval}
`

// awaitAgent waits up to bound for the hub to hold a connection of agentID.
func awaitAgent(ctx context.Context, hub *websocket.AgentHub, agentID string, bound time.Duration) bool {
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !hub.IsAgentConnected(agentID) {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// startDevAgent runs dev-agent until ctx ends or stop is called. stop waits for it, up to
// bound, so that serve does not return while the agent still runs.
func startDevAgent(ctx context.Context, database *db.Database, serverURL string, bound time.Duration, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runDevAgent(ctx, database, serverURL, bound, log)
	}()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(bound):
			log.Warn("dev agent did not stop in time", "timeout", bound)
		}
	}
}

// runDevAgent makes sure dev-agent exists and runs it against serverURL until ctx ends. It logs
// its failures rather than returning them: the server is what is being run, and runs on
// without its agent.
func runDevAgent(ctx context.Context, database *db.Database, serverURL string, shutdown time.Duration, log *slog.Logger) {
	key := auth.NewAgentKey()
	if err := ensureDevAgent(ctx, database, key); err != nil {
		if ctx.Err() != nil {
			return // stopped before it started: nothing failed
		}
		log.Error("dev agent not started; the server runs without it", "err", err)
		return
	}
	tunnels, viewersDone := devDesktop(ctx, log.With("component", "desktop"))
	defer viewersDone()
	sim, err := agentsim.New(agentsim.Config{Config: agentclient.Config{
		ServerURL:       serverURL,
		AgentID:         devAgentID,
		APIKey:          key,
		Platform:        models.PlatformDocker,
		ShutdownTimeout: shutdown,
		Logger:          log,
	}, VNC: tunnels})
	if err != nil {
		log.Error("dev agent not started; the server runs without it", "err", err)
		return
	}
	if err := sim.Run(ctx); err != nil {
		log.Error("dev agent stopped; the server runs on without it", "err", err)
	}
}

// devDesktop streams every running session of dev-agent from one built-in desktop in this
// process (internal/desktop), over an in-memory connection per viewer, so the dashboard's view
// button shows a live desktop with nothing else installed. wait returns once every viewer's
// desktop connection has ended; call it after the agent stopped dialing.
func devDesktop(ctx context.Context, log *slog.Logger) (handler agentclient.TunnelHandler, wait func()) {
	d := desktop.New(desktop.Options{Logger: log})
	var viewers sync.WaitGroup
	return agentclient.ProxyTo(func(context.Context, string) (net.Conn, error) {
		agentSide, desktopSide := net.Pipe()
		viewers.Go(func() {
			if err := d.Serve(ctx, desktopSide); err != nil {
				log.Debug("dev desktop viewer ended", "err", err)
			}
		})
		return agentSide, nil
	}), viewers.Wait
}

// ensureDevAgent creates dev-agent (shared, docker, approved) with key, or, when the database
// holds it from an earlier run, approves it again with key: a fresh key each start, since the
// previous run's key was never written down.
func ensureDevAgent(ctx context.Context, database *db.Database, key string) error {
	hash := auth.HashAgentKey(key)
	err := database.CreateAgent(ctx, models.Agent{
		ID: devAgentID, Platform: models.PlatformDocker, Status: models.AgentStatusOffline,
		ApprovalStatus: models.ApprovalApproved, APIKeyHash: hash,
	})
	if errors.Is(err, db.ErrConflict) {
		err = database.SetAgentApproval(ctx, devAgentID, models.ApprovalApproved, hash)
	}
	if err != nil {
		return fmt.Errorf("dev: provision %s: %w", devAgentID, err)
	}
	return nil
}
