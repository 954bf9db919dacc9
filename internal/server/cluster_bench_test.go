package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// clusterOf starts n in-process replicas on one fresh PostgreSQL schema; with redis they
// share a Redis under a prefix of their own, else n must be 1 (the embedded bus).
func clusterOf(tb testing.TB, n int, redis bool) []*testServer {
	tb.Helper()
	url := dbtest.URL(tb, "postgres")
	prefix := ""
	if redis {
		_, prefix = redistest.Client(tb)
	}
	out := make([]*testServer, n)
	for i := range n {
		out[i] = startServer(tb, "postgres", func(c *Config) {
			c.DatabaseURL, c.Replica = url, fmt.Sprintf("r%d", i+1)
			if redis {
				c.RedisURL, c.RedisPrefix = testRedisURL(), prefix
			}
		})
	}
	return out
}

func testRedisURL() string {
	if u := os.Getenv(redistest.EnvRedisURL); u != "" {
		return u
	}
	return redistest.DefaultRedisURL
}

type clusterShape struct {
	name     string
	replicas int
	redis    bool
}

var clusterShapes = []clusterShape{
	{"single", 1, false},      // the embedded bus
	{"single-redis", 1, true}, // one replica through Redis
	{"cross-replica", 2, true},
}

// BenchmarkClusterCommand measures a command from the admin API to the agent's socket: on a
// single node, and accepted by one replica for an agent connected to another (the wake-up
// crosses Redis, the holding replica claims and sends it). p50 and p99 per operation.
func BenchmarkClusterCommand(b *testing.B) {
	for _, shape := range clusterShapes {
		b.Run(shape.name, func(b *testing.B) {
			servers := clusterOf(b, shape.replicas, shape.redis)
			holder, entry := servers[0], servers[len(servers)-1]
			code, raw := holder.call(b, "POST", "/api/v1/admin/agents", bearer(testService), registerBody("bench-1", "docker"))
			if code != http.StatusCreated {
				b.Fatalf("create agent: %d %s", code, raw)
			}
			var reg struct{ APIKey string }
			_ = json.Unmarshal(raw, &reg)
			agent, _, err := gorilla.DefaultDialer.Dial(holder.wsURL("/api/v1/agents/connect?agent_id=bench-1"), agentKey(reg.APIKey))
			if err != nil {
				b.Fatal(err)
			}
			defer agent.Close()
			testkit.Eventually(b, 10*time.Second, "bench-1 connected", func() bool { return entry.Agents().IsAgentConnected("bench-1") })
			b.ResetTimer()
			reportPercentiles(b, commandLatencies(b, entry.base, "bench-1", agent))
		})
	}
}

// BenchmarkClusterEvent measures POST /api/v1/events until a browser of the org has the
// frame: on a single node, and published on one replica for a browser on another.
func BenchmarkClusterEvent(b *testing.B) {
	for _, shape := range clusterShapes {
		b.Run(shape.name, func(b *testing.B) {
			servers := clusterOf(b, shape.replicas, shape.redis)
			viewer, entry := servers[0], servers[len(servers)-1]
			h := http.Header{"Authorization": {"Bearer " + mintTB(b, "ops", "bench-org", auth.RoleAdmin)}}
			browser, _, err := gorilla.DefaultDialer.Dial(viewer.wsURL("/api/v1/ws/sessions"), h)
			if err != nil {
				b.Fatal(err)
			}
			defer browser.Close()
			for _, want := range []string{"connected", "sessions_update"} {
				if _, msg, err := browser.ReadMessage(); err != nil || !strings.Contains(string(msg), want) {
					b.Fatalf("greeting: %s %v", msg, err)
				}
			}
			client := &http.Client{}
			body := `{"type":"session.updated","sessionId":"s1","userId":"u1","orgId":"bench-org"}`
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				req, _ := http.NewRequest(http.MethodPost, entry.base+"/api/v1/events", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testService)
				resp, err := client.Do(req)
				if err != nil || resp.StatusCode != http.StatusAccepted {
					b.Fatalf("event: %v %v", err, resp)
				}
				_ = resp.Body.Close()
				if _, _, err := browser.ReadMessage(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			reportPercentiles(b, lat)
		})
	}
}

func mintTB(tb testing.TB, user, org string, role auth.Role) string {
	tb.Helper()
	tok, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: user, OrgID: org, Role: role}, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}
