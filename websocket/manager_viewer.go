package websocket

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// ErrSessionForbidden means the session is of the caller's organization but the caller may not
// view it: not its owner, not shared with it, and not an operator or admin. The viewer socket
// answers it with 403; a session of another organization is ErrSessionNotVisible (404), so no
// tenant learns whether another's session exists.
var ErrSessionForbidden = errors.New("websocket: session of the caller's organization not viewable by the caller")

// SharePermissionControl is the share permission that lets a user it is shared with control the
// session's desktop; any other share is view-only (PROTOCOL.md 6.1).
const SharePermissionControl = "control"

// SharePermissionStore is an optional part of a SessionStore: the permissions of a session's
// share with a user, or db.ErrNotFound when it is not shared with them. *db.Database
// implements it. Without it every share is view-only.
type SharePermissionStore interface {
	SessionSharePermissions(ctx context.Context, sessionID, userID string) ([]string, error)
}

// ActivityStore is an optional part of a SessionStore: it records activity on a session, so a
// session being watched is never reported idle. *db.Database implements it.
type ActivityStore interface {
	TouchSessionActivity(ctx context.Context, id string, at time.Time) error
}

var (
	_ SharePermissionStore = (*db.Database)(nil)
	_ ActivityStore        = (*db.Database)(nil)
)

// ViewerGrant is what AuthorizeViewer decided: the session as read, and whether the viewer
// may only watch.
type ViewerGrant struct {
	Session  models.Session
	ViewOnly bool
}

// viewerTouchEvery is how often an open viewer refreshes its session's activity (PROTOCOL.md
// 6.1: every 30 s); tests of this package shorten it.
var viewerTouchEvery atomic.Int64

func init() { viewerTouchEvery.Store(int64(30 * time.Second)) }

// AuthorizeViewer decides whether org may view sessionID's desktop, and how: the session's
// owner, operators and admins control it; a user it is shared with controls it when the share's
// permissions include "control", else only watches. ErrSessionNotVisible for a session that
// does not exist or is another organization's, ErrSessionForbidden for one of the caller's
// organization that it may not view, or a wrapped storage error.
func (m *Manager) AuthorizeViewer(ctx context.Context, org *OrgContext, sessionID string) (ViewerGrant, error) {
	if org == nil || org.OrgID == "" || m.store == nil || !models.ValidID(sessionID) {
		return ViewerGrant{}, ErrSessionNotVisible
	}
	s, err := m.store.GetSession(ctx, sessionID)
	if errors.Is(err, db.ErrNotFound) {
		return ViewerGrant{}, ErrSessionNotVisible
	}
	if err != nil {
		return ViewerGrant{}, fmt.Errorf("authorize viewer: %w", err)
	}
	if s.OrgID != org.OrgID {
		return ViewerGrant{}, ErrSessionNotVisible
	}
	if org.seesWholeOrg() || s.UserID == org.UserID {
		return ViewerGrant{Session: s}, nil
	}
	if ps, ok := m.store.(SharePermissionStore); ok {
		perms, err := ps.SessionSharePermissions(ctx, s.ID, org.UserID)
		if errors.Is(err, db.ErrNotFound) {
			return ViewerGrant{}, ErrSessionForbidden
		}
		if err != nil {
			return ViewerGrant{}, fmt.Errorf("authorize viewer: %w", err)
		}
		return ViewerGrant{Session: s, ViewOnly: !slices.Contains(perms, SharePermissionControl)}, nil
	}
	shared, err := m.store.IsSessionSharedWith(ctx, s.ID, org.UserID)
	if err != nil {
		return ViewerGrant{}, fmt.Errorf("authorize viewer: %w", err)
	}
	if !shared {
		return ViewerGrant{}, ErrSessionForbidden
	}
	return ViewerGrant{Session: s, ViewOnly: true}, nil
}

// TrackViewer counts an open viewer as a connection to grant's session: recorded and
// announced (session.connected and, at the end, session.disconnected, with viewer "vnc" and
// viewOnly), the session's activity refreshed at once, every 30 s and at the end, and org's
// access checked again every SessionsInterval. The returned context ends with ctx, with the
// Manager's shutdown, or when the access is withdrawn (or control is, for a viewer that had
// it), its cause then CloseCause{4004, "access revoked"}. The returned func ends the tracking;
// it may be called more than once.
func (m *Manager) TrackViewer(ctx context.Context, grant ViewerGrant, org *OrgContext, req SessionsRequest) (context.Context, func()) {
	vctx, cancel := context.WithCancelCause(ctx)
	o := *org
	id := newClientID()
	m.touchViewed(grant.Session.ID)
	presence := m.recordConnection(ctx, id, grant.Session, &o, req)
	if presence != nil {
		presence.extra = map[string]interface{}{"viewer": "vnc", "viewOnly": grant.ViewOnly}
		presence.announce()
	}

	var wg sync.WaitGroup
	stopLoop := make(chan struct{})
	wg.Go(func() { m.watchViewer(vctx, cancel, grant, &o, stopLoop) })

	var once sync.Once
	return vctx, func() {
		once.Do(func() {
			close(stopLoop)
			wg.Wait()
			cancel(context.Canceled)
			m.touchViewed(grant.Session.ID)
			if presence != nil {
				presence.gone()
			}
		})
	}
}

// watchViewer refreshes the viewed session's activity and checks the viewer's access until
// stop closes, ctx ends or the Manager shuts down (which ends the viewer).
func (m *Manager) watchViewer(ctx context.Context, cancel context.CancelCauseFunc, grant ViewerGrant, org *OrgContext, stop <-chan struct{}) {
	touch := time.NewTicker(time.Duration(viewerTouchEvery.Load()))
	defer touch.Stop()
	check := time.NewTicker(m.cfg.SessionsInterval)
	defer check.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-m.ctx.Done():
			cancel(errors.New("websocket: manager shut down"))
			return
		case <-touch.C:
			m.touchViewed(grant.Session.ID)
		case <-check.C:
			cctx, ccancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
			now, err := m.AuthorizeViewer(cctx, org, grant.Session.ID)
			ccancel()
			switch {
			case errors.Is(err, ErrSessionNotVisible), errors.Is(err, ErrSessionForbidden),
				err == nil && now.ViewOnly && !grant.ViewOnly:
				cancel(CloseCause{Code: CloseAccessRevoked, Reason: "access revoked"})
				return
			case err != nil && ctx.Err() == nil:
				m.cfg.Logger.Warn("checking a viewer's access again failed", "org_id", org.OrgID,
					"user_id", org.UserID, "session_id", grant.Session.ID, "err", err)
			}
		}
	}
}

// touchViewed records activity on a session a viewer watches.
func (m *Manager) touchViewed(sessionID string) {
	store, ok := m.store.(ActivityStore)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultStoreCallTimeout)
	defer cancel()
	if err := store.TouchSessionActivity(ctx, sessionID, m.cfg.Now()); err != nil && !errors.Is(err, db.ErrNotFound) {
		m.cfg.Logger.Warn("refreshing a viewed session's activity failed", "session_id", sessionID, "err", err)
	}
}
