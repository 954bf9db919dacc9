package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/novnc"
	"github.com/streamspace/streamspace-realtime/internal/server"
)

// openKubernetes builds the client of --session-source kubernetes. It is nil unless the binary
// is built with -tags kubernetes (kubernetes.go), and the server then refuses that source with
// the fix: only the tagged binary links client-go.
var openKubernetes server.KubernetesOpener

// serve runs the server until ctx ends (SIGINT, SIGTERM), then drains it. With --dev it also
// prepares and runs what a developer tries it with (serveDev).
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := server.LoadConfig(args, getenv)
	if err != nil {
		return err
	}
	cfg.OpenKubernetes = openKubernetes
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	if cfg.Dev {
		cfg.NoVNCDir = devNoVNC(ctx, cfg.NoVNCDir, log)
	}
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	if cfg.DebugAddr != "" {
		stop, err := serveDebug(cfg.DebugAddr, log)
		if err != nil {
			_ = ln.Close()
			_ = srv.Shutdown(context.Background())
			return err
		}
		defer stop()
	}
	if cfg.Dev {
		return serveDev(ctx, srv, cfg, ln, log, stdout)
	}
	log.Info("listening", "addr", ln.Addr().String(), "replica", cfg.Replica, "dev", false)
	return srv.Serve(ctx, ln)
}

// devNoVNC finds noVNC for serve --dev, downloading the pinned release into the user's cache
// when none is installed, so that a fresh machine's dashboard shows a live desktop. Without it
// the server runs all the same, and the view button says how to get noVNC.
func devNoVNC(ctx context.Context, configured string, log *slog.Logger) string {
	if configured != "" {
		return configured // the server checks it
	}
	ctx, cancel := context.WithTimeout(ctx, devNoVNCTimeout)
	defer cancel()
	dir, err := novnc.Resolve(ctx, novnc.Options{Download: true, Logger: log.With("component", "novnc")})
	if err != nil {
		log.Warn("dev: no noVNC for the dashboard's viewer", "err", err)
		return ""
	}
	return dir
}

// devNoVNCTimeout bounds the download of noVNC at a development server's start.
const devNoVNCTimeout = 2 * time.Minute

func newLogger(cfg server.Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", cfg.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// redactURL hides a password in a database URL.
func redactURL(u string) string {
	at := strings.LastIndexByte(u, '@')
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	creds := u[scheme+3 : at]
	if i := strings.IndexByte(creds, ':'); i >= 0 {
		return u[:scheme+3] + creds[:i] + ":***" + u[at:]
	}
	return u
}
