package k8s

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestSessionObjectRoundTrip(t *testing.T) {
	for _, state := range []string{
		models.SessionStatePending, models.SessionStateRunning, models.SessionStateHibernated,
		models.SessionStateFailed, models.SessionStateTerminated,
	} {
		want := testSession(nsAcme, "s-"+state, t0)
		want.State = state
		u := SessionObject(want)
		if u.GetAPIVersion() != "stream.space/v1alpha1" || u.GetKind() != "Session" {
			t.Fatalf("%s: apiVersion/kind = %s/%s", state, u.GetAPIVersion(), u.GetKind())
		}
		if got := sessionFromObject(u); !sessionsEqual(got, want) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", state, got, want)
		}
	}
}

// A resource names its organization with the streamspace.io/org label, or with the annotation
// of that key for an id no label value can hold; the label wins over the annotation, and a
// resource that names none maps to an empty OrgID, never to a guess.
func TestSessionObjectOrganization(t *testing.T) {
	for _, org := range []string{"acme", "org:acme/eu", ""} {
		s := testSession(nsAcme, "s1", t0)
		s.OrgID = org
		u := SessionObject(s)
		if got := sessionFromObject(u).OrgID; got != org {
			t.Errorf("OrgID %q read back as %q (labels %v, annotations %v)", org, got, u.GetLabels(), u.GetAnnotations())
		}
		_ = u.DeepCopy()
	}
	if l := SessionObject(models.Session{ID: "s", OrgID: "acme"}).GetLabels()[OrgKey]; l != "acme" {
		t.Errorf("label %s = %q, want acme", OrgKey, l)
	}
	if a := SessionObject(models.Session{ID: "s", OrgID: "org:acme/eu"}).GetAnnotations()[OrgKey]; a != "org:acme/eu" {
		t.Errorf("annotation %s = %q, want the id a label cannot hold", OrgKey, a)
	}
	u := SessionObject(models.Session{ID: "s", OrgID: "acme"})
	u.SetAnnotations(map[string]string{OrgKey: "globex"})
	if got := ResourceOrg(u); got != "acme" {
		t.Errorf("label acme and annotation globex: %q, want the label", got)
	}
}

func TestSessionObjectShape(t *testing.T) {
	s := testSession(nsAcme, "s1", t0)
	s.State = models.SessionStatePending
	u := SessionObject(s)
	for _, f := range []struct {
		path []string
		want string
	}{
		{[]string{"spec", "user"}, "alice"},
		{[]string{"spec", "state"}, "running"},
		{[]string{"spec", "idleTimeout"}, "30m0s"},
		{[]string{"spec", "resources", "memory"}, "2Gi"},
		{[]string{"status", "phase"}, "Pending"},
		{[]string{"metadata", "creationTimestamp"}, "2026-11-26T10:00:00Z"},
	} {
		if got, _, _ := unstructured.NestedString(u.Object, f.path...); got != f.want {
			t.Errorf("%v = %q, want %q", f.path, got, f.want)
		}
	}
	// The fake clientsets deep-copy objects and panic on non-JSON values.
	_ = u.DeepCopy()
}

func TestStateFallsBackToSpecState(t *testing.T) {
	u := SessionObject(testSession(nsAcme, "s1", t0))
	unstructured.RemoveNestedField(u.Object, "status", "phase")
	_ = unstructured.SetNestedField(u.Object, "Hibernated", "spec", "state")
	if got := sessionFromObject(u).State; got != models.SessionStateHibernated {
		t.Fatalf("State = %q, want spec.state lower-cased", got)
	}
}

func TestIdleTimeoutSeconds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		value  any
		want   int64
		wantOK bool
	}{
		{"absent", nil, 0, true},
		{"duration", "30m", 1800, true},
		{"duration with seconds", "1h0m30s", 3630, true},
		{"sub-second truncates", "1500ms", 1, true},
		{"seconds string", "90", 90, true},
		{"integer", int64(600), 600, true},
		{"whole float", float64(120), 120, true},
		{"empty string", "", 0, true},
		{"garbage", "banana", 0, false},
		{"negative duration", "-5m", 0, false},
		{"negative integer", int64(-1), 0, false},
		{"fractional float", 1.5, 0, false},
		{"wrong type", true, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := map[string]any{"spec": map[string]any{}}
			if tc.value != nil {
				obj["spec"].(map[string]any)["idleTimeout"] = tc.value
			}
			got, ok := idleTimeoutSeconds(obj)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("idleTimeoutSeconds(%v) = %d, %v; want %d, %v", tc.value, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// countingHandler counts the records whose message is msg.
type countingHandler struct {
	msg string
	mu  sync.Mutex
	n   int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
	}
	return nil
}

func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func TestInvalidIdleTimeoutLoggedOncePerValue(t *testing.T) {
	bad := SessionObject(testSession(nsAcme, "s1", t0))
	// A map, not a string: comparing old and new values must not panic.
	_ = unstructured.SetNestedField(bad.Object, map[string]any{"minutes": int64(30)}, "spec", "idleTimeout")
	dyn := newFakeDynamic(bad)
	h := &countingHandler{msg: "k8s: session has an invalid spec.idleTimeout; using none"}
	c := newTestClient(t, dyn, Options{Logger: slog.New(h)})
	mustList(t, c, nsAcme)
	testkit.Eventually(t, 5*time.Second, "the first note", func() bool { return h.count() == 1 })
	waitForWatch(t, dyn, nsAcme)

	sessions := dyn.Resource(SessionGVR).Namespace(nsAcme)
	update := func(mutate func(u *unstructured.Unstructured)) {
		t.Helper()
		u, err := sessions.Get(t.Context(), "s1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mutate(u)
		if _, err := sessions.Update(t.Context(), u, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Another field changes: no new note. Then the bad value changes: one more.
	// Events reach the handler in order, so once the second note is in, the
	// first update has been seen too.
	update(func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "Hibernated", "status", "phase")
	})
	update(func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "kiwi", "spec", "idleTimeout")
	})
	testkit.Eventually(t, 5*time.Second, "the second note", func() bool { return h.count() >= 2 })
	if n := h.count(); n != 2 {
		t.Fatalf("%d notes, want 2: one per distinct invalid value", n)
	}
}
