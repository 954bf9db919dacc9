package websocket

import (
	"context"
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

// announce publishes session.connected to the session's organization.
func (p *connectionPresence) announce() {
	p.publish(EventSessionConnected)
}

// gone removes the record and publishes session.disconnected. It runs once, when the client is
// unregistered.
func (p *connectionPresence) gone() {
	ctx, cancel := context.WithTimeout(context.Background(), defaultStoreCallTimeout)
	defer cancel()
	if err := p.store.RemoveConnection(ctx, p.id); err != nil {
		p.m.cfg.Logger.Warn("removing a session connection failed; it is swept later", "session_id", p.session.ID, "err", err)
	}
	p.publish(EventSessionDisconnected)
}

func (p *connectionPresence) publish(t EventType) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultStoreCallTimeout)
	defer cancel()
	ev := SessionEvent{Type: t, SessionID: p.session.ID, UserID: p.session.UserID, Timestamp: p.m.cfg.Now(),
		Data: map[string]interface{}{"connectionId": p.id, "user": p.user}}
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
