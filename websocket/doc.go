// Package websocket provides real-time WebSocket communication for
// StreamSpace: browsers receive live session events, session lists and
// metrics; agents receive commands (AgentHub, AgentConnection).
//
// The API follows StreamSpace's reference package name for name: Hub,
// Client, Notifier, Manager, OrgContext, SessionEvent, EventType,
// BroadcastMessage. Where the reference was weak, this package does what a
// production system needs, and says so here:
//
//   - Tenancy at the boundary. Every client belongs to exactly one
//     organization, fixed at registration from an OrgContext that the caller
//     built from verified credentials. Deliveries are looked up in that
//     organization's index only, so nothing reaches another organization.
//     The deprecated entry points without an organization (ServeClient,
//     HandleSessionsWebSocket) place the client in Config.DefaultOrg.
//   - Roles. OrgContext.Role "operator" and "admin" receive every event of
//     their organization; a "user" receives its own and those of sessions it
//     subscribed to and may see.
//   - Fan-out never blocks. Each client's queue is bounded (256 messages by
//     default); a client that cannot keep up is closed with 4001 and counted,
//     and nobody else waits for it. The reference's blocking sends are gone.
//   - Indexes, not scans. Clients are indexed by organization, user, session
//     and role; routing an event costs its receivers only.
//   - One ordered stream per organization. Notifier.Publish and
//     Notifier.BroadcastToOrg go through a cluster bus (in-process by
//     default, Redis across replicas); every frame carries the stream's
//     "offset" and "epoch", and the sessions socket opens with a
//     `connected` frame stating the position the client starts from. A
//     client that reconnects with SessionsRequest.Since gets the entries it
//     missed and may see, in order, before the snapshot and live entries
//     (`recovered` true), from history the bus keeps (Bus.History: memory on
//     one node, a Redis stream per organization across replicas).
//   - Lists and metrics are pulled once per organization, not per client.
//     Every SessionsInterval (3 s) each organization with listeners has its
//     sessions read with one query, and a client gets `sessions_update` only
//     when its visible list changed (time alone moving idleDuration is no
//     change). Metrics sockets get their organization's counts every
//     MetricsInterval (5 s); organizations without listeners cost nothing.
//   - Two session sources. A nil k8s client means the database; with one, the
//     Session resources of the organization's namespace, read from an
//     informer's cache and merged with the database's connections, activity
//     and agent.
//   - Pod logs without leaks. HandleLogsWebSocketWithOrg serves operators and
//     admins of the pod's organization only: the last 100 lines, then new
//     ones, from the Kubernetes API or relayed by the agent running the
//     session (AgentHub.OpenLogs, across replicas too); one PodLogs per
//     replica, handed to the Manager and the AgentHub, does both. The source is
//     cancelled when the browser leaves; a slow browser slows the API stream
//     or, for an agent's stream, is closed with 4001; a failing or silent
//     source gets `log_error` and 1011. The reference streamed from a
//     goroutine nothing stopped.
//   - Keepalive and limits. Pings every 54 s, 60 s pong wait, 10 s write
//     wait, 4 KiB inbound limit (1009), all configurable; the connection is
//     closed with 4003 when the caller's token expires. A browser sending
//     more than ClientMessageRate frames a second (20), or given more than
//     MaxSubscriptions subscriptions (64), is closed with 1008. The Serve*
//     entry points call the caller's OnClose once when a connection is over,
//     so that a server can count connections per user and organization.
//   - One message, one frame. Queued messages are never joined into one
//     frame (StreamSpace joined them with newlines and its browsers dropped
//     them). Several queued frames go out in one writev(2) instead.
//   - Cheap connections. A browser's frames are encoded once per message
//     and written by whoever delivers them, with nonblocking writes; a
//     writer goroutine exists only while a client has a backlog. On plain
//     TCP a browser is read without gorilla's reader, by a goroutine parked
//     in the runtime's poller with no buffer. An idle browser costs about
//     7 KiB of server memory (docs/PERFORMANCE.md). Connections handed to
//     the package must not have been read from.
//   - Orderly shutdown. Stop/Shutdown/CloseAll close every client with 1001
//     after writing what is queued, within a deadline; they are idempotent,
//     and nothing blocks after them.
//
// The agent side (AgentHub, AgentConnection) departs from the reference in
// the same spirit:
//
//   - Commands are never lost. SendCommandToAgent stores the command before
//     anything else; an agent that is offline gets its waiting commands, in
//     creation order, when it connects. Unacknowledged commands are sent
//     again (attempt+1) after the ack timeout, up to a maximum, then failed;
//     the timeout runs from when the command could have been read (its frame
//     written, and past the agent's last answer), so an agent working
//     through a backlog is not sent it twice.
//     Status changes are guarded updates that never move backwards.
//   - Identity is the caller's job, done before the upgrade: the server
//     checks the agent's API key against the agent id (the reference trusted
//     a query parameter). A reconnect replaces the old connection with 4000,
//     and the old connection's cleanup can never touch the new one.
//   - Heartbeats update LastPing at once and reach the database coalesced,
//     one transaction per flush interval for all agents. Agents silent past
//     the heartbeat timeout are closed with 4002 and marked offline. Timers
//     run on an injectable clock.
//   - Bad frames get an error frame and are counted; malformed ones past a
//     limit, floods (1008) and oversized frames (1009) close the connection.
//   - A status report moves only a session placed on the reporting agent and
//     is published to the session's organization as a session event.
//   - Shutdown closes agents with 1001 so they reconnect elsewhere; the
//     `shutdown` message is only for retiring an agent (DisconnectAgent).
//
// Several replicas (NewAgentHubWithRedis, or AgentHubConfig.Directory and
// Config.Bus from cluster) behave as one:
//
//   - Each agent connection is claimed in Redis for its replica, with a TTL
//     the replica refreshes; the release is a compare-and-delete on (replica,
//     connection), so a late cleanup never erases the agent's new home, and a
//     replica still holding an older connection is told to close it (4000).
//     IsAgentConnected, GetConnectedAgents and AgentLocations answer for the
//     whole cluster.
//   - A command accepted anywhere is stored, then wakes the dispatcher of the
//     replica holding the agent through that replica's channel; only that
//     replica claims and sends it, and the database records each transition
//     once. A lost wake-up costs one check interval (each replica sweeps for
//     its agents' waiting commands), never the command. BroadcastToAllAgents
//     and DisconnectAgent reach every replica.
//   - A replica receives an organization's events only while it has a client
//     of that organization (one Redis channel per organization, subscribed
//     on demand), in offset order and once each.
//   - While Redis is away, each replica goes on serving its own browsers and
//     agents (events in a local epoch, so resumed clients are told they were
//     not recovered), and rejoins by itself when Redis returns.
//     NewAgentHubWithRedis, which cannot return an error, starts that way when
//     Redis does not answer yet; the server refuses to start instead.
package websocket
