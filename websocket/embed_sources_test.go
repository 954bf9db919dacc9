package websocket

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/k8s"
	"github.com/streamspace/streamspace-realtime/models"
)

// embedderStore is a SessionStore an API server would write over its own tables: sessions,
// organizations and shares in memory, "not found" wrapping ErrNotFound. It implements none of
// the optional stores.
type embedderStore struct {
	mu       sync.Mutex
	sessions map[string]models.Session
	orgs     map[string]models.Organization
	shares   map[string][]string // session id: the users it is shared with
}

func (s *embedderStore) GetSession(_ context.Context, id string) (models.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.sessions[id]; ok {
		return sess, nil
	}
	return models.Session{}, fmt.Errorf("embedder: session %q: %w", id, ErrNotFound)
}

func (s *embedderStore) ListSessions(_ context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []models.Session
	for _, sess := range s.sessions {
		if sess.OrgID == orgID && (userID == "" || sess.UserID == userID || slices.Contains(extraIDs, sess.ID)) {
			out = append(out, sess)
		}
	}
	slices.SortFunc(out, func(a, b models.Session) int { return compareStrings(a.ID, b.ID) })
	return out, nil
}

func (s *embedderStore) GetOrganization(_ context.Context, id string) (models.Organization, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.orgs[id]; ok {
		return o, nil
	}
	return models.Organization{}, fmt.Errorf("embedder: organization %q: %w", id, ErrNotFound)
}

func (s *embedderStore) IsSessionSharedWith(_ context.Context, sessionID, userID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.shares[sessionID], userID), nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// embedderSource is a SessionSource and PodLogSource an API server would write over its own
// view of the cluster: sessions by namespace, and one pod whose log has one line and then
// stays open until the reader leaves.
type embedderSource struct {
	sessions map[string][]models.Session // by namespace
	logPod   string
	logAt    time.Time

	lists      sync.Map // namespace: true, for every namespace listed
	tailLines  atomic.Int64
	logsClosed chan struct{} // closed when the log stream's context ended
}

func (s *embedderSource) ListSessions(_ context.Context, namespace string) ([]models.Session, error) {
	s.lists.Store(namespace, true)
	return slices.Clone(s.sessions[namespace]), nil
}

func (s *embedderSource) PodLogs(ctx context.Context, namespace, pod string, tailLines int64) (io.ReadCloser, error) {
	s.tailLines.Store(tailLines)
	if pod != s.logPod {
		return nil, fmt.Errorf("embedder: pod %s/%s: %w", namespace, pod, ErrPodNotFound)
	}
	pr, pw := io.Pipe()
	go func() { // ends with the stream's context, which the Manager cancels when the browser leaves
		_, _ = fmt.Fprintf(pw, "%s hello from %s\n", s.logAt.Format(time.RFC3339Nano), pod)
		<-ctx.Done()
		_ = pw.CloseWithError(ctx.Err())
		close(s.logsClosed)
	}()
	return pr, nil
}

// snapshotIDs reads a sessions socket's `connected` and `sessions_update` frames and returns
// the ids of the snapshot's sessions.
func snapshotIDs(t *testing.T, conn *websocket.Conn) []string {
	t.Helper()
	if f := readFrame(t, conn); f.str("type") != "connected" {
		t.Fatalf("first frame %v, want connected", f)
	}
	var snap struct {
		Type     string        `json:"type"`
		Sessions []SessionView `json:"sessions"`
	}
	readJSON(t, conn, 5*time.Second, &snap)
	if snap.Type != "sessions_update" {
		t.Fatalf("second frame is %s, want sessions_update", snap.Type)
	}
	ids := make([]string, 0, len(snap.Sessions))
	for _, v := range snap.Sessions {
		ids = append(ids, v.Name)
	}
	slices.Sort(ids)
	return ids
}

func startEmbeddedManager(t *testing.T, store SessionStore, source SessionSource) *Manager {
	t.Helper()
	m := NewManagerWithSources(store, source, Config{})
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return m
}

// A Manager over an embedder's own SessionStore (not *db.Database) serves snapshots and
// session subscriptions from it alone: alice's snapshot holds her session and the one shared
// with her she subscribed to, which exist only in that store; another organization's session
// is not visible (1008). The source is a nil *k8s.Client, which must count as no source.
func TestManagerOverEmbedderStore(t *testing.T) {
	t.Parallel()
	store := &embedderStore{
		sessions: map[string]models.Session{
			"s-alice": {ID: "s-alice", OrgID: "o1", UserID: "alice", State: models.SessionStateRunning},
			"s-bob":   {ID: "s-bob", OrgID: "o1", UserID: "bob", State: models.SessionStateRunning},
			"s-carol": {ID: "s-carol", OrgID: "o1", UserID: "carol", State: models.SessionStateRunning},
			"s-other": {ID: "s-other", OrgID: "o2", UserID: "alice", State: models.SessionStateRunning},
		},
		orgs:   map[string]models.Organization{"o1": {ID: "o1"}},
		shares: map[string][]string{"s-bob": {"alice"}},
	}
	m := startEmbeddedManager(t, store, (*k8s.Client)(nil))
	base := sessionsServer(t, m)

	alice := dial(t, base, params("org", "o1", "user", "alice", "session", "s-bob"))
	if got := snapshotIDs(t, alice); !slices.Equal(got, []string{"s-alice", "s-bob"}) {
		t.Fatalf("alice's snapshot %v, want her session and the one shared with her", got)
	}
	// The subscription is live: an event of s-bob reaches her.
	if _, err := m.GetNotifier().Publish(t.Context(), "o1", SessionEvent{Type: EventSessionUpdated, SessionID: "s-bob", UserID: "bob"}); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, alice); f.str("type") != string(EventSessionUpdated) || f.str("sessionId") != "s-bob" {
		t.Fatalf("frame %v, want the event of the subscribed session", f)
	}

	admin := dial(t, base, params("org", "o1", "user", "root", "role", "admin", "session", "s-carol"))
	if got := snapshotIDs(t, admin); !slices.Equal(got, []string{"s-alice", "s-bob", "s-carol"}) {
		t.Fatalf("admin's snapshot %v, want the whole organization", got)
	}

	for _, id := range []string{"s-other", "s-carol", "missing"} {
		conn := dial(t, base, params("org", "o1", "user", "alice", "session", id))
		if code, _ := expectClose(t, conn, 5*time.Second); code != websocket.ClosePolicyViolation {
			t.Errorf("subscribing alice to %s closed with %d, want 1008", id, code)
		}
	}
}

// A SessionSource of the embedder's says which sessions exist: the snapshot lists a session
// only the source knows, read from the organization's namespace (the store's organization
// row names it), and a source that is also a PodLogSource streams the logs sockets' lines.
func TestManagerOverEmbedderSource(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	source := &embedderSource{
		sessions: map[string][]models.Session{"ns-o1": {
			{ID: "k1", Namespace: "ns-o1", UserID: "alice", State: models.SessionStateRunning, PodName: "pod-k1"},
			{ID: "k2", Namespace: "ns-o1", UserID: "bob", State: models.SessionStateRunning, PodName: "pod-k2"},
		}},
		logPod: "pod-k1", logAt: at, logsClosed: make(chan struct{}),
	}
	store := &embedderStore{orgs: map[string]models.Organization{"o1": {ID: "o1", K8sNamespace: "ns-o1"}}}
	m := startEmbeddedManager(t, store, source)

	alice := dial(t, sessionsServer(t, m), params("org", "o1", "user", "alice"))
	if got := snapshotIDs(t, alice); !slices.Equal(got, []string{"k1"}) {
		t.Fatalf("alice's snapshot %v, want the source's session of hers", got)
	}
	if _, ok := source.lists.Load("ns-o1"); !ok {
		t.Fatal("the source was not asked for the organization's namespace")
	}

	ops := dial(t, logsServer(t, m), params("org", "o1", "role", "operator", "pod", "pod-k1"))
	if l := readLog(t, ops); l.Type != "log" || l.Line != "hello from pod-k1" || l.Pod != "pod-k1" ||
		l.Namespace != "ns-o1" || !l.Timestamp.Equal(at) {
		t.Fatalf("log frame %+v", l)
	}
	if got := source.tailLines.Load(); got != LogsTailLines {
		t.Errorf("tailLines %d, want %d", got, LogsTailLines)
	}
	_ = ops.Close()
	select {
	case <-source.logsClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the log stream stayed open after the browser left")
	}

	// A pod no session of the organization runs is refused before any stream is opened.
	stranger := dial(t, logsServer(t, m), params("org", "o1", "role", "operator", "pod", "pod-zz"))
	if code, _ := expectClose(t, stranger, 5*time.Second); code != websocket.ClosePolicyViolation {
		t.Errorf("logs of an unknown pod closed with %d, want 1008", code)
	}
}

// Nil pointers given where the constructors take interfaces mean none: a Manager over a nil
// *db.Database and a nil *k8s.Client (given to NewManager's KubernetesClient too) serves an
// empty snapshot instead of panicking.
func TestManagerTypedNilSources(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]*Manager{
		"NewManagerWithSources":             NewManagerWithSources((*db.Database)(nil), (*k8s.Client)(nil), Config{}),
		"NewManagerWithConfig":              NewManagerWithConfig(nil, nil, Config{}),
		"NewManager(*k8s.Client)":           NewManager(nil, (*k8s.Client)(nil)),
		"NewManagerWithConfig(*k8s.Client)": NewManagerWithConfig(nil, (*k8s.Client)(nil), Config{}),
	} {
		t.Run(name, func(t *testing.T) {
			m.Start()
			t.Cleanup(m.CloseAll)
			if m.store != nil || m.source != nil || m.podLogs != nil {
				t.Fatalf("store %v source %v podLogs %v, want none", m.store, m.source, m.podLogs)
			}
			conn := dial(t, sessionsServer(t, m), params("org", "o1", "user", "alice"))
			if got := snapshotIDs(t, conn); len(got) != 0 {
				t.Fatalf("snapshot %v, want empty", got)
			}
		})
	}
}
