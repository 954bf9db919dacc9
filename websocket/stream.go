package websocket

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// An organization's stream carries two kinds of entries: session events,
// routed by user, session and role, and org broadcasts, for every client of
// the org. The entry travels through the bus as JSON; the payload inside it
// is the exact frame body browsers get, minus the stream position.
const (
	entryEvent     = "e"
	entryBroadcast = "b"
)

type streamEntry struct {
	Kind      string `json:"k"`
	UserID    string `json:"u,omitempty"`
	SessionID string `json:"s,omitempty"`
	// Type is the event's type, so that a receiver need not decode the payload to learn it
	// (entries written before it was added have none: see eventType).
	Type    EventType       `json:"t,omitempty"`
	Payload json.RawMessage `json:"p"`
}

// eventType is the type of an event entry.
func (e *streamEntry) eventType() EventType {
	if e.Type != "" {
		return e.Type
	}
	var p struct {
		Type EventType `json:"type"`
	}
	_ = json.Unmarshal(e.Payload, &p)
	return p.Type
}

// changesAccess reports whether an event may end a user's right to see its session: a share
// withdrawn, the session deleted, or a session created (under an id a deleted one had, whose
// subscribers are not the new one's). Its session's subscribers are checked again on it.
func changesAccess(t EventType) bool {
	return t == EventSessionUnshared || t == EventSessionDeleted || t == EventSessionCreated
}

func encodeEventEntry(event SessionEvent) ([]byte, error) {
	if event.Timestamp.IsZero() {
		event.Timestamp = time.Now()
	}
	event.Timestamp = event.Timestamp.UTC()
	payload, err := json.Marshal(event)
	if err != nil {
		return nil, fmt.Errorf("encode session event: %w", err)
	}
	return json.Marshal(streamEntry{Kind: entryEvent, UserID: event.UserID, SessionID: event.SessionID, Type: event.Type, Payload: payload})
}

// encodeBroadcastEntry wraps a JSON object; it is compacted so the stream
// position can be appended to it byte-wise.
func encodeBroadcastEntry(message []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, message); err != nil {
		return nil, fmt.Errorf("broadcast message is not JSON: %w", err)
	}
	if buf.Len() < 2 || buf.Bytes()[0] != '{' {
		return nil, fmt.Errorf("broadcast message must be a JSON object")
	}
	return json.Marshal(streamEntry{Kind: entryBroadcast, Payload: buf.Bytes()})
}

// withPosition appends "offset" and "epoch" to a compact JSON object.
func withPosition(object []byte, pos cluster.Position) []byte {
	return appendPosition(make([]byte, 0, len(object)+48+len(pos.Epoch)), object, pos)
}

// positionFrame is withPosition encoded as a text frame, in one allocation: the frame every
// receiver of a stream entry shares.
func positionFrame(object []byte, pos cluster.Position) []byte {
	buf := make([]byte, frameHeaderRoom, frameHeaderRoom+len(object)+48+len(pos.Epoch))
	return sealFrame(opText, appendPosition(buf, object, pos))
}

func appendPosition(out, object []byte, pos cluster.Position) []byte {
	out = append(out, object[:len(object)-1]...)
	if len(object) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"offset":`...)
	out = strconv.AppendUint(out, pos.Offset, 10)
	out = append(out, `,"epoch":`...)
	out = strconv.AppendQuote(out, pos.Epoch)
	return append(out, '}')
}

// deliver is the hub's bus handler: it records the org's position and
// queues the entry's frame to its receivers on this replica. It runs under
// the bus's per-org ordering, so every client sees its org's entries in
// offset order. Receivers are chosen under the hub's read lock, together
// with the position update, so a registering client either is among them or
// starts after the entry; the frame is then handed to each outside the lock,
// since handing it over may write to the socket.
func (h *Hub) deliver(msg cluster.Message) {
	var e streamEntry
	if err := json.Unmarshal(msg.Payload, &e); err != nil || len(e.Payload) < 2 {
		h.cfg.Logger.Error("dropping malformed stream entry", "org_id", msg.OrgID, "offset", msg.Offset, "err", err)
		return
	}
	frame := positionFrame(e.Payload, msg.Position)
	start := time.Now()
	targets := getTargets()
	defer putTargets(targets)
	h.mu.RLock()
	h.positions.mu.Lock()
	if last, ok := h.positions.last[msg.OrgID]; ok && !msg.After(last) {
		// Older than what the org's clients were told they start after.
		h.positions.mu.Unlock()
		h.mu.RUnlock()
		return
	}
	h.positions.last[msg.OrgID] = msg.Position
	h.positions.mu.Unlock()
	var review []*Client
	var eventType EventType
	if idx := h.orgs[msg.OrgID]; idx != nil {
		switch e.Kind {
		case entryBroadcast:
			for c := range idx.clients {
				*targets = append(*targets, c)
			}
		case entryEvent:
			idx.eventTargets(targets, e.UserID, e.SessionID)
			if h.review != nil && e.SessionID != "" && idx.sessions[e.SessionID].len() > 0 {
				if eventType = e.eventType(); changesAccess(eventType) {
					review = idx.sessionViewers(e.SessionID)
				}
			}
		}
	}
	h.mu.RUnlock()
	// A session's subscribers that do not see the whole org are held from here until their
	// access is checked again, so nothing about the session reaches one that lost it. Who saw
	// the session until now gets its unsharing or deletion; a creation goes to a subscriber
	// of the id only once the new session is found to be visible to it.
	created := eventType == EventSessionCreated
	if created {
		holdAll(review)
	}
	handOut(&h.flushers, *targets, func(c *Client) bool { return c.enqueueEntryLater(frame, msg.Position) })
	if len(review) > 0 {
		if !created {
			holdAll(review)
		}
		h.review(msg.OrgID, e.SessionID, review)
	}
	h.metrics.fanout.Observe(time.Since(start).Seconds())
}

func holdAll(clients []*Client) {
	for _, c := range clients {
		c.hold()
	}
}

// sessionViewers returns the subscribers of sessionID that see it through that subscription
// alone, not as operators or admins of the org. The caller holds the hub's read lock.
func (idx *orgIndex) sessionViewers(sessionID string) []*Client {
	return idx.sessions[sessionID].appendTo(nil, func(c *Client) bool {
		_, whole := idx.wholeOrg[c]
		return whole
	})
}

// parallelFanOut is the number of receivers from which a delivery's writes leave the
// delivering goroutine: they are made by goroutines spread over the machine's cores, which the
// delivery does not wait for. An organization's last browser then does not wait for every
// other one's write on a single core, and the next delivery is queued while this one is being
// written: under load a client's writer finds several frames queued and writes them with one
// writev(2).
const parallelFanOut = 512

// handOut queues a frame to every target with give (which reports whether the caller must
// flush the target) in target order, so that every client keeps the order of deliveries, then
// flushes the targets: inline for a small delivery, on one goroutine per core for a large one,
// counted in flushers. Those goroutines only write what a socket takes at once, so they end
// soon even when a client does not read.
func handOut(flushers *sync.WaitGroup, targets []*Client, give func(*Client) bool) {
	parts := min(runtime.GOMAXPROCS(0), len(targets)/(parallelFanOut/2))
	if len(targets) < parallelFanOut || parts < 2 {
		for _, c := range targets {
			if give(c) {
				c.out.flush()
			}
		}
		return
	}
	dirty := getTargets()
	for _, c := range targets {
		if give(c) {
			*dirty = append(*dirty, c)
		}
	}
	if len(*dirty) == 0 {
		putTargets(dirty)
		return
	}
	parts = max(1, min(parts, len(*dirty)/(parallelFanOut/4)))
	size := (len(*dirty) + parts - 1) / parts
	var left atomic.Int32
	left.Store(int32((len(*dirty) + size - 1) / size))
	for start := 0; start < len(*dirty); start += size {
		part := (*dirty)[start:min(start+size, len(*dirty))]
		flushers.Go(func() {
			for _, c := range part {
				c.out.flush()
			}
			if left.Add(-1) == 0 {
				putTargets(dirty)
			}
		})
	}
}

// eventTargets appends each client entitled to an event once: the org's
// operators and admins, the user's subscribers and the session's. The
// caller holds the hub's read lock.
func (idx *orgIndex) eventTargets(targets *[]*Client, userID, sessionID string) {
	for c := range idx.wholeOrg {
		*targets = append(*targets, c)
	}
	inWholeOrg := func(c *Client) bool { _, dup := idx.wholeOrg[c]; return dup }
	var byUser *subscriberSet
	if userID != "" {
		byUser = idx.users[userID]
		*targets = byUser.appendTo(*targets, inWholeOrg)
	}
	if sessionID != "" {
		*targets = idx.sessions[sessionID].appendTo(*targets, func(c *Client) bool {
			return inWholeOrg(c) || byUser.contains(c)
		})
	}
}

// targetPool recycles the receiver lists of deliveries, so a fan-out allocates nothing per
// receiver.
var targetPool = sync.Pool{New: func() any { s := make([]*Client, 0, 64); return &s }}

func getTargets() *[]*Client { return targetPool.Get().(*[]*Client) }

func putTargets(s *[]*Client) {
	clear(*s)
	*s = (*s)[:0]
	targetPool.Put(s)
}

// frameFor returns the frame of a stream entry for a client registered with spec, and whether
// the client is entitled to it, by the rules deliver applies: broadcasts reach everyone, events
// the org's operators and admins, the user's subscribers and the session's.
func (spec clientSpec) frameFor(msg cluster.Message) ([]byte, bool) {
	var e streamEntry
	if err := json.Unmarshal(msg.Payload, &e); err != nil || len(e.Payload) < 2 {
		return nil, false
	}
	switch {
	case e.Kind == entryBroadcast:
	case e.Kind != entryEvent:
		return nil, false
	case spec.org.seesWholeOrg():
	case e.UserID != "" && slices.Contains(spec.users, e.UserID):
	case e.SessionID != "" && slices.Contains(spec.sessions, e.SessionID):
	default:
		return nil, false
	}
	return withPosition(e.Payload, msg.Position), true
}
