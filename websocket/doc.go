// Package websocket is the real-time layer of a multi-tenant StreamSpace
// control plane. Browsers receive live session events, session lists,
// organization metrics and pod logs; agents hold a socket over which they
// receive commands and report heartbeats, results and session states. The
// wire contract the package speaks is docs/PROTOCOL.md of this repository,
// compatible with StreamSpace's agents and UI.
//
// # Main types
//
//   - Manager owns the browser side: the sessions, metrics and logs sockets
//     (ServeSessions, ServeMetrics, ResolveLogs and ServeLogs), the periodic
//     session-list check, and the Notifier.
//   - Hub holds one replica's browser connections, each a Client, indexed by
//     organization, subscribed user and session, and role, so routing a
//     message costs its receivers only.
//   - Notifier publishes: Publish puts a SessionEvent (Type is one of the
//     fourteen EventType values) in its organization's ordered stream,
//     BroadcastToOrg any JSON object. Both return the entry's position.
//   - OrgContext is who a browser connection is: organization, namespace,
//     user, role and token expiry. It is fixed when the connection is
//     registered.
//   - AgentHub owns the agent side: one AgentConnection per agent, durable
//     command delivery, heartbeats and status reports.
//   - PodLogs streams pod logs to browsers, from the Kubernetes API or relayed
//     by the agent running the session, across replicas too. One per replica
//     is handed to both the Manager (Config.Logs) and the AgentHub
//     (AgentHubConfig.Logs); each makes its own when none is given.
//   - Tunnel is one browser's view of a session's desktop (PROTOCOL.md 6):
//     Manager.AuthorizeViewer decides whether the caller may look and
//     whether it controls the desktop or only watches, AgentHub.OpenTunnel
//     reserves a path through the session's agent, Tunnel.Serve relays the
//     RFB bytes, and Manager.TrackViewer counts the viewer as a connection
//     to the session. StreamSpace's agents (vnc_* messages, one tunnel per
//     session) and agents speaking tunnel/1 (a tunnel per viewer, binary
//     frames, flow-control windows) are both served. The reference had no
//     such type: its embedders' VNC proxy read Receive and wrote Send
//     itself, which raced the hub's own reader and blocked on a full queue;
//     here the hub owns the agent socket and tunnel bytes are frames on it,
//     sent after every waiting control frame.
//
// # Embedding
//
// The package does not authenticate anyone: the caller does, before the
// upgrade, and answers refusals over HTTP. A browser endpoint verifies the
// token, builds an OrgContext from its verified claims only, upgrades with
// NewUpgrader, and hands the connection over:
//
//	m := websocket.NewManagerWithConfig(database, nil, websocket.Config{})
//	m.Start()
//	defer m.Shutdown(ctx)
//	http.HandleFunc("GET /ws/sessions", func(w http.ResponseWriter, r *http.Request) {
//		id, err := verify(r) // the caller's token check: 401 on failure
//		if err != nil {
//			http.Error(w, "unauthorized", http.StatusUnauthorized)
//			return
//		}
//		org := &websocket.OrgContext{OrgID: id.Org, UserID: id.User, Role: id.Role, ExpiresAt: id.Exp}
//		conn, err := upgrader.Upgrade(w, r, nil) // upgrader := websocket.NewUpgrader(nil)
//		if err != nil {
//			return
//		}
//		_ = m.ServeSessions(r.Context(), conn, org, websocket.SessionsRequest{
//			SessionID: r.URL.Query().Get("session_id"), Since: r.URL.Query().Get("since"),
//		})
//	})
//
// Agents are authenticated the same way (their API key against the agent
// id), then handed to AgentHub.ServeAgent; `go agentHub.Run()` runs its
// periodic work. Setting AgentHubConfig.Events to the Manager's Notifier
// turns agents' status reports into session events for browsers, and
// Config.Agents lets logs sockets relay pod logs through agents. A
// connection handed to the package must not have been read from, and the
// package owns it from then on.
//
// An existing API server embeds the package with what it already has
// (docs/EMBEDDING.md walks through StreamSpace's own):
//
//   - Storage: db.OpenDB over its *sql.DB or db.OpenPool over its pgx pool
//     (Close leaves the pool open). Everything this package stores lives in
//     tables named with a prefix (db.DefaultTablePrefix, "ssrt_";
//     db.WithTablePrefix), so the server's own agents, sessions and commands
//     tables are never touched. Or its own SessionStore and AgentStore
//     implementations: NewManagerWithSources and NewAgentHubWithStore take
//     any, "not found" being an error wrapping ErrNotFound.
//   - Kubernetes: a *k8s.Client (k8s.New over its clientsets, k8s.NewForConfig
//     over its rest.Config), which NewManager takes as a KubernetesClient, or
//     its own SessionSource, which is also the pod log source when it
//     implements PodLogSource; or nil. This package does not import package
//     k8s, so a program that passes nil links no client-go.
//   - Agent sockets: RegisterAgent (ServeAgent builds the AgentConnection)
//     hands the socket to the hub, which then alone reads and writes it; a
//     Conn that is no upgraded socket is refused with ErrUnusableSocket. The
//     frames the hub leaves, unknown types and StreamSpace's vnc_* frames of a
//     session no Tunnel of this package holds, arrive in order on the
//     connection's Receive channel, and the server's own frames for the agent
//     go out with AgentConnection.Enqueue.
//
// One process needs nothing more: Config.Bus defaults to an in-process bus
// with the history resuming browsers need. Several replicas share one Redis
// through the public cluster package: the Bus and Directory of the
// cluster.Redis that cluster.NewRedis returns go in Config.Bus and
// AgentHubConfig.Directory, and the replicas then behave as one. Each organization's stream is shared (a replica
// receives it only while it has a browser of that organization); each
// agent connection is claimed for its replica, and a command accepted
// anywhere is sent by the replica holding the agent. While Redis is away
// each replica goes on serving its own browsers and agents and rejoins by
// itself when Redis returns (NewAgentHubWithRedis, which cannot return an
// error, even starts that way when Redis does not answer yet).
//
// # Design choices
//
// Where a simpler design would have been easy to write, the package does
// otherwise:
//
//   - Identity comes from the caller's verified token, through OrgContext,
//     never from the query string. Every delivery is looked up in one
//     organization's index, so nothing crosses organizations. A "user" sees
//     its own sessions and events and those of a session it subscribed to
//     and may see; "operator" and "admin" see the whole organization. A user
//     whose subscribed session stops being visible to it (unshared, deleted)
//     is closed with 4004.
//   - Fan-out never blocks. Each client's queue is bounded (Config.QueueSize,
//     256 frames); a client that cannot keep up is closed with 4001 and
//     counted, and nobody waits for it. There is no blocking send.
//   - One message, one frame. Queued messages are never joined into one
//     frame; several queued frames go out in one writev(2) instead.
//   - One ordered stream per organization. Every event and broadcast frame
//     carries the stream's "offset" and "epoch", and a sessions socket opens
//     with a `connected` frame saying where it starts. A browser that
//     reconnects with SessionsRequest.Since receives what it missed and may
//     see, in order, before its snapshot and live entries, from the history
//     the bus keeps (memory on one node, a Redis stream per organization
//     across replicas).
//   - Lists and metrics are read once per organization, not per client:
//     every SessionsInterval (3 s) for session lists, with `sessions_update`
//     sent only to clients whose visible list changed (time alone moving
//     idleDuration is no change), every MetricsInterval (5 s) for metrics.
//     Organizations without listeners cost nothing.
//   - Two session sources: the database, or a SessionSource (with a
//     Kubernetes client the Session resources of the organization, read from
//     an informer's cache) merged with the database's connections, activity
//     and agent.
//   - Pod logs stop when the browser leaves. Logs come from the Kubernetes
//     API or from the agent running the session (AgentHub, across replicas
//     too); a failing or silent source gets `log_error` and 1011.
//   - Cheap connections. A browser's frame is encoded once per message and
//     written by whoever delivers it, without blocking; a writer goroutine
//     exists only while a client has a backlog. On Linux one goroutine per
//     hub reads every browser socket (epoll), so an idle browser costs no
//     goroutine and about 6 KiB of RSS, less than a server with one reader
//     goroutine per connection (docs/PERFORMANCE.md).
//   - Keepalive and limits, all in Config: pings every 54 s, a 60 s pong
//     wait, a 10 s write wait, 4 KiB inbound messages (1009), 20 frames a
//     second and 64 subscriptions per browser (1008), and a close with 4003
//     when the token expires. The Serve* methods call the caller's OnClose
//     once per connection, so a server can count connections.
//   - Commands are never lost. SendCommandToAgent and SubmitCommand store a
//     command first; an offline agent gets its waiting commands in creation
//     order when it connects; an unacknowledged command is sent again
//     (attempt+1) after the ack timeout, counted from when the agent could
//     have read it, up to a maximum, then failed. States never move
//     backwards.
//   - An agent's reconnect replaces its old connection (4000), whose cleanup
//     never touches the new one. Heartbeats reach the database coalesced,
//     one transaction per flush interval for all agents; silent agents are
//     closed with 4002. Bad frames get an error frame; too many, floods
//     (1008) and oversized frames (1009) close the connection. A status
//     report moves only a session placed on the reporting agent.
//   - Orderly shutdown. Manager.Shutdown and AgentHub.Stop close every
//     connection with 1001 after writing what is queued, within a deadline,
//     so clients reconnect elsewhere; they are idempotent and nothing blocks
//     after them. The agent `shutdown` message is only for retiring an agent
//     (DisconnectAgent).
//
// Entry points without an OrgContext (HandleSessionsWebSocket and the like)
// are deprecated: they place the caller in Config.DefaultOrg.
package websocket
