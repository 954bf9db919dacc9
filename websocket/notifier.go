package websocket

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// ErrNotifierClosed is returned by Publish after CloseAll.
var ErrNotifierClosed = errors.New("websocket: notifier closed")

// Notifier handles event subscriptions and targeted real-time notifications.
//
// Every event is published into one organization's ordered stream (through
// the cluster bus, so every replica sees it) and delivered to the clients of
// that organization only: those subscribed to the event's user, those
// subscribed to its session, and the organization's operators and admins.
//
// The reference's Notify* helpers carry no organization; they resolve it
// from the session's row in the database, falling back to the configured
// default organization when the session is unknown. Multi-tenant callers
// should call Publish with the organization they already know.
//
// While the cluster bus is away (Redis unreachable), Publish and
// BroadcastToOrg still reach this replica's clients and return no error; the
// bus counts and logs the outage, and the other replicas miss the event.
//
// Concurrency contract: safe for concurrent use; Notify* calls never block
// on a slow browser. Publish blocks only on the bus (with ctx).
type Notifier struct {
	hub     *Hub
	bus     cluster.Bus
	store   SessionStore
	cfg     Config
	metrics *hubMetrics
	closed  atomic.Bool
}

// NewNotifier creates a new event notifier over the manager's hub and bus.
func NewNotifier(manager *Manager) *Notifier {
	return &Notifier{
		hub:     manager.hub,
		bus:     manager.bus,
		store:   manager.store,
		cfg:     manager.cfg,
		metrics: manager.metrics,
	}
}

// SubscribeUser subscribes a client to the events of a user. The client
// only ever receives events of its own organization.
func (n *Notifier) SubscribeUser(clientID, userID string) {
	n.hub.subscribe(clientID, userID, false)
}

// SubscribeSession subscribes a client to the events of a session. The
// caller must have checked that the client may see the session (the server
// does so before the upgrade); events still never cross organizations.
func (n *Notifier) SubscribeSession(clientID, sessionID string) {
	n.hub.subscribe(clientID, sessionID, true)
}

// UnsubscribeClient removes all subscriptions of a client.
func (n *Notifier) UnsubscribeClient(clientID string) {
	n.hub.unsubscribeClient(clientID)
}

// CloseAll drops every subscription and makes later notifications no-ops
// (used during shutdown). It is idempotent.
func (n *Notifier) CloseAll() {
	n.closed.Store(true)
	n.hub.clearSubscriptions()
}

// Publish appends event to orgID's stream: every entitled client of that
// organization, on every replica, receives it once, in stream order. A zero
// Timestamp is set to now. It returns the stream position given to it.
func (n *Notifier) Publish(ctx context.Context, orgID string, event SessionEvent) (cluster.Position, error) {
	if n.closed.Load() {
		return cluster.Position{}, ErrNotifierClosed
	}
	if orgID == "" {
		return cluster.Position{}, errors.New("websocket: publish: organization required")
	}
	entry, err := encodeEventEntry(event)
	if err != nil {
		return cluster.Position{}, err
	}
	pos, err := n.bus.Publish(ctx, orgID, entry)
	if err != nil && !errors.Is(err, cluster.ErrLocalOnly) {
		return cluster.Position{}, fmt.Errorf("publish %s to org stream: %w", event.Type, err)
	}
	n.metrics.published.WithLabelValues("event").Inc()
	return pos, nil
}

// BroadcastToOrg appends a JSON object to orgID's stream for every client
// of that organization on every replica; each receives it once, with the
// stream's "offset" and "epoch" added.
func (n *Notifier) BroadcastToOrg(ctx context.Context, orgID string, message []byte) (cluster.Position, error) {
	if n.closed.Load() {
		return cluster.Position{}, ErrNotifierClosed
	}
	if orgID == "" {
		return cluster.Position{}, errors.New("websocket: broadcast: organization required")
	}
	entry, err := encodeBroadcastEntry(message)
	if err != nil {
		return cluster.Position{}, err
	}
	pos, err := n.bus.Publish(ctx, orgID, entry)
	if err != nil && !errors.Is(err, cluster.ErrLocalOnly) {
		return cluster.Position{}, fmt.Errorf("broadcast to org stream: %w", err)
	}
	n.metrics.published.WithLabelValues("broadcast").Inc()
	return pos, nil
}

// NotifySessionEvent sends a session event to subscribed clients of the
// session's organization (see the type's doc for how it is found).
func (n *Notifier) NotifySessionEvent(event SessionEvent) {
	if n.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultStoreCallTimeout)
	defer cancel()
	orgID := n.orgOfSession(ctx, event.SessionID)
	if _, err := n.Publish(ctx, orgID, event); err != nil {
		n.cfg.Logger.Error("session event not published", "org_id", orgID,
			"session_id", event.SessionID, "user_id", event.UserID, "type", string(event.Type), "err", err)
	}
}

// orgOfSession finds the organization a session belongs to.
func (n *Notifier) orgOfSession(ctx context.Context, sessionID string) string {
	if n.store == nil || sessionID == "" {
		return n.cfg.DefaultOrg
	}
	s, err := n.store.GetSession(ctx, sessionID)
	if err != nil || s.OrgID == "" {
		return n.cfg.DefaultOrg
	}
	return s.OrgID
}

func (n *Notifier) notify(t EventType, sessionID, userID string, data map[string]interface{}) {
	n.NotifySessionEvent(SessionEvent{Type: t, SessionID: sessionID, UserID: userID, Timestamp: time.Now(), Data: data})
}

// NotifySessionCreated notifies clients when a session is created.
func (n *Notifier) NotifySessionCreated(sessionID, userID string, data map[string]interface{}) {
	n.notify(EventSessionCreated, sessionID, userID, data)
}

// NotifySessionUpdated notifies clients when a session is updated.
func (n *Notifier) NotifySessionUpdated(sessionID, userID string, data map[string]interface{}) {
	n.notify(EventSessionUpdated, sessionID, userID, data)
}

// NotifySessionDeleted notifies clients when a session is deleted.
func (n *Notifier) NotifySessionDeleted(sessionID, userID string) {
	n.notify(EventSessionDeleted, sessionID, userID, nil)
}

// NotifySessionStateChange notifies clients when a session changes state.
func (n *Notifier) NotifySessionStateChange(sessionID, userID, oldState, newState string) {
	n.notify(EventSessionStateChange, sessionID, userID, map[string]interface{}{"oldState": oldState, "newState": newState})
}

// NotifySessionConnected notifies clients when someone connects to a session.
func (n *Notifier) NotifySessionConnected(sessionID, userID string, connectionID string) {
	n.notify(EventSessionConnected, sessionID, userID, map[string]interface{}{"connectionId": connectionID})
}

// NotifySessionDisconnected notifies clients when someone disconnects from a session.
func (n *Notifier) NotifySessionDisconnected(sessionID, userID string, connectionID string) {
	n.notify(EventSessionDisconnected, sessionID, userID, map[string]interface{}{"connectionId": connectionID})
}

// NotifySessionIdle notifies clients when a session becomes idle.
func (n *Notifier) NotifySessionIdle(sessionID, userID string, idleDuration int64) {
	n.notify(EventSessionIdle, sessionID, userID, map[string]interface{}{"idleDuration": idleDuration})
}

// NotifySessionActive notifies clients when a session becomes active again.
func (n *Notifier) NotifySessionActive(sessionID, userID string) {
	n.notify(EventSessionActive, sessionID, userID, nil)
}

// NotifySessionResourcesUpdated notifies clients when session resources are updated.
func (n *Notifier) NotifySessionResourcesUpdated(sessionID, userID string, resources map[string]interface{}) {
	n.notify(EventSessionResourcesUpdated, sessionID, userID, map[string]interface{}{"resources": resources})
}

// NotifySessionTagsUpdated notifies clients when session tags are updated.
func (n *Notifier) NotifySessionTagsUpdated(sessionID, userID string, tags []string) {
	n.notify(EventSessionTagsUpdated, sessionID, userID, map[string]interface{}{"tags": tags})
}

// NotifySessionShared notifies the owner (data: sharedWith, permissions) and
// the user the session was shared with (data: sharedBy, permissions).
func (n *Notifier) NotifySessionShared(sessionID, ownerUserID, sharedWithUserID string, permissions []string) {
	n.notify(EventSessionShared, sessionID, ownerUserID, map[string]interface{}{"sharedWith": sharedWithUserID, "permissions": permissions})
	n.notify(EventSessionShared, sessionID, sharedWithUserID, map[string]interface{}{"sharedBy": ownerUserID, "permissions": permissions})
}

// NotifySessionError notifies clients about session errors.
func (n *Notifier) NotifySessionError(sessionID, userID string, errorMsg string) {
	n.notify(EventSessionError, sessionID, userID, map[string]interface{}{"error": errorMsg})
}
