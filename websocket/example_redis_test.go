package websocket_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	gorilla "github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// Example_redis runs the browser side (Manager) and the agent side (AgentHub) of one replica
// on Redis, with nothing but the exported API: every replica built this way with the same
// Redis and key prefix serves one cluster. The Redis URL comes from STREAMSPACE_REDIS_URL or
// REDIS_URL (default redis://127.0.0.1:6379/0).
func Example_redis() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)

	// Redis carries the organizations' event streams (Bus) and which replica holds each
	// agent (Directory). The prefix keeps this run's keys apart from any other's.
	client, err := cluster.NewRedisClient(cmp.Or(os.Getenv("STREAMSPACE_REDIS_URL"),
		os.Getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	prefix := "example-" + rand.Text()
	node, err := cluster.NewRedis(ctx, client, cluster.RedisOptions{
		Replica: "replica-a", Prefix: prefix, Logger: quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer deleteKeys(client, prefix)
	defer node.Close()

	// The database: SQLite in a temporary directory, with the agent the example connects.
	dir, err := os.MkdirTemp("", "streamspace-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	database, err := db.Open(ctx, "sqlite://"+filepath.Join(dir, "streamspace.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer database.Close()
	if err := database.CreateAgent(ctx, models.Agent{ID: "agent-1", OrgID: "org-1", Platform: "kubernetes"}); err != nil {
		log.Fatal(err)
	}

	manager := websocket.NewManagerWithConfig(database, nil, websocket.Config{
		Replica: "replica-a", Bus: node.Bus(), Logger: quiet,
	})
	agents := websocket.NewAgentHubWithConfig(database, websocket.AgentHubConfig{
		Replica: "replica-a", Directory: node.Directory(), Events: manager.GetNotifier(), Logger: quiet,
	})
	manager.Start()
	go agents.Run()
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = agents.Shutdown(sctx)
		_ = manager.Shutdown(sctx)
	}()

	// The sockets. A real server authenticates first and builds the OrgContext and the agent
	// id from verified credentials only.
	upgrader := websocket.NewUpgrader(nil)
	agentRegistered := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/sessions", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		manager.HandleSessionsWebSocketWithOrg(conn, "", "",
			&websocket.OrgContext{OrgID: "org-1", UserID: "alice", Role: "admin"})
	})
	mux.HandleFunc("/agent", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if _, err := agents.ServeAgent(conn, "agent-1", "kubernetes"); err != nil {
			_ = conn.Close()
			agentRegistered <- err
			return
		}
		agentRegistered <- nil
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http")

	agentConn, _, err := gorilla.DefaultDialer.Dial(wsURL+"/agent", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agentConn.Close()
	if err := <-agentRegistered; err != nil {
		log.Fatal(err)
	}
	owner, _, err := node.Directory().Lookup(ctx, "agent-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("agent-1 is held by", owner.Replica)

	browser, _, err := gorilla.DefaultDialer.Dial(wsURL+"/sessions", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer browser.Close()
	fmt.Println("browser:", readUntil(browser, "connected")["type"])

	pos, err := manager.GetNotifier().Publish(ctx, "org-1", websocket.SessionEvent{
		Type: websocket.EventSessionCreated, SessionID: "session-1", UserID: "alice",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published at offset", pos.Offset)
	event := readUntil(browser, string(websocket.EventSessionCreated))
	fmt.Println("browser:", event["type"], event["sessionId"], "at offset", event["offset"])

	// Output:
	// agent-1 is held by replica-a
	// browser: connected
	// published at offset 1
	// browser: session.created session-1 at offset 1
}

// readUntil returns the first frame of type typ, skipping others (the session list).
func readUntil(conn *gorilla.Conn, typ string) map[string]any {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var frame map[string]any
		if err := conn.ReadJSON(&frame); err != nil {
			log.Fatalf("waiting for %s: %v", typ, err)
		}
		if frame["type"] == typ {
			return frame
		}
	}
}

// deleteKeys removes what the example left in Redis under prefix.
func deleteKeys(client redis.UniversalClient, prefix string) {
	ctx := context.Background()
	iter := client.Scan(ctx, 0, prefix+":*", 100).Iterator()
	for iter.Next(ctx) {
		client.Del(ctx, iter.Val())
	}
}
