package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/internal/agentsim"
	"github.com/streamspace/streamspace-realtime/models"
)

// agent runs the reference agent (internal/agentsim): a simulated platform whose sessions live
// in memory, connected to a control plane the way a real agent is. It stops cleanly when ctx
// ends (SIGINT, SIGTERM) and fails when the control plane retires, rejects or replaces it.
func agent(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", envOr(getenv, "STREAMSPACE_AGENT_SERVER", "http://localhost:8080"),
		"control plane URL, http(s):// or ws(s):// (env STREAMSPACE_AGENT_SERVER)")
	id := fs.String("id", getenv("STREAMSPACE_AGENT_ID"), "agent id (env STREAMSPACE_AGENT_ID)")
	key := fs.String("key", getenv("STREAMSPACE_AGENT_KEY"), "API key: the bootstrap key or the agent's own (env STREAMSPACE_AGENT_KEY)")
	platform := fs.String("platform", envOr(getenv, "STREAMSPACE_AGENT_PLATFORM", models.PlatformDocker),
		"kubernetes, docker, vm or cloud (env STREAMSPACE_AGENT_PLATFORM)")
	region := fs.String("region", "", "region the agent serves")
	heartbeat := fs.Duration("heartbeat", agentclient.DefaultHeartbeatInterval, "heartbeat interval")
	step := fs.Duration("step-delay", agentsim.DefaultStepDelay, "time between simulated session state transitions")
	vnc := fs.String("vnc", getenv("STREAMSPACE_AGENT_VNC"),
		"HOST:PORT of the VNC server every running session's desktop is streamed from; empty: no streaming (env STREAMSPACE_AGENT_VNC)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("agent: unexpected arguments %q", fs.Args())
	case *id == "":
		return errors.New("agent: --id is required")
	case *key == "":
		return errors.New("agent: --key is required")
	case !models.ValidPlatform(*platform):
		return fmt.Errorf("agent: --platform must be kubernetes, docker, vm or cloud, got %q", *platform)
	case *heartbeat <= 0:
		return fmt.Errorf("agent: --heartbeat must be positive, got %v", *heartbeat)
	case *step <= 0:
		return fmt.Errorf("agent: --step-delay must be positive, got %v", *step)
	}
	var tunnels agentclient.TunnelHandler
	if *vnc != "" {
		if _, port, err := net.SplitHostPort(*vnc); err != nil || port == "" {
			return fmt.Errorf("agent: --vnc must be HOST:PORT, got %q", *vnc)
		}
		tunnels = dialVNC(*vnc)
	}
	agentID := *id
	sim, err := agentsim.New(agentsim.Config{
		Config: agentclient.Config{
			ServerURL:         *server,
			AgentID:           agentID,
			APIKey:            *key,
			Platform:          *platform,
			Region:            *region,
			HeartbeatInterval: *heartbeat,
			Logger:            slog.New(slog.NewTextHandler(stderr, nil)),
			OnAPIKey: func(k string) {
				fmt.Fprintf(stdout, "agent %s: the control plane issued this agent its own API key; the bootstrap key no longer works for it. Next time run with --key %s (or STREAMSPACE_AGENT_KEY)\n", agentID, k)
			},
		},
		StepDelay: *step,
		VNC:       tunnels,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := sim.Run(ctx); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// dialVNC streams every session from the VNC server at addr, over TCP.
func dialVNC(addr string) agentclient.TunnelHandler {
	var d net.Dialer
	return agentclient.ProxyTo(func(ctx context.Context, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
}

// envOr returns the environment variable name, or def when it is unset or empty.
func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
