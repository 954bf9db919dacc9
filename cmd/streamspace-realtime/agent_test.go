package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestAgentCommandValidatesFlags(t *testing.T) {
	ok := map[string]string{"STREAMSPACE_AGENT_ID": "a1", "STREAMSPACE_AGENT_KEY": "k"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no id", []string{"--key", "k"}, nil, "--id is required"},
		{"no key", []string{"--id", "a1"}, nil, "--key is required"},
		{"bad platform", []string{"--platform", "mainframe"}, ok, "--platform"},
		{"bad platform from env", nil, map[string]string{"STREAMSPACE_AGENT_ID": "a1", "STREAMSPACE_AGENT_KEY": "k", "STREAMSPACE_AGENT_PLATFORM": "x"}, "--platform"},
		{"zero heartbeat", []string{"--heartbeat", "0s"}, ok, "--heartbeat"},
		{"negative step", []string{"--step-delay", "-1s"}, ok, "--step-delay"},
		{"bad server", []string{"--server", "ftp://h"}, ok, "ServerURL"},
		{"extra args", []string{"now"}, ok, "unexpected arguments"},
		{"unknown flag", []string{"--nope"}, ok, "flag provided but not defined"},
		{"bad vnc", []string{"--vnc", "localhost"}, ok, "--vnc must be HOST:PORT"},
		{"bad vnc from env", nil, map[string]string{"STREAMSPACE_AGENT_ID": "a1", "STREAMSPACE_AGENT_KEY": "k", "STREAMSPACE_AGENT_VNC": "h:"}, "--vnc must be HOST:PORT"},
	} {
		var out, errs testkit.LockedBuffer
		err := run(context.Background(), append([]string{"agent"}, tc.args...), env(tc.env), &out, &errs)
		if err == nil || !strings.Contains(err.Error()+errs.String(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	var out, errs testkit.LockedBuffer
	if err := run(context.Background(), []string{"agent", "-h"}, env(nil), &out, &errs); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, f := range []string{"-server", "-id", "-key", "-platform", "-region", "-heartbeat", "-step-delay", "-vnc"} {
		if !strings.Contains(errs.String(), f) {
			t.Errorf("help does not mention %s", f)
		}
	}
}

// TestAgentCommand runs the subcommand from its environment against a fake control plane that
// issues the agent its own key, starts a session on it, opens a tunnel to the session's
// desktop (--vnc: a TCP server that speaks first, as a VNC server does), then stops it like
// SIGINT would.
func TestAgentCommand(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	vncAddr := l.Addr().String()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			if _, err = c.Write([]byte("RFB 003.008\n")); err == nil {
				_, err = io.Copy(io.Discard, c) // until the agent closes the tunnel
			}
		}
		served <- err
	}()
	cp := agenttest.NewServer("bootstrap")
	defer cp.Close()
	cp.UseTunnels(true)
	cp.IssueKey("own-key")
	cp.QueueRegisterAnswers(http.StatusCreated)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs testkit.LockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"agent", "--step-delay", "10ms", "--region", "eu", "--vnc", vncAddr}, env(map[string]string{
			"STREAMSPACE_AGENT_SERVER":   cp.URL,
			"STREAMSPACE_AGENT_ID":       "sim-7",
			"STREAMSPACE_AGENT_KEY":      "bootstrap",
			"STREAMSPACE_AGENT_PLATFORM": "vm",
		}), &out, &errs)
	}()
	wait, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	conn, err := cp.NextConn(wait)
	if err != nil {
		t.Fatalf("no connection: %v\n%s", err, errs.String())
	}
	if conn.AgentID != "sim-7" || conn.Key != "own-key" {
		t.Fatalf("connected as %q with key %q", conn.AgentID, conn.Key)
	}
	if reg := cp.Registrations()[0].Body; reg.Platform != "vm" || reg.Region != "eu" {
		t.Fatalf("registration %+v", reg)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "--key own-key") {
		t.Fatalf("stdout %q, want one line naming the new key", out.String())
	}

	if err := conn.SendCommand("c1", models.ActionStartSession, map[string]any{"sessionId": "s1"}, 1); err != nil {
		t.Fatal(err)
	}
	m, err := conn.Next(wait, models.MessageTypeComplete)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := agenttest.Decode[models.CompleteMessage](m); c.CommandID != "c1" || c.Result["state"] != "running" {
		t.Fatalf("complete %+v", c)
	}
	if err := conn.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: 1, SessionID: "s1", Window: models.DefaultTunnelWindow}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Next(wait, models.MessageTypeTunnelOpened); err != nil {
		t.Fatal(err)
	}
	if d, err := conn.NextData(wait); err != nil || d.TunnelID != 1 || string(d.Data) != "RFB 003.008\n" {
		t.Fatalf("first data frame %+v (%v), want the VNC server's banner", d, err)
	}
	if err := conn.Send(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("VNC side: %v", err)
		}
	case <-wait.Done():
		t.Fatal("the tunnel's TCP connection was not closed after tunnel_close")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
	}
	<-conn.Done()
	if conn.CloseCode() != 1000 {
		t.Fatalf("close code %d, want 1000", conn.CloseCode())
	}
}
