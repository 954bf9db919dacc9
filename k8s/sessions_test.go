package k8s

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

const (
	nsAcme   = "streamspace-acme"
	nsGlobex = "streamspace-globex"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// testSession is a fully populated session as ListSessions returns it.
func testSession(ns, id string, created time.Time) models.Session {
	return models.Session{
		ID:                 id,
		Namespace:          ns,
		UserID:             "alice",
		Template:           "firefox",
		State:              models.SessionStateRunning,
		PodName:            "ss-alice-" + id,
		URL:                "https://" + id + ".streamspace.test",
		CPU:                "1000m",
		Memory:             "2Gi",
		Platform:           models.PlatformKubernetes,
		IdleTimeoutSeconds: 1800,
		LastActivity:       created.Add(5*time.Minute + 123*time.Millisecond),
		CreatedAt:          created,
	}
}

func newFakeDynamic(objs ...runtime.Object) *dynfake.FakeDynamicClient {
	return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{SessionGVR: "SessionList"}, objs...)
}

func newTestClient(t *testing.T, dyn *dynfake.FakeDynamicClient, opts Options) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := New(dyn, kubefake.NewClientset(), opts)
	t.Cleanup(c.Close)
	return c
}

func countActions(dyn *dynfake.FakeDynamicClient, verb, ns string) int {
	n := 0
	for _, a := range dyn.Actions() {
		if a.GetVerb() == verb && a.GetNamespace() == ns && a.GetResource() == SessionGVR {
			n++
		}
	}
	return n
}

// waitForWatch waits until the namespace's informer has its watch open. The
// fake tracker ignores resource versions, so a change made between the
// initial list and the watch would be lost for good.
func waitForWatch(t *testing.T, dyn *dynfake.FakeDynamicClient, ns string) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "the watch in "+ns, func() bool { return countActions(dyn, "watch", ns) > 0 })
}

func mustList(t *testing.T, c *Client, ns string) []models.Session {
	t.Helper()
	got, err := c.ListSessions(t.Context(), ns)
	if err != nil {
		t.Fatalf("ListSessions(%s): %v", ns, err)
	}
	return got
}

func ids(ss []models.Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func TestListSessionsMapsNamespaceSorted(t *testing.T) {
	want := []models.Session{
		testSession(nsAcme, "s-b", t0),
		testSession(nsAcme, "s-c", t0), // same CreatedAt: name breaks the tie
		testSession(nsAcme, "s-a", t0.Add(time.Minute)),
	}
	want[2].State = models.SessionStateHibernated
	dyn := newFakeDynamic(
		SessionObject(want[2]), SessionObject(want[1]), SessionObject(want[0]),
		SessionObject(testSession(nsGlobex, "other", t0)),
	)
	c := newTestClient(t, dyn, Options{})

	got := mustList(t, c, nsAcme)
	if !slices.EqualFunc(got, want, sessionsEqual) {
		t.Fatalf("ListSessions(%s):\n got %+v\nwant %+v", nsAcme, got, want)
	}
}

func sessionsEqual(a, b models.Session) bool {
	return a.CreatedAt.Equal(b.CreatedAt) && a.LastActivity.Equal(b.LastActivity) &&
		a.ID == b.ID && a.OrgID == b.OrgID && a.UserID == b.UserID && a.Namespace == b.Namespace &&
		a.Template == b.Template && a.State == b.State && a.PodName == b.PodName && a.URL == b.URL &&
		a.CPU == b.CPU && a.Memory == b.Memory && a.Platform == b.Platform && a.AgentID == b.AgentID &&
		a.IdleTimeoutSeconds == b.IdleTimeoutSeconds
}

func TestListSessionsSeesChanges(t *testing.T) {
	dyn := newFakeDynamic(SessionObject(testSession(nsAcme, "s1", t0)))
	c := newTestClient(t, dyn, Options{})
	if got := ids(mustList(t, c, nsAcme)); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("first list = %v, want [s1]", got)
	}
	waitForWatch(t, dyn, nsAcme)
	sessions := dyn.Resource(SessionGVR).Namespace(nsAcme)
	ctx := t.Context()

	if _, err := sessions.Create(ctx, SessionObject(testSession(nsAcme, "s2", t0.Add(time.Second))), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "s2 to appear", func() bool {
		return slices.Equal(ids(mustList(t, c, nsAcme)), []string{"s1", "s2"})
	})

	hibernated := testSession(nsAcme, "s1", t0)
	hibernated.State = models.SessionStateHibernated
	if _, err := sessions.Update(ctx, SessionObject(hibernated), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "s1 to hibernate", func() bool {
		got := mustList(t, c, nsAcme)
		return len(got) == 2 && got[0].State == models.SessionStateHibernated
	})

	if err := sessions.Delete(ctx, "s1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "s1 to go", func() bool {
		return slices.Equal(ids(mustList(t, c, nsAcme)), []string{"s2"})
	})
}

func TestListSessionsServedFromCache(t *testing.T) {
	dyn := newFakeDynamic(SessionObject(testSession(nsAcme, "s1", t0)))
	c := newTestClient(t, dyn, Options{})
	mustList(t, c, nsAcme)
	lists := countActions(dyn, "list", nsAcme)
	if lists != 1 {
		t.Fatalf("%d list actions after the first ListSessions, want 1", lists)
	}
	for range 50 {
		mustList(t, c, nsAcme)
	}
	if n := countActions(dyn, "list", nsAcme); n != lists {
		t.Fatalf("50 cached ListSessions calls made %d list requests", n-lists)
	}
}

func TestListSessionsNamespacesIsolated(t *testing.T) {
	dyn := newFakeDynamic(
		SessionObject(testSession(nsAcme, "a1", t0)),
		SessionObject(testSession(nsGlobex, "g1", t0)),
		SessionObject(testSession(nsGlobex, "g2", t0)),
	)
	c := newTestClient(t, dyn, Options{})
	if got := ids(mustList(t, c, nsAcme)); !slices.Equal(got, []string{"a1"}) {
		t.Fatalf("%s = %v, want [a1]", nsAcme, got)
	}
	if got := ids(mustList(t, c, nsGlobex)); !slices.Equal(got, []string{"g1", "g2"}) {
		t.Fatalf("%s = %v, want [g1 g2]", nsGlobex, got)
	}
	for _, a := range dyn.Actions() {
		if a.GetNamespace() == "" {
			t.Errorf("cluster-wide %s of %s: only namespaced RBAC may be needed", a.GetVerb(), a.GetResource())
		}
	}

	// A change in one namespace reaches that namespace's cache only.
	waitForWatch(t, dyn, nsAcme)
	waitForWatch(t, dyn, nsGlobex)
	if _, err := dyn.Resource(SessionGVR).Namespace(nsGlobex).Create(t.Context(),
		SessionObject(testSession(nsGlobex, "g3", t0)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "g3 to appear", func() bool { return len(mustList(t, c, nsGlobex)) == 3 })
	if got := ids(mustList(t, c, nsAcme)); !slices.Equal(got, []string{"a1"}) {
		t.Fatalf("%s = %v after a change in %s, want [a1]", nsAcme, got, nsGlobex)
	}
}

func TestListSessionsMalformedObjects(t *testing.T) {
	obj := func(name string, fields map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: fields}
		u.SetAPIVersion("stream.space/v1alpha1")
		u.SetKind("Session")
		u.SetNamespace(nsAcme)
		u.SetName(name)
		return u
	}
	dyn := newFakeDynamic(
		obj("wrong-types", map[string]any{
			"spec": map[string]any{
				"user":        int64(42),
				"template":    []any{"firefox"},
				"state":       "Running",
				"resources":   "lots",
				"idleTimeout": "banana",
			},
			"status": map[string]any{"phase": true, "podName": map[string]any{}, "lastActivity": "yesterday"},
		}),
		obj("spec-is-a-string", map[string]any{"spec": "oops", "status": []any{"x"}}),
		obj("empty", map[string]any{}),
		obj("numeric-timeout", map[string]any{"spec": map[string]any{"user": "bob", "idleTimeout": int64(600)}}),
		obj("seconds-string", map[string]any{"spec": map[string]any{"idleTimeout": "90"}}),
		obj("negative-timeout", map[string]any{"spec": map[string]any{"idleTimeout": "-5m"}}),
	)
	c := newTestClient(t, dyn, Options{})
	got := mustList(t, c, nsAcme)
	byID := map[string]models.Session{}
	for _, s := range got {
		byID[s.ID] = s
	}
	if len(byID) != 6 {
		t.Fatalf("got %v, want all 6 objects, malformed ones included", ids(got))
	}

	w := byID["wrong-types"]
	if w.UserID != "" || w.Template != "" || w.CPU != "" || w.PodName != "" || w.IdleTimeoutSeconds != 0 || !w.LastActivity.IsZero() {
		t.Errorf("wrong-types: badly shaped fields not left empty: %+v", w)
	}
	if w.State != "running" {
		t.Errorf("wrong-types: State = %q, want spec.state lower-cased when status.phase is unusable", w.State)
	}
	for _, id := range []string{"spec-is-a-string", "empty"} {
		s := byID[id]
		if s.Namespace != nsAcme || s.Platform != models.PlatformKubernetes || s.UserID != "" || s.State != "" {
			t.Errorf("%s: %+v, want only identity fields set", id, s)
		}
	}
	for id, want := range map[string]int64{"numeric-timeout": 600, "seconds-string": 90, "negative-timeout": 0} {
		if got := byID[id].IdleTimeoutSeconds; got != want {
			t.Errorf("%s: IdleTimeoutSeconds = %d, want %d", id, got, want)
		}
	}
}

// flakyLists makes every list of sessions fail with a Forbidden error while
// failing is set, as when the RBAC rule is missing.
func flakyLists(dyn *dynfake.FakeDynamicClient) *atomic.Bool {
	var failing atomic.Bool
	failing.Store(true)
	dyn.PrependReactor("list", "sessions", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !failing.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(SessionGVR.GroupResource(), "", errors.New("no RBAC"))
	})
	return &failing
}

func TestListSessionsSyncFailureThenRecovery(t *testing.T) {
	dyn := newFakeDynamic(SessionObject(testSession(nsAcme, "s1", t0)))
	failing := flakyLists(dyn)
	const timeout = 300 * time.Millisecond
	c := newTestClient(t, dyn, Options{SyncTimeout: timeout})

	start := time.Now()
	_, err := c.ListSessions(t.Context(), nsAcme)
	if !errors.Is(err, ErrNotSynced) {
		t.Fatalf("err = %v, want ErrNotSynced", err)
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("err = %v, want the list error (Forbidden) joined in", err)
	}
	if elapsed := time.Since(start); elapsed > timeout+time.Second {
		t.Errorf("ListSessions failed after %v, want about SyncTimeout (%v)", elapsed, timeout)
	}

	failing.Store(false)
	if got := ids(mustList(t, c, nsAcme)); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("after recovery = %v, want [s1]", got)
	}
}

func TestListSessionsContextEndsWait(t *testing.T) {
	dyn := newFakeDynamic()
	flakyLists(dyn)
	c := newTestClient(t, dyn, Options{SyncTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.ListSessions(ctx, nsAcme)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotSynced) {
		t.Fatalf("err = %v, want the context's error", err)
	}
}

func TestListSessionsEmptyNamespace(t *testing.T) {
	dyn := newFakeDynamic()
	c := newTestClient(t, dyn, Options{})
	if _, err := c.ListSessions(t.Context(), ""); err == nil {
		t.Fatal("ListSessions with an empty namespace succeeded")
	}
	if n := len(dyn.Actions()); n != 0 {
		t.Fatalf("%d API requests for an empty namespace, want 0", n)
	}
}

func TestCloseStopsInformers(t *testing.T) {
	before := goleak.IgnoreCurrent()
	dyn := newFakeDynamic(SessionObject(testSession(nsAcme, "s1", t0)))
	c := New(dyn, kubefake.NewClientset(), Options{Logger: slog.New(slog.DiscardHandler)})
	mustList(t, c, nsAcme)
	mustList(t, c, nsGlobex)

	c.Close()
	c.Close() // idempotent
	if _, err := c.ListSessions(t.Context(), nsAcme); !errors.Is(err, ErrClosed) {
		t.Fatalf("ListSessions after Close: err = %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t, before)
}

func TestCloseEndsWaitingListSessions(t *testing.T) {
	before := goleak.IgnoreCurrent()
	dyn := newFakeDynamic()
	flakyLists(dyn)
	c := New(dyn, kubefake.NewClientset(), Options{Logger: slog.New(slog.DiscardHandler), SyncTimeout: time.Minute})

	errc := make(chan error, 1)
	go func() {
		_, err := c.ListSessions(context.Background(), nsAcme)
		errc <- err
	}()
	testkit.Eventually(t, 5*time.Second, "the first list", func() bool { return countActions(dyn, "list", nsAcme) > 0 })
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListSessions still waiting 5s after Close")
	}
	goleak.VerifyNone(t, before)
}
