package agentclient_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

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
