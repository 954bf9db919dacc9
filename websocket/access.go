package websocket

import (
	"context"
	"errors"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// A browser's session subscriptions are authorized when they are made, and again whenever they
// may have ended:
//
//   - on every event that may end them (changesAccess: session.unshared, session.deleted,
//     session.created), whichever replica published it: the hub holds the session's
//     subscribers that do not see the whole org (their deliveries wait, bounded like their
//     queue) and hands them to reviewAccess; reviewLoop checks each with authorizeSession
//     and releases it, or closes it with 4004 "access revoked";
//   - on every session-list check (refreshSessions), in case such an event never came: the
//     rows the check read are authorized with the same rule (mayView), and a subscription to
//     a session that is gone is checked with authorizeSession.
//
// A connection with a session it may no longer see is closed rather than quietly
// unsubscribed: the socket was opened for that session (or subscribed to it on purpose), and
// the browser must learn that it lost it.

// accessReviews are the session subscriptions waiting to be checked again, by organization and
// session; each client in them is held once for its entry. It is bounded by the subscriptions
// of this replica's clients: a client is at most once in an entry.
type accessReviews struct {
	mu      sync.Mutex
	pending map[reviewKey]map[*Client]struct{}
	wake    chan struct{} // one signal stands for any number of reviews
	stopped bool
}

type reviewKey struct{ org, session string }

func newAccessReviews() *accessReviews {
	return &accessReviews{pending: make(map[reviewKey]map[*Client]struct{}), wake: make(chan struct{}, 1)}
}

// reviewAccess is the hub's review hook: clients, held by the delivery of an event of
// sessionID, are checked by reviewLoop. It never blocks.
func (m *Manager) reviewAccess(orgID, sessionID string, clients []*Client) {
	r := m.reviews
	key := reviewKey{orgID, sessionID}
	var extra []*Client
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		releaseAll(clients) // shutting down: every client is being closed
		return
	}
	set := r.pending[key]
	if set == nil {
		set = make(map[*Client]struct{}, len(clients))
		r.pending[key] = set
	}
	for _, c := range clients {
		if _, queued := set[c]; queued {
			extra = append(extra, c) // the check already queued reads the store after this event
			continue
		}
		set[c] = struct{}{}
	}
	r.mu.Unlock()
	releaseAll(extra)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func releaseAll(clients []*Client) {
	for _, c := range clients {
		c.release()
	}
}

// reviewLoop checks the queued reviews until the Manager shuts down, then releases what is
// left (those clients are being closed).
func (m *Manager) reviewLoop() {
	for {
		select {
		case <-m.ctx.Done():
			m.reviews.mu.Lock()
			m.reviews.stopped = true
			pending := m.reviews.pending
			m.reviews.pending = nil
			m.reviews.mu.Unlock()
			for _, set := range pending {
				for c := range set {
					c.release()
				}
			}
			return
		case <-m.reviews.wake:
		}
		m.reviews.mu.Lock()
		pending := m.reviews.pending
		m.reviews.pending = make(map[reviewKey]map[*Client]struct{})
		m.reviews.mu.Unlock()
		for key, set := range pending {
			m.review(key.session, set)
		}
	}
}

// review checks whether each client may still see sessionID, once per user, and releases it,
// closed when it may not. A check the store cannot answer closes it too (1011): its access may
// have ended, and a reconnection is authorized afresh.
func (m *Manager) review(sessionID string, clients map[*Client]struct{}) {
	verdicts := make(map[string]error, 1)
	for c := range clients {
		err, done := verdicts[c.org.UserID]
		if !done {
			ctx, cancel := context.WithTimeout(m.ctx, defaultStoreCallTimeout)
			err = m.AuthorizeSession(ctx, &c.org, sessionID)
			cancel()
			verdicts[c.org.UserID] = err
			if err != nil && !errors.Is(err, ErrSessionNotVisible) && m.ctx.Err() == nil {
				m.cfg.Logger.Warn("checking session access again failed", "org_id", c.org.OrgID,
					"user_id", c.org.UserID, "session_id", sessionID, "err", err)
			}
		}
		m.settleAccess(c, err)
		c.release()
	}
}

// settleAccess closes c when err says it may no longer see a session it is subscribed to.
func (m *Manager) settleAccess(c *Client, err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrSessionNotVisible):
		c.closeWith(CloseAccessRevoked, "access revoked", "access_revoked")
	case m.ctx.Err() == nil:
		c.closeWith(websocket.CloseInternalServerErr, "access check unavailable", "internal_error")
	}
}

// mayView is the rule authorizeSession applies, for a session row already read: orgCtx may
// see s when s is of orgCtx's organization and orgCtx is an operator or admin, its owner, or
// a user it is shared with.
func (m *Manager) mayView(ctx context.Context, orgCtx *OrgContext, s models.Session) error {
	if s.OrgID != orgCtx.OrgID {
		return ErrSessionNotVisible
	}
	if orgCtx.seesWholeOrg() || s.UserID == orgCtx.UserID {
		return nil
	}
	if m.store == nil {
		return ErrSessionNotVisible
	}
	shared, err := m.store.IsSessionSharedWith(ctx, s.ID, orgCtx.UserID)
	if err != nil {
		return err
	}
	if !shared {
		return ErrSessionNotVisible
	}
	return nil
}

// viewKey is one user's view of one session.
type viewKey struct{ user, session string }

// sessionAccess authorizes the session subscriptions of an organization's listeners that do
// not see the whole org against the sessions a list check read, once per user and session, and
// closes the clients subscribed to one they may no longer see. The answer is the subscriptions
// found not to stand; one the store could not decide is left to the next check.
func (m *Manager) sessionAccess(ctx context.Context, sessions []models.Session, clients []listener) map[viewKey]bool {
	var byID map[string]models.Session
	denied := make(map[viewKey]bool)
	checked := make(map[viewKey]bool)
	for _, l := range clients {
		if l.client.org.seesWholeOrg() || len(l.sessions) == 0 || l.client.gate.held.Load() {
			continue // a held client is being let in or checked already
		}
		if byID == nil {
			byID = make(map[string]models.Session, len(sessions))
			for _, s := range sessions {
				byID[s.ID] = s
			}
		}
		for _, id := range l.sessions {
			key := viewKey{l.client.org.UserID, id}
			if !checked[key] {
				checked[key] = true
				qctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
				var err error
				if s, listed := byID[id]; listed {
					err = m.mayView(qctx, &l.client.org, s)
				} else {
					// Not in the list: deleted, or (with Kubernetes) not running yet. The
					// store says which.
					err = m.AuthorizeSession(qctx, &l.client.org, id)
				}
				cancel()
				switch {
				case errors.Is(err, ErrSessionNotVisible):
					denied[key] = true
				case err != nil && ctx.Err() == nil:
					m.cfg.Logger.Warn("checking session access failed", "org_id", l.client.org.OrgID,
						"user_id", l.client.org.UserID, "session_id", id, "err", err)
				}
			}
			if denied[key] {
				m.settleAccess(l.client, ErrSessionNotVisible)
			}
		}
	}
	return denied
}
