package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/server"
	"github.com/streamspace/streamspace-realtime/models"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := server.LoadConfig(args, getenv)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
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
	if cfg.Dev {
		if err := devSetup(ctx, srv, cfg, ln.Addr(), stdout); err != nil {
			_ = ln.Close()
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	log.Info("listening", "addr", ln.Addr().String(), "replica", cfg.Replica, "dev", cfg.Dev)
	return srv.Serve(ctx, ln)
}

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

// devSetup makes sure the default organization exists and prints what a
// developer needs: a browser token, and lines that connect and publish.
func devSetup(ctx context.Context, srv *server.Server, cfg server.Config, addr net.Addr, stdout io.Writer) error {
	if err := srv.Database().UpsertOrganization(ctx, models.Organization{
		ID: cfg.DefaultOrg, Name: "Default organization", K8sNamespace: cfg.DefaultNamespace,
	}); err != nil {
		return fmt.Errorf("dev: create default organization: %w", err)
	}
	id := auth.Identity{UserID: "dev-user", Username: "dev", OrgID: cfg.DefaultOrg, Role: auth.RoleAdmin}
	tok, err := auth.Mint([]byte(cfg.JWTSecret), id, 24*time.Hour, time.Now())
	if err != nil {
		return fmt.Errorf("dev: mint token: %w", err)
	}
	host := addr.String()
	if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP.IsUnspecified() || tcp.IP.IsLoopback()) {
		host = fmt.Sprintf("localhost:%d", tcp.Port)
	}
	fmt.Fprintf(stdout, `StreamSpace Realtime (dev mode) on http://%[1]s
  database:      %[2]s
  service token: %[3]s
  browser token (admin of %[4]s, 24h):
    %[5]s

  watch events:  go run ./cmd/streamspace-realtime watch --server ws://%[1]s --token %[5]s
                 (or: websocat 'ws://%[1]s/api/v1/ws/sessions?token=%[5]s')
  publish one:   curl -sS -X POST http://%[1]s/api/v1/events \
                   -H 'Authorization: Bearer %[3]s' -H 'Content-Type: application/json' \
                   -d '{"orgId":"%[4]s","type":"session.created","sessionId":"demo-1","userId":"dev-user","data":{"template":"firefox-browser","state":"running"}}'
`, host, redactURL(cfg.DatabaseURL), cfg.ServiceToken, cfg.DefaultOrg, tok)
	return nil
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
