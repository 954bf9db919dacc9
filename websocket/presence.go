package websocket

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// PresenceStore is where the Manager records browser connections to sessions and the
// announcement of sessions' idleness. *db.Database implements it; without it connections are
// not recorded and no idle events are produced.
type PresenceStore interface {
	AddConnection(ctx context.Context, c models.Connection) error
	RemoveConnection(ctx context.Context, id string) error
	TouchConnections(ctx context.Context, replica string, at time.Time) error
	SweepConnections(ctx context.Context, before time.Time) (int64, error)
	ForgetConnections(ctx context.Context, replica string) error
	AnnounceIdle(ctx context.Context, id string, idle bool) (bool, error)
}

// connectionStaleAfter is how long a connection row may go untouched before another replica
// sweeps it: its replica died without removing it. Live replicas touch theirs every
// SessionsInterval.
const minConnectionStaleAfter = time.Minute

// connectionPresence is one recorded browser connection to a session.
type connectionPresence struct {
	m       *Manager
	store   PresenceStore
	id      string
	session models.Session
	user    string // the connecting user
	// extra is added to the data of the connection's events (a viewer's kind and view-only).
	extra map[string]interface{}

	// mu is held across the connection's publishes, so its session.disconnected never goes
	// before its session.connected.
	mu        sync.Mutex
	announced bool // session.connected was published
	closed    bool // gone ran
}

func (p *connectionPresence) key() presenceUser {
	return presenceUser{org: p.session.OrgID, user: p.user}
}

// recordConnection stores the connection of client id to session, or returns nil when there
// is no presence store or the write failed (the socket is served anyway; the count is then one
// short until it closes).
func (m *Manager) recordConnection(ctx context.Context, id string, session models.Session, org *OrgContext, req SessionsRequest) *connectionPresence {
	store, ok := m.store.(PresenceStore)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	err := store.AddConnection(ctx, models.Connection{
		ID: id, SessionID: session.ID, UserID: org.UserID, OrgID: org.OrgID,
		// The User-Agent is the browser's to choose: invalid UTF-8 in it is replaced, so the
		// row can be stored on PostgreSQL too.
		ClientIP: req.ClientIP, UserAgent: models.SanitizeText(req.UserAgent), Replica: m.cfg.Replica, ConnectedAt: m.cfg.Now(),
	})
	if err != nil {
		m.cfg.Logger.Warn("recording a session connection failed", "session_id", session.ID, "err", err)
		return nil
	}
	return &connectionPresence{m: m, store: store, id: id, session: session, user: org.UserID}
}

// announce publishes session.connected, when the connecting user's presence budget allows;
// otherwise it is published later, when the budget allows and the connection is still open,
// or never, when it closed first.
func (p *connectionPresence) announce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.announced {
		return
	}
	if l := p.m.presence; l != nil && !l.take(p.key(), p, p.m.cfg.Now()) {
		return
	}
	p.announced = true
	p.publish(EventSessionConnected)
}

// announceLate publishes the session.connected the budget held back, if still due.
func (p *connectionPresence) announceLate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.announced {
		return
	}
	p.announced = true
	p.publish(EventSessionConnected)
}

// gone removes the record and publishes session.disconnected, for a connection whose
// session.connected was published: a connection never announced leaves unannounced. It runs
// once, when the client is unregistered.
func (p *connectionPresence) gone() {
	ctx, cancel := context.WithTimeout(context.Background(), defaultStoreCallTimeout)
	defer cancel()
	if err := p.store.RemoveConnection(ctx, p.id); err != nil {
		p.m.cfg.Logger.Warn("removing a session connection failed; it is swept later", "session_id", p.session.ID, "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if !p.announced {
		if l := p.m.presence; l != nil {
			l.forget(p.key(), p)
		}
		return
	}
	p.publish(EventSessionDisconnected)
}

func (p *connectionPresence) publish(t EventType) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultStoreCallTimeout)
	defer cancel()
	ev := SessionEvent{Type: t, SessionID: p.session.ID, UserID: p.session.UserID, Timestamp: p.m.cfg.Now(),
		Data: map[string]interface{}{"connectionId": p.id, "user": p.user}}
	for k, v := range p.extra {
		ev.Data[k] = v
	}
	if _, err := p.m.notifier.Publish(ctx, p.session.OrgID, ev); err != nil {
		p.m.cfg.Logger.Warn("publishing a connection event failed", "session_id", p.session.ID, "type", string(t), "err", err)
	}
}

// maintainPresence keeps this replica's connection rows alive and sweeps those of replicas
// that died; it runs with each session-list check.
func (m *Manager) maintainPresence(ctx context.Context) {
	store, ok := m.store.(PresenceStore)
	if !ok {
		return
	}
	if m.presence != nil {
		for _, p := range m.presence.due(m.cfg.Now()) {
			p.announceLate()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	now := m.cfg.Now()
	if err := store.TouchConnections(ctx, m.cfg.Replica, now); err != nil {
		m.cfg.Logger.Warn("touching session connections failed", "err", err)
		return
	}
	if _, err := store.SweepConnections(ctx, now.Add(-m.staleAfter())); err != nil {
		m.cfg.Logger.Warn("sweeping session connections failed", "err", err)
	}
}

func (m *Manager) staleAfter() time.Duration {
	return max(10*m.cfg.SessionsInterval, minConnectionStaleAfter)
}

// announceIdleness publishes session.idle or session.active for the sessions of orgID whose
// idleness changed since it was last announced. The change is recorded with a guarded update
// first, so of several replicas that notice it, one announces it.
func (m *Manager) announceIdleness(ctx context.Context, orgID string, sessions []models.Session, now time.Time) {
	store, ok := m.store.(PresenceStore)
	if !ok {
		return
	}
	for _, s := range sessions {
		if s.IdleTimeoutSeconds <= 0 {
			continue
		}
		v := NewSessionView(s, now)
		idle := *v.IsIdle
		if idle == s.IdleAnnounced {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
		changed, err := store.AnnounceIdle(cctx, s.ID, idle)
		cancel()
		if err != nil {
			m.cfg.Logger.Warn("recording session idleness failed", "session_id", s.ID, "err", err)
			continue
		}
		if !changed {
			continue
		}
		ev := SessionEvent{Type: EventSessionActive, SessionID: s.ID, UserID: s.UserID, Timestamp: now}
		if idle {
			ev.Type, ev.Data = EventSessionIdle, map[string]interface{}{"idleDuration": *v.IdleDuration}
		}
		pctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
		if _, err := m.notifier.Publish(pctx, orgID, ev); err != nil {
			m.cfg.Logger.Warn("publishing session idleness failed", "session_id", s.ID, "err", err)
		}
		cancel()
	}
}

// presenceUser is whose connections a presence budget counts.
type presenceUser struct{ org, user string }

// presenceLimiter bounds the presence events each user's connections publish on this replica:
// a token bucket per user of burst tokens, one more every interval; a session.connected takes
// one, and only an announced connection publishes session.disconnected, so a user's
// connections publish at most twice the tokens they take. A connection that finds no token is
// announced later, by the session-list check, if it is still open then; one that closes first
// publishes neither event. The database's connection rows are written for every connection
// regardless.
type presenceLimiter struct {
	burst    float64
	interval time.Duration

	mu    sync.Mutex
	users map[presenceUser]*presenceBucket
}

type presenceBucket struct {
	tokens float64
	at     time.Time
	// waiting are the open connections whose session.connected waits for a token, oldest first.
	waiting []*connectionPresence
}

func newPresenceLimiter(burst int, interval time.Duration) *presenceLimiter {
	if burst < 0 {
		return nil
	}
	return &presenceLimiter{burst: float64(burst), interval: interval, users: make(map[presenceUser]*presenceBucket)}
}

// refill adds the tokens earned since the bucket was last looked at. The caller holds l.mu.
func (l *presenceLimiter) refill(b *presenceBucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+float64(elapsed)/float64(l.interval))
		b.at = now
	}
}

// take takes a token of k's budget for p's session.connected, or queues p for a later one and
// reports false.
func (l *presenceLimiter) take(k presenceUser, p *connectionPresence, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.users[k]
	if !ok {
		b = &presenceBucket{tokens: l.burst, at: now}
		l.users[k] = b
	}
	l.refill(b, now)
	if len(b.waiting) == 0 && b.tokens >= 1 {
		b.tokens--
		return true
	}
	b.waiting = append(b.waiting, p)
	return false
}

// forget drops p from k's waiting connections.
func (l *presenceLimiter) forget(k presenceUser, p *connectionPresence) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.users[k]; ok {
		b.waiting = slices.DeleteFunc(b.waiting, func(w *connectionPresence) bool { return w == p })
	}
}

// due returns the waiting connections whose budget now has a token, taking it, and forgets the
// users whose budget is full again with nothing waiting.
func (l *presenceLimiter) due(now time.Time) []*connectionPresence {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*connectionPresence
	for k, b := range l.users {
		l.refill(b, now)
		for len(b.waiting) > 0 && b.tokens >= 1 {
			b.tokens--
			out = append(out, b.waiting[0])
			b.waiting[0] = nil
			b.waiting = b.waiting[1:]
		}
		if len(b.waiting) == 0 && b.tokens >= l.burst {
			delete(l.users, k)
		}
	}
	return out
}
