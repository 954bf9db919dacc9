package websocket

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// SessionStore is what the Manager reads sessions and organizations from. *db.Database
// implements it; an embedder may implement it over its own tables (docs/EMBEDDING.md). A
// session, organization or share that does not exist is an error wrapping ErrNotFound; any
// other error means the store could not answer.
//
// The Manager also uses, when the store implements them: PresenceStore (browser connections
// to sessions and idle announcements; without it neither is recorded), ActivityStore (viewers
// keep their session active), SharePermissionStore (a share that grants control of the
// desktop; without it every share is view-only), MetricsStore (the metrics sockets; without
// it they get empty metrics) and PodStore (which session runs a pod, for logs sockets when
// there is no SessionSource; without it no pod is found).
type SessionStore interface {
	GetSession(ctx context.Context, id string) (models.Session, error)
	ListSessions(ctx context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error)
	GetOrganization(ctx context.Context, id string) (models.Organization, error)
	IsSessionSharedWith(ctx context.Context, sessionID, userID string) (bool, error)
}

var _ SessionStore = (*db.Database)(nil)

// ErrSessionNotVisible means the caller may not subscribe to the session:
// it does not exist, belongs to another organization, or is neither the
// caller's nor shared with it. One error for all three, so that no caller
// learns whether another organization's session exists.
var ErrSessionNotVisible = errors.New("websocket: session not visible to caller")

// Manager manages all WebSocket hubs and their data sources.
//
// Concurrency contract: safe for concurrent use. It owns the sessions Hub,
// the Notifier and, unless Config.Bus is set, an in-process bus. Start runs
// the hub; CloseAll (or Shutdown, with a deadline) closes every connection
// with 1001 and stops everything the Manager started; both are idempotent.
type Manager struct {
	cfg     Config
	store   SessionStore
	source  SessionSource // nil: the store's rows are the session list
	podLogs PodLogSource  // the logs sockets' source; nil: the agent running the session
	metrics *hubMetrics
	bus     cluster.Bus
	ownBus  bool
	hub     *Hub
	// metricsHub holds the metrics sockets; its clients get no stream entries.
	metricsHub *Hub
	notifier   *Notifier
	// presence bounds the presence events of each user's connections (nil: no bound).
	presence *presenceLimiter
	unsub    func()
	// reviews are the session subscriptions to check again after events that may have ended
	// them (access.go).
	reviews *accessReviews

	// logs serves the logs sockets (Config.Logs, else the Manager's own); Shutdown closes
	// them and waits for them.
	logs *PodLogs

	// ctx bounds the Manager's own work; life.cancel ends it at Shutdown.
	ctx  context.Context
	life managerLife
}

// managerLife is the Manager's run: started once, shut down once.
type managerLife struct {
	cancel    context.CancelFunc
	startOnce sync.Once
	started   chan struct{} // closed when Start ran
	runDone   chan struct{} // closed when everything Start started ended
	closeOnce sync.Once
}

// NewManager creates a manager with the default configuration. A nil
// database means no snapshots and no session subscriptions can be
// authorized; a nil k8sClient (or a nil *k8s.Client) means the database is
// the session source.
func NewManager(database *db.Database, k8sClient KubernetesClient) *Manager {
	return NewManagerWithConfig(database, k8sClient, Config{})
}

// NewManagerWithConfig creates a manager; zero Config fields take defaults. k8sClient, a
// *k8s.Client for example, is the session source and streams pod logs; nil (or a nil pointer)
// means the database is the session source and agents relay pod logs.
func NewManagerWithConfig(database *db.Database, k8sClient KubernetesClient, cfg Config) *Manager {
	var store SessionStore
	if database != nil {
		store = database
	}
	var source SessionSource
	if k8sClient != nil {
		source = k8sClient // a nil pointer inside is none too: newManager's isNil
	}
	return newManager(store, source, cfg)
}

// NewManagerWithSources creates a manager over any SessionStore (this module's *db.Database,
// or the caller's own implementation, for example over its own sessions table) and an
// optional SessionSource (nil: the store says which sessions exist). A source that also
// implements PodLogSource streams pod logs (a *k8s.Client does). A nil store means no
// snapshots and no session subscriptions can be authorized. A nil pointer of any type counts
// as none. Zero Config fields take defaults.
func NewManagerWithSources(store SessionStore, source SessionSource, cfg Config) *Manager {
	return newManager(store, source, cfg)
}

func newManager(store SessionStore, source SessionSource, cfg Config) *Manager {
	if isNil(store) {
		store = nil
	}
	if isNil(source) {
		source = nil
	}
	podLogs, _ := source.(PodLogSource)
	cfg = cfg.withDefaults()
	m := &Manager{
		cfg:     cfg,
		store:   store,
		source:  source,
		podLogs: podLogs,
		metrics: newHubMetrics(cfg.Registerer),
		bus:     cfg.Bus,
		logs:    cfg.Logs,
		life:    managerLife{started: make(chan struct{}), runDone: make(chan struct{})},
		reviews: newAccessReviews(),
	}
	if m.logs == nil {
		m.logs = NewPodLogs(PodLogsConfig{Logger: cfg.Logger, Registerer: cfg.Registerer})
	}
	if m.bus == nil {
		m.bus, m.ownBus = cluster.NewMemoryBusWithHistory(cfg.History), true
	}
	m.presence = newPresenceLimiter(cfg.PresenceBurst, cfg.PresenceInterval)
	m.hub = newHub(cfg, "browser", m.metrics)
	m.metricsHub = newHub(cfg, "metrics", m.metrics)
	m.hub.review = m.reviewAccess
	m.unsub = m.bus.Subscribe(m.hub.deliver)
	m.notifier = NewNotifier(m)
	m.ctx, m.life.cancel = context.WithCancel(context.Background())
	return m
}

// Start runs the manager's hub, the periodic session-list check and the checks of session
// access after the events that may end it. It is idempotent.
func (m *Manager) Start() {
	m.life.startOnce.Do(func() {
		if store, ok := m.store.(PresenceStore); ok {
			// Rows a previous run of this replica left are not connections any more.
			ctx, cancel := context.WithTimeout(m.ctx, defaultStoreCallTimeout)
			if err := store.ForgetConnections(ctx, m.cfg.Replica); err != nil {
				m.cfg.Logger.Warn("forgetting this replica's old session connections failed", "err", err)
			}
			cancel()
		}
		close(m.life.started)
		// Every goroutine exists when Start returns. The loops end with m.ctx, cancelled by
		// Shutdown; the hubs when they are stopped.
		var loops sync.WaitGroup
		loops.Go(m.refreshLoop)
		loops.Go(m.reviewLoop)
		loops.Go(m.metricsLoop)
		loops.Go(m.metricsHub.Run)
		go func() {
			defer close(m.life.runDone)
			m.hub.Run()
			m.life.cancel()
			loops.Wait()
		}()
	})
}

// GetNotifier returns the notifier for event-driven notifications.
func (m *Manager) GetNotifier() *Notifier { return m.notifier }

// Hub returns the sessions hub.
func (m *Manager) Hub() *Hub { return m.hub }

// CloseAll closes all WebSocket connections (1001) and subscriptions, and
// waits up to DrainTimeout for them to finish.
func (m *Manager) CloseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.DrainTimeout)
	defer cancel()
	_ = m.Shutdown(ctx)
}

// Shutdown is CloseAll with the caller's deadline. Queued messages are
// written before each close frame, within the deadline.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.life.closeOnce.Do(func() {
		m.logs.closeSockets()
		m.life.cancel()
		m.hub.Stop()
		m.metricsHub.Stop()
		m.notifier.CloseAll()
	})
	err := errors.Join(m.hub.wait(ctx), m.metricsHub.wait(ctx), m.logs.waitSockets(ctx))
	select {
	case <-m.life.started:
		select {
		case <-m.life.runDone:
		case <-ctx.Done():
			err = ctx.Err()
		}
	default:
	}
	m.unsub()
	if m.ownBus {
		_ = m.bus.Close()
	}
	return err
}

// HandleSessionsWebSocket handles a sessions connection without an
// organization.
//
// Deprecated: the client is placed in the configured default organization
// as a plain user; the server never uses it. Use
// HandleSessionsWebSocketWithOrg.
func (m *Manager) HandleSessionsWebSocket(conn *websocket.Conn, userID, sessionID string) {
	m.HandleSessionsWebSocketWithOrg(conn, userID, sessionID, &OrgContext{OrgID: m.cfg.DefaultOrg, UserID: userID})
}

// HandleSessionsWebSocketWithOrg serves a browser's sessions socket: it
// registers the client (subscribed to its user, to sessionID when given,
// and to the whole organization for operators and admins), sends the
// `connected` frame and a `sessions_update` snapshot, and returns; the
// client's own goroutines run the connection. A missing OrgContext, or a
// sessionID the caller may not see, closes the connection with 1008.
func (m *Manager) HandleSessionsWebSocketWithOrg(conn *websocket.Conn, userID, sessionID string, orgCtx *OrgContext) {
	ctx, cancel := context.WithTimeout(m.ctx, defaultStoreCallTimeout)
	defer cancel()
	if err := m.ServeSessions(ctx, conn, orgCtx, SessionsRequest{UserID: userID, SessionID: sessionID}); err != nil {
		m.cfg.Logger.Warn("sessions socket refused", "err", err)
	}
}

// SessionsRequest is what a browser asked for on the sessions socket.
type SessionsRequest struct {
	// UserID defaults to the OrgContext's user. Only operators and admins
	// may name another user.
	UserID string
	// SessionID, when set, subscribes to one session the caller may see; the socket then
	// counts as a browser connection to that session (recorded, and announced with
	// session.connected and session.disconnected).
	SessionID string
	// ClientIP and UserAgent describe the browser in the connection record.
	ClientIP, UserAgent string
	// Since is the last position the browser received ("<epoch>:<offset>", PROTOCOL.md
	// 2.4); when the stream still holds what followed it, the browser is sent those events
	// (those it is entitled to) before anything else, and `connected.recovered` is true.
	Since string
	// OnClose, when set, is called once when the connection is over, refused at the start
	// or closed later: the caller's accounting of open connections ends there.
	OnClose func()
}

// onceOrNothing returns f made safe to call many times, or a no-op for nil.
func onceOrNothing(f func()) func() {
	if f == nil {
		return func() {}
	}
	return sync.OnceFunc(f)
}

// ParseSince reads a `since` value, "<epoch>:<offset>".
func ParseSince(v string) (cluster.Position, error) {
	i := strings.LastIndexByte(v, ':')
	if i <= 0 || i == len(v)-1 {
		return cluster.Position{}, errors.New("since must be <epoch>:<offset>")
	}
	off, err := strconv.ParseUint(v[i+1:], 10, 64)
	if err != nil {
		return cluster.Position{}, errors.New("since offset must be a non-negative integer")
	}
	return cluster.Position{Epoch: v[:i], Offset: off}, nil
}

// ServeSessions is HandleSessionsWebSocketWithOrg with a context for its
// database reads and an error saying why a connection was refused (the
// connection is then closed with 1008 or 1011).
func (m *Manager) ServeSessions(ctx context.Context, conn *websocket.Conn, orgCtx *OrgContext, req SessionsRequest) error {
	closed := onceOrNothing(req.OnClose)
	registered := false
	defer func() {
		if !registered {
			closed()
		}
	}()
	if orgCtx == nil || orgCtx.OrgID == "" {
		closeConn(conn, m.cfg.WriteWait, websocket.ClosePolicyViolation, "organization required")
		return errors.New("sessions socket: organization required")
	}
	org := *orgCtx
	if org.Role == "" {
		org.Role = "user"
	}
	if req.UserID == "" {
		req.UserID = org.UserID
	}
	if req.UserID != org.UserID && !org.seesWholeOrg() {
		closeConn(conn, m.cfg.WriteWait, websocket.ClosePolicyViolation, "not allowed")
		return fmt.Errorf("sessions socket: user %q may not subscribe to user %q", org.UserID, req.UserID)
	}
	var session models.Session
	if req.SessionID != "" {
		var err error
		if session, err = m.authorizeSession(ctx, &org, req.SessionID); err != nil {
			code, reason := websocket.ClosePolicyViolation, "session not visible"
			if !errors.Is(err, ErrSessionNotVisible) {
				code, reason = websocket.CloseInternalServerErr, "internal error"
			}
			closeConn(conn, m.cfg.WriteWait, code, reason)
			return err
		}
	}
	org.K8sNamespace = m.namespaceFor(ctx, &org)
	// Watch before reading the position: every event after it then reaches this replica.
	// While the cluster is away both answer for this replica alone (ErrLocalOnly), and the
	// client is served with what this replica publishes.
	unwatch, err := m.bus.Watch(ctx, org.OrgID)
	if err != nil && !errors.Is(err, cluster.ErrLocalOnly) {
		closeConn(conn, m.cfg.WriteWait, websocket.CloseTryAgainLater, "event stream unavailable")
		return fmt.Errorf("sessions socket: watch org stream: %w", err)
	}
	fallback, err := m.bus.Position(ctx, org.OrgID)
	if err != nil && !errors.Is(err, cluster.ErrLocalOnly) {
		unwatch()
		closeConn(conn, m.cfg.WriteWait, websocket.CloseTryAgainLater, "event stream unavailable")
		return fmt.Errorf("sessions socket: stream position: %w", err)
	}
	spec := clientSpec{id: newClientID(), org: org, held: true, onGone: func() { unwatch(); closed() }}
	var presence *connectionPresence
	if req.SessionID != "" {
		// Recorded before the client is registered, so its removal can never come first.
		presence = m.recordConnection(ctx, spec.id, session, &org, req)
		if presence != nil {
			spec.onGone = func() { unwatch(); presence.gone(); closed() }
		}
	}
	if req.UserID != "" {
		spec.users = []string{req.UserID}
	}
	if req.SessionID != "" {
		spec.sessions = []string{req.SessionID}
	}
	// The greeting waits for the replay: recovered is known only once the history between the
	// client's position and its starting point has been read.
	var start cluster.Position
	c := m.hub.serve(conn, spec, func(pos cluster.Position) []byte {
		start = pos
		return nil
	}, fallback)
	if c == nil {
		unwatch()
		if presence != nil {
			presence.gone()
		}
		return errors.New("sessions socket: shutting down")
	}
	registered = true // from here the client's unregistering calls closed
	replay, recovered := m.replay(ctx, c, spec, req.Since, start)
	snapshot := m.snapshot(ctx, c, req)
	if snapshot == nil {
		return nil // closed with 1011
	}
	frames := append(append([][]byte{connectedFrame(spec.id, start, recovered)}, replay...), snapshot)
	c.release(frames...)
	if presence != nil {
		presence.announce()
	}
	return nil
}

// replay returns the frames of the events after since up to start that c is entitled to, and
// whether the stream could give them all (the client then misses nothing).
func (m *Manager) replay(ctx context.Context, c *Client, spec clientSpec, since string, start cluster.Position) ([][]byte, bool) {
	if since == "" {
		return nil, false
	}
	from, err := ParseSince(since)
	if err != nil {
		return nil, false
	}
	msgs, err := m.bus.History(ctx, c.org.OrgID, from, start)
	if err != nil {
		if !errors.Is(err, cluster.ErrHistoryGone) {
			m.cfg.Logger.Warn("reading the event history failed", "org_id", c.org.OrgID, "since", since, "err", err)
		}
		m.metrics.recoveries.WithLabelValues("gone").Inc()
		return nil, false
	}
	frames := make([][]byte, 0, len(msgs))
	for _, msg := range msgs {
		if frame, ok := spec.frameFor(msg); ok {
			frames = append(frames, frame)
		}
	}
	m.metrics.recoveries.WithLabelValues("recovered").Inc()
	return frames, true
}

// snapshot returns the client's `sessions_update`, read after the client registered, so no
// change falls between the snapshot and the events held back meanwhile. When it cannot be
// read the client is closed with 1011 and snapshot returns nil.
func (m *Manager) snapshot(ctx context.Context, c *Client, req SessionsRequest) []byte {
	var sessions []models.Session
	if m.store != nil || m.source != nil {
		user := req.UserID
		if c.org.seesWholeOrg() {
			user = ""
		}
		var extra []string
		if req.SessionID != "" {
			extra = []string{req.SessionID}
		}
		var err error
		sessions, _, err = m.listSessions(ctx, c.org.OrgID, c.org.K8sNamespace, user, extra...)
		if err == nil && user != "" {
			sessions, err = m.visibleRows(ctx, c, sessions, req)
		}
		if errors.Is(err, ErrSessionNotVisible) {
			c.closeWith(CloseAccessRevoked, "access revoked", "access_revoked")
			return nil
		}
		if err != nil {
			m.cfg.Logger.Error("sessions snapshot failed", "org_id", c.org.OrgID, "client_id", c.id, "err", err)
			c.closeWith(websocket.CloseInternalServerErr, "snapshot unavailable", "internal_error")
			return nil
		}
	}
	now := m.cfg.Now()
	frame, err := sessionsUpdateFrame(c.org.OrgID, sessions, now)
	c.listFP.Store(listFingerprint(sessions, now))
	if err != nil {
		m.cfg.Logger.Error("encode sessions snapshot", "org_id", c.org.OrgID, "err", err)
		c.closeWith(websocket.CloseInternalServerErr, "snapshot unavailable", "internal_error")
		return nil
	}
	return frame
}

// visibleRows authorizes the rows of a user's snapshot that are not the user's own (the
// session it subscribed to, read after it was authorized): ErrSessionNotVisible when that
// session is no longer visible to it.
func (m *Manager) visibleRows(ctx context.Context, c *Client, sessions []models.Session, req SessionsRequest) ([]models.Session, error) {
	out := sessions[:0]
	for _, s := range sessions {
		if s.UserID != req.UserID {
			if err := m.mayView(ctx, &c.org, s); err != nil {
				if errors.Is(err, ErrSessionNotVisible) && s.ID != req.SessionID {
					continue
				}
				return nil, err
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// AuthorizeSession returns nil when orgCtx may subscribe to sessionID:
// the session is in orgCtx's organization and the caller is an operator or
// admin, its owner, or a user it is shared with. Otherwise it returns
// ErrSessionNotVisible, or a wrapped storage error.
func (m *Manager) AuthorizeSession(ctx context.Context, orgCtx *OrgContext, sessionID string) error {
	_, err := m.authorizeSession(ctx, orgCtx, sessionID)
	return err
}

// authorizeSession is AuthorizeSession returning the session it read.
func (m *Manager) authorizeSession(ctx context.Context, orgCtx *OrgContext, sessionID string) (models.Session, error) {
	if m.store == nil || !models.ValidID(sessionID) {
		return models.Session{}, ErrSessionNotVisible // no session has an id that is not one
	}
	s, err := m.store.GetSession(ctx, sessionID)
	if errors.Is(err, ErrNotFound) {
		return models.Session{}, ErrSessionNotVisible
	}
	if err != nil {
		return models.Session{}, fmt.Errorf("authorize session: %w", err)
	}
	if err := m.mayView(ctx, orgCtx, s); err != nil {
		if errors.Is(err, ErrSessionNotVisible) {
			return models.Session{}, err
		}
		return models.Session{}, fmt.Errorf("authorize session: %w", err)
	}
	return s, nil
}

// namespaceFor is the token's namespace, else the organization's, else the
// default namespace.
func (m *Manager) namespaceFor(ctx context.Context, org *OrgContext) string {
	if org.K8sNamespace != "" {
		return org.K8sNamespace
	}
	if m.store != nil {
		if o, err := m.store.GetOrganization(ctx, org.OrgID); err == nil && o.K8sNamespace != "" {
			return o.K8sNamespace
		}
	}
	return m.cfg.DefaultNamespace
}

func newClientID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NamespaceForOrg returns the organization's namespace, else the default namespace: where a
// session of the organization runs when nothing names another.
func (m *Manager) NamespaceForOrg(ctx context.Context, orgID string) string {
	return m.namespaceFor(ctx, &OrgContext{OrgID: orgID})
}
