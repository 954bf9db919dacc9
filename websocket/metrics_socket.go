package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/models"
)

// MetricsStore is where the Manager reads an organization's counts for `metrics_update`.
// *db.Database implements it.
type MetricsStore interface {
	OrgMetrics(ctx context.Context, orgID string) (models.OrgMetrics, error)
}

// HandleMetricsWebSocket serves a metrics connection without an organization.
//
// Deprecated: the client is placed in the configured default organization as an operator;
// the server never uses it. Use HandleMetricsWebSocketWithOrg.
func (m *Manager) HandleMetricsWebSocket(conn *websocket.Conn) {
	m.HandleMetricsWebSocketWithOrg(conn, &OrgContext{OrgID: m.cfg.DefaultOrg, Role: "operator"})
}

// HandleMetricsWebSocketWithOrg serves an operator's or admin's metrics socket: the
// organization's `metrics_update` at once, then every MetricsInterval. The counts are the
// organization's only. Other roles are closed with 1008.
func (m *Manager) HandleMetricsWebSocketWithOrg(conn *websocket.Conn, orgCtx *OrgContext) {
	if err := m.ServeMetrics(context.Background(), conn, orgCtx, nil); err != nil {
		m.cfg.Logger.Warn("metrics socket refused", "err", err)
	}
}

// ServeMetrics is HandleMetricsWebSocketWithOrg with a context for the first read and an error
// saying why a connection was refused. onClose, when set, is called once when the connection
// is over, refused at the start or closed later.
func (m *Manager) ServeMetrics(ctx context.Context, conn *websocket.Conn, orgCtx *OrgContext, onClose func()) error {
	closed := onceOrNothing(onClose)
	if orgCtx == nil || orgCtx.OrgID == "" {
		closed()
		closeConn(conn, m.cfg.WriteWait, websocket.ClosePolicyViolation, "organization required")
		return errors.New("metrics socket: organization required")
	}
	org := *orgCtx
	if !org.seesWholeOrg() {
		closed()
		closeConn(conn, m.cfg.WriteWait, websocket.ClosePolicyViolation, "operators and admins only")
		return fmt.Errorf("metrics socket: role %q may not see org metrics", org.Role)
	}
	frame, err := m.metricsFrame(ctx, org.OrgID)
	if err != nil {
		closed()
		closeConn(conn, m.cfg.WriteWait, websocket.CloseInternalServerErr, "metrics unavailable")
		return err
	}
	c := m.metricsHub.serve(conn, clientSpec{id: newClientID(), org: org, onGone: closed}, func(_ cluster.Position) []byte { return frame }, cluster.Position{})
	if c == nil {
		closed()
		return errors.New("metrics socket: shutting down")
	}
	return nil
}

// metricsLoop sends every organization with metrics listeners its counts every
// MetricsInterval, until the Manager shuts down. Organizations without listeners cost nothing.
func (m *Manager) metricsLoop() {
	t := time.NewTicker(m.cfg.MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, orgID := range m.metricsHub.GetUniqueOrgs() {
				frame, err := m.metricsFrame(m.ctx, orgID)
				if err != nil {
					if m.ctx.Err() == nil {
						m.cfg.Logger.Warn("metrics refresh failed", "org_id", orgID, "err", err)
					}
					continue
				}
				m.metricsHub.BroadcastToOrg(orgID, frame)
			}
		case <-m.ctx.Done():
			return
		}
	}
}

// metricsFrame reads and renders orgID's `metrics_update` (PROTOCOL.md 2.5).
func (m *Manager) metricsFrame(ctx context.Context, orgID string) ([]byte, error) {
	var om models.OrgMetrics
	if store, ok := m.store.(MetricsStore); ok {
		ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
		defer cancel()
		var err error
		if om, err = store.OrgMetrics(ctx, orgID); err != nil {
			return nil, fmt.Errorf("metrics of org %q: %w", orgID, err)
		}
	}
	type sessions struct {
		Running    int `json:"running"`
		Hibernated int `json:"hibernated"`
		Total      int `json:"total"`
	}
	type agents struct {
		Online int `json:"online"`
		Total  int `json:"total"`
	}
	type metrics struct {
		Sessions          sessions `json:"sessions"`
		ActiveConnections int      `json:"activeConnections"`
		Agents            agents   `json:"agents"`
	}
	return json.Marshal(struct {
		Type      string    `json:"type"`
		OrgID     string    `json:"org_id"`
		Metrics   metrics   `json:"metrics"`
		Timestamp time.Time `json:"timestamp"`
	}{"metrics_update", orgID, metrics{
		Sessions:          sessions{om.SessionsRunning, om.SessionsHibernated, om.SessionsTotal},
		ActiveConnections: om.ActiveConnections,
		Agents:            agents{om.AgentsOnline, om.AgentsTotal},
	}, m.cfg.Now().UTC()})
}
