package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	gorilla "github.com/gorilla/websocket"
)

// watch connects to a sessions socket and prints every frame, one per
// line, until interrupted: a way to see the stream without other tools.
func watch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "ws://localhost:8080", "server base URL (ws:// or wss://)")
	token := fs.String("token", getenv("STREAMSPACE_TOKEN"), "browser token (env STREAMSPACE_TOKEN)")
	session := fs.String("session", "", "also subscribe to this session id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *token == "" {
		return errors.New("watch: --token is required")
	}
	u, err := url.Parse(*server)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return fmt.Errorf("watch: --server must be a ws:// or wss:// URL, got %q", *server)
	}
	u.Path = "/api/v1/ws/sessions"
	if *session != "" {
		u.RawQuery = url.Values{"session_id": {*session}}.Encode()
	}
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, resp, err := gorilla.DefaultDialer.DialContext(dialCtx, u.String(), http.Header{"Authorization": {"Bearer " + *token}})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			return fmt.Errorf("watch: refused with %s: %s", resp.Status, body)
		}
		return fmt.Errorf("watch: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = conn.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
		_ = conn.Close()
	})
	defer stop()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			var ce *gorilla.CloseError
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.As(err, &ce):
				return fmt.Errorf("watch: server closed the connection: %d %s", ce.Code, ce.Text)
			default:
				return fmt.Errorf("watch: %w", err)
			}
		}
		fmt.Fprintf(stdout, "%s\n", data)
	}
}
