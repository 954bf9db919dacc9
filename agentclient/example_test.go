package agentclient_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/models"
)

// An agent for a platform registers one Handler per action, reports session states while it
// works, and returns a result. Here it runs against the fake control plane of agenttest.
func Example() {
	cp := agenttest.NewServer("bootstrap-key")
	defer cp.Close()

	a, err := agentclient.New(agentclient.Config{
		ServerURL: cp.URL,
		AgentID:   "docker-eu-1",
		APIKey:    "bootstrap-key",
		Platform:  models.PlatformDocker,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	a.Handle(models.ActionStartSession, func(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
		id, _ := cmd.Payload["sessionId"].(string)
		// ... start the container, then:
		err := a.ReportStatus(ctx, models.StatusMessage{SessionID: id, State: "running", VNCReady: true, VNCPort: 5900})
		return map[string]any{"sessionId": id}, err
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	conn, _ := cp.NextConn(context.Background())
	_ = conn.SendCommand("cmd-1", models.ActionStartSession, map[string]any{"sessionId": "s1"}, 1)
	for _, typ := range []string{models.MessageTypeAck, models.MessageTypeStatus, models.MessageTypeComplete} {
		m, _ := conn.Next(context.Background(), typ)
		fmt.Println(m.Type, string(m.Payload))
	}
	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// ack {"commandId":"cmd-1"}
	// status {"sessionId":"s1","state":"running","vncReady":true,"vncPort":5900}
	// complete {"commandId":"cmd-1","result":{"sessionId":"s1"}}
	// Run: <nil>
}

// An agent that streams sessions' desktops proxies each tunnel to the session's VNC server and
// tells the SDK which sessions run. Here the control plane takes up tunnel/1 and opens a
// tunnel the way a viewer's arrival does; a local listener stands in for the VNC server.
func ExampleProxyTo() {
	vnc, _ := net.Listen("tcp", "127.0.0.1:0")
	defer vnc.Close()
	go func() {
		c, err := vnc.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("RFB 003.008\n"))
		_, _ = io.Copy(io.Discard, c)
	}()

	cp := agenttest.NewServer("k")
	defer cp.Close()
	cp.UseTunnels(true)
	var d net.Dialer
	a, _ := agentclient.New(agentclient.Config{
		ServerURL: cp.URL, AgentID: "docker-eu-1", APIKey: "k", Platform: models.PlatformDocker,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tunnels: agentclient.ProxyTo(func(ctx context.Context, sessionID string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", vnc.Addr().String()) // the session's VNC server
		}),
	})
	_ = a.OpenTunnel(context.Background(), "s1") // when s1 starts running

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	conn, _ := cp.NextConn(context.Background())
	_ = conn.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: 1, SessionID: "s1", Window: models.DefaultTunnelWindow})
	opened, _ := conn.Next(context.Background(), models.MessageTypeTunnelOpened)
	fmt.Println(opened.Type, string(opened.Payload))
	data, _ := conn.NextData(context.Background())
	fmt.Printf("tunnel %d: %q\n", data.TunnelID, data.Data)
	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// tunnel_opened {"tunnelId":1,"window":1048576}
	// tunnel 1: "RFB 003.008\n"
	// Run: <nil>
}
