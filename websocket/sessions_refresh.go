package websocket

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"slices"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// refreshLoop checks, every SessionsInterval, the session lists of the organizations that have
// listeners, until the Manager shuts down.
func (m *Manager) refreshLoop() {
	t := time.NewTicker(m.cfg.SessionsInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.refreshSessions(m.ctx)
		case <-m.ctx.Done():
			return
		}
	}
}

// refreshSessions reads each listened-to organization's sessions with one query and sends
// `sessions_update` to the clients whose visible list changed since what they were last sent.
// An organization without clients costs nothing; an unchanged list sends nothing.
func (m *Manager) refreshSessions(ctx context.Context) {
	if m.store == nil && m.source == nil {
		return
	}
	m.maintainPresence(ctx)
	for orgID, clients := range m.hub.sessionListeners() {
		qctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
		sessions, recorded, err := m.listSessions(qctx, orgID, m.hub.GetK8sNamespaceForOrg(orgID), "")
		cancel()
		m.metrics.listChecks.Inc()
		m.announceIdleness(ctx, orgID, recorded, m.cfg.Now())
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Logger.Warn("sessions refresh failed", "org_id", orgID, "err", err)
			}
			continue
		}
		denied := m.sessionAccess(ctx, sessions, clients)
		m.sendChangedLists(orgID, sessions, clients, denied)
	}
}

// sendChangedLists sends each client its visible part of sessions if it changed: a user's own
// sessions and those it subscribed to, but not those of its subscriptions denied (whose client
// is closed). Clients that see the same list share one encoded frame.
//
// Each session is fingerprinted once a pass and a client's list is the combination of its
// sessions' fingerprints, so an unchanged client costs a scan of the sessions and no
// allocation: this runs for every client of the organization every SessionsInterval.
func (m *Manager) sendChangedLists(orgID string, sessions []models.Session, clients []listener, denied map[viewKey]bool) {
	now := m.cfg.Now()
	hashes := sessionHashes(sessions, now)
	frames := make(map[uint64][]byte)
	var wholeFP uint64 // the whole list's fingerprint, computed for the first client that sees it
	for _, l := range clients {
		if l.client.gate.held.Load() {
			continue // its first snapshot is on its way
		}
		whole := l.client.org.seesWholeOrg()
		sees := func(s models.Session) bool {
			return whole || slices.Contains(l.users, s.UserID) ||
				(slices.Contains(l.sessions, s.ID) && !denied[viewKey{l.client.org.UserID, s.ID}])
		}
		var fp uint64
		if whole && wholeFP != 0 {
			fp = wholeFP
		} else {
			var lh listHash
			lh.init()
			for i, s := range sessions {
				if sees(s) {
					lh.add(hashes[i])
				}
			}
			fp = lh.sum()
			if whole {
				wholeFP = fp
			}
		}
		if l.client.listFP.Load() == fp {
			continue
		}
		frame, ok := frames[fp]
		if !ok {
			visible := sessions
			if !whole {
				visible = make([]models.Session, 0, len(sessions))
				for _, s := range sessions {
					if sees(s) {
						visible = append(visible, s)
					}
				}
			}
			var err error
			if frame, err = sessionsUpdateFrame(orgID, visible, now); err != nil {
				m.cfg.Logger.Error("encode sessions update", "org_id", orgID, "err", err)
				return
			}
			frames[fp] = frame
		}
		l.client.listFP.Store(fp)
		l.client.enqueue(frame)
		m.metrics.listUpdates.Inc()
	}
}

// listSeed seeds the fingerprints of session lists; they never leave the process.
var listSeed = maphash.MakeSeed()

// sessionHashes fingerprints each session as a client sees it, leaving out the fields that
// move with the clock alone (idleDuration, lastActivity): those are no reason to resend.
// isIdle flipping is.
func sessionHashes(sessions []models.Session, now time.Time) []uint64 {
	if len(sessions) == 0 {
		return nil
	}
	out := make([]uint64, len(sessions))
	var h maphash.Hash
	h.SetSeed(listSeed)
	enc := json.NewEncoder(&h)
	for i, s := range sessions {
		h.Reset()
		v := NewSessionView(s, now)
		v.IdleDuration, v.LastActivity = nil, nil
		_ = enc.Encode(v)
		out[i] = h.Sum64()
	}
	return out
}

// listFingerprint identifies what a client sees of sessions, as sendChangedLists computes it.
func listFingerprint(sessions []models.Session, now time.Time) uint64 {
	var lh listHash
	lh.init()
	for _, x := range sessionHashes(sessions, now) {
		lh.add(x)
	}
	return lh.sum()
}

// listHash combines the fingerprints of a list's sessions, in order.
type listHash struct {
	h maphash.Hash
	n uint64
}

func (lh *listHash) init() { lh.h.SetSeed(listSeed) }

func (lh *listHash) add(x uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], x)
	_, _ = lh.h.Write(b[:])
	lh.n++
}

// sum is never 0 (0 means "never sent"), an empty list included.
func (lh *listHash) sum() uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], lh.n)
	_, _ = lh.h.Write(b[:])
	return lh.h.Sum64() | 1
}

// listener is a client of the sessions hub with its subscriptions as they were.
type listener struct {
	client   *Client
	users    []string
	sessions []string
}

// sessionListeners returns, per organization, its clients with their subscriptions, read
// under the hub's lock. The lists are shared, not copied: the hub only appends to a client's
// lists or replaces them, so the elements a listener holds never change.
func (h *Hub) sessionListeners() map[string][]listener {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make(map[string][]listener, len(h.orgs))
	for orgID, idx := range h.orgs {
		if len(idx.clients) == 0 {
			continue // an organization without clients costs nothing
		}
		ls := make([]listener, 0, len(idx.clients))
		for c := range idx.clients {
			ls = append(ls, listener{client: c, users: c.users, sessions: c.sessions})
		}
		out[orgID] = ls
	}
	return out
}
