package websocket

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/k8s"
	"github.com/streamspace/streamspace-realtime/models"
)

// *k8s.Client is what KubernetesClient names: a session source that streams pod logs. The
// check lives here, as package websocket itself does not import k8s (and so links no
// client-go).
var (
	_ SessionSource    = (*k8s.Client)(nil)
	_ PodLogSource     = (*k8s.Client)(nil)
	_ KubernetesClient = (*k8s.Client)(nil)
)

// kubeFixture is a Kubernetes source: Session resources in client-go's fake dynamic client,
// and pod logs from an API server stand-in over real HTTP, whose log endpoint is logs.
type kubeFixture struct {
	dyn  *dynfake.FakeDynamicClient
	kube *k8s.Client
}

func newKubeFixture(t *testing.T, logs http.HandlerFunc, sessions ...models.Session) *kubeFixture {
	t.Helper()
	objs := make([]runtime.Object, len(sessions))
	for i, s := range sessions {
		objs[i] = k8s.SessionObject(s)
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{k8s.SessionGVR: "SessionList"}, objs...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{pod}/log", logs)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	typed, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	kube := k8s.New(dyn, typed, k8s.Options{Logger: slog.New(slog.DiscardHandler), SyncTimeout: 5 * time.Second})
	t.Cleanup(kube.Close)
	return &kubeFixture{dyn: dyn, kube: kube}
}

// startKubeManager is startManager with a Kubernetes client.
func startKubeManager(t *testing.T, d *db.Database, kube *k8s.Client, cfg Config) *Manager {
	t.Helper()
	m := newManager(d, kube, cfg)
	m.Start()
	t.Cleanup(m.CloseAll)
	return m
}

var podSession = models.Session{ID: "k1", Namespace: "ns-o1", UserID: "alice", State: models.SessionStateRunning,
	PodName: "pod-k1", CreatedAt: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)}

// With Kubernetes as the source, a logs socket reads the pod's log with follow, timestamps
// and the last 100 lines: 10,000 lines arrive in order with the API server's timestamps, and
// when the browser leaves the API request is cancelled within a second and the goroutines
// return to baseline.
func TestLogsFromKubernetes(t *testing.T) {
	const n = 10000
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	ended := make(chan time.Time, 1)
	var query atomic.Value
	kf := newKubeFixture(t, func(w http.ResponseWriter, r *http.Request) {
		query.Store(r.URL.RawQuery)
		bw := bufio.NewWriter(w)
		for i := range n {
			fmt.Fprintf(bw, "%s line %d\n", at.Add(time.Duration(i)*time.Microsecond).Format(time.RFC3339Nano), i)
		}
		_ = bw.Flush()
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a silent pod: the stream stays open until the client leaves
		ended <- time.Now()
	}, podSession)
	m := startKubeManager(t, dbtest.Open(t, "sqlite"), kf.kube, Config{})
	if _, err := kf.kube.ListSessions(t.Context(), "ns-o1"); err != nil { // the namespace's informer runs from here on
		t.Fatal(err)
	}
	srv := logsServer(t, m)
	base := testkit.SteadyGoroutines()
	browser := dial(t, srv, params("org", "o1", "role", "operator", "ns", "ns-o1", "pod", "pod-k1"))
	for i := range n {
		l := readLog(t, browser)
		if l.Type != "log" || l.Line != fmt.Sprintf("line %d", i) || l.Pod != "pod-k1" || l.Namespace != "ns-o1" ||
			!l.Timestamp.Equal(at.Add(time.Duration(i)*time.Microsecond)) {
			t.Fatalf("frame %d = %+v", i, l)
		}
	}
	q, _ := query.Load().(string)
	for _, want := range []string{"follow=true", "timestamps=true", "tailLines=100"} {
		if !strings.Contains(q, want) {
			t.Errorf("pod log query %q lacks %s", q, want)
		}
	}
	left := time.Now()
	_ = browser.Close()
	select {
	case at := <-ended:
		if took := at.Sub(left); took > time.Second {
			t.Fatalf("the API request ended %s after the browser left", took)
		}
	case <-time.After(time.Second):
		t.Fatal("the API request was still open a second after the browser left")
	}
	testkit.GoroutinesBackTo(t, 5*time.Second, base)
}

// A Kubernetes API that fails, does not know the pod, or does not answer gives the browser
// `log_error` and 1011; the request of an API that hangs is cancelled.
func TestLogsKubernetesFailures(t *testing.T) {
	hung := make(chan struct{}, 1)
	kf := newKubeFixture(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("pod") {
		case "pod-500":
			http.Error(w, "etcd is on fire", http.StatusInternalServerError)
		case "pod-404":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"pods \"pod-404\" not found"}`)
		default:
			<-r.Context().Done()
			hung <- struct{}{}
		}
	},
		models.Session{ID: "a", Namespace: "ns-o1", UserID: "u", PodName: "pod-500"},
		models.Session{ID: "b", Namespace: "ns-o1", UserID: "u", PodName: "pod-404"},
		models.Session{ID: "c", Namespace: "ns-o1", UserID: "u", PodName: "pod-hang"},
		models.Session{ID: "d", Namespace: "ns-o2", UserID: "u", PodName: "pod-other"},
	)
	m := startKubeManager(t, dbtest.Open(t, "sqlite"), kf.kube, Config{LogsSilence: 300 * time.Millisecond})
	base := logsServer(t, m)
	for pod, want := range map[string]string{
		"pod-500":  "opening the pod's log stream",
		"pod-404":  "does not exist",
		"pod-hang": "did not open the log stream within 300ms",
	} {
		t.Run(pod, func(t *testing.T) {
			browser := dial(t, base, params("org", "o1", "role", "admin", "ns", "ns-o1", "pod", pod))
			if l := readLog(t, browser); l.Type != "log_error" || !strings.Contains(l.Message, want) {
				t.Fatalf("got %+v, want log_error with %q", l, want)
			}
			if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseInternalServerErr {
				t.Fatalf("close %d, want 1011", code)
			}
		})
	}
	select {
	case <-hung:
	case <-time.After(5 * time.Second):
		t.Fatal("the hung API request was not cancelled")
	}
	// Another namespace's pod, and a pod no Session resource names, are refused.
	for _, pod := range []string{"pod-other", "pod-none"} {
		browser := dial(t, base, params("org", "o1", "role", "admin", "ns", "ns-o1", "pod", pod))
		if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.ClosePolicyViolation {
			t.Fatalf("%s: close %d, want 1008", pod, code)
		}
	}
}

// With Kubernetes as the source, the sessions socket lists the Session resources of the
// organization's namespace merged with the database's connections and agent; a user sees its
// own; a resource created later reaches listeners with the next check, read from the
// informer's cache (no list request per check).
func TestSessionsFromKubernetes(t *testing.T) {
	created := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	kf := newKubeFixture(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) },
		models.Session{ID: "k1", Namespace: "ns-o1", UserID: "alice", Template: "firefox", State: models.SessionStateRunning,
			PodName: "pod-k1", URL: "https://k1", CPU: "1", Memory: "2Gi", CreatedAt: created},
		models.Session{ID: "k2", Namespace: "ns-o1", UserID: "bob", State: models.SessionStateHibernated, CreatedAt: created.Add(time.Minute)},
		models.Session{ID: "x1", Namespace: "ns-o2", UserID: "eve", State: models.SessionStateRunning, CreatedAt: created},
	)
	d := dbtest.Open(t, "sqlite")
	ctx := t.Context()
	if err := d.CreateSession(ctx, models.Session{ID: "k1", OrgID: "o1", UserID: "alice", AgentID: "ag-k8s", State: models.SessionStatePending}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddConnection(ctx, models.Connection{ID: "c1", SessionID: "k1", OrgID: "o1", UserID: "alice"}); err != nil {
		t.Fatal(err)
	}
	m := startKubeManager(t, d, kf.kube, Config{SessionsInterval: 50 * time.Millisecond})
	base := sessionsServer(t, m)

	ops := dial(t, base, params("org", "o1", "user", "ops", "role", "operator", "ns", "ns-o1"))
	snap := readUntilType(t, ops, "sessions_update")
	list := snap["sessions"].([]any)
	if len(list) != 2 {
		t.Fatalf("operator sees %v, want k1 and k2", list)
	}
	k1 := list[0].(map[string]any)
	status := k1["status"].(map[string]any)
	if k1["name"] != "k1" || k1["state"] != "running" || k1["activeConnections"] != float64(1) || k1["agent_id"] != "ag-k8s" ||
		k1["namespace"] != "ns-o1" || status["podName"] != "pod-k1" || status["phase"] != "Running" || snap.str("org_id") != "o1" {
		t.Fatalf("k1 = %v (state and pod from Kubernetes, connections and agent from the database)", k1)
	}
	alice := dial(t, base, params("org", "o1", "user", "alice", "role", "user", "ns", "ns-o1"))
	if got := readUntilType(t, alice, "sessions_update")["sessions"].([]any); len(got) != 1 || got[0].(map[string]any)["name"] != "k1" {
		t.Fatalf("alice sees %v, want only k1", got)
	}

	// The informer watches: a new resource shows up without a list per check.
	testkit.Eventually(t, 5*time.Second, "the informer's watch", func() bool { return countKubeActions(kf.dyn, "watch") > 0 })
	lists := countKubeActions(kf.dyn, "list")
	if _, err := kf.dyn.Resource(k8s.SessionGVR).Namespace("ns-o1").Create(ctx,
		k8s.SessionObject(models.Session{ID: "k3", Namespace: "ns-o1", UserID: "bob", State: models.SessionStatePending, CreatedAt: created.Add(time.Hour)}),
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		f := readUntilType(t, ops, "sessions_update")
		if len(f["sessions"].([]any)) == 3 {
			break
		}
	}
	if got := countKubeActions(kf.dyn, "list"); got != lists {
		t.Fatalf("%d list requests during the checks, want none (cache)", got-lists)
	}
}

func countKubeActions(dyn *dynfake.FakeDynamicClient, verb string) int {
	n := 0
	for _, a := range dyn.Actions() {
		if a.GetVerb() == verb {
			n++
		}
	}
	return n
}

// A namespace whose Session resources cannot be listed fails its organization's sockets with
// 1011 within the sync timeout; another organization's namespace is unaffected.
func TestSessionsKubernetesListFails(t *testing.T) {
	kf := newKubeFixture(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) },
		models.Session{ID: "k1", Namespace: "ns-o1", UserID: "alice", State: models.SessionStateRunning})
	kf.dyn.PrependReactor("list", "sessions", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "ns-bad" {
			return true, nil, errors.New("the API server is down")
		}
		return false, nil, nil
	})
	kube := k8s.New(kf.dyn, nil, k8s.Options{Logger: slog.New(slog.DiscardHandler), SyncTimeout: 300 * time.Millisecond})
	t.Cleanup(kube.Close)
	m := startKubeManager(t, dbtest.Open(t, "sqlite"), kube, Config{})
	base := sessionsServer(t, m)
	bad := dial(t, base, params("org", "bad", "user", "ops", "role", "operator", "ns", "ns-bad"))
	if code, _ := expectClose(t, bad, 5*time.Second); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
	good := dial(t, base, params("org", "o1", "user", "ops", "role", "operator", "ns", "ns-o1"))
	if got := readUntilType(t, good, "sessions_update")["sessions"].([]any); len(got) != 1 {
		t.Fatalf("o1 sees %v", got)
	}
}

// Organizations without a namespace of their own share the default namespace, and a Session
// resource there is an organization's by its own word (the streamspace.io/org label), else by
// the database row of its id: each organization lists and reads the logs of its own only, a
// resource that names nobody and has no row is nobody's, and a row cannot take a resource
// that names another organization. Another organization's pod is refused as an unknown one.
func TestKubernetesSharedNamespaceOwnership(t *testing.T) {
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			const shared = DefaultNamespace
			res := func(id, org string) models.Session {
				return models.Session{ID: id, OrgID: org, Namespace: shared, UserID: "u-" + id, PodName: "pod-" + id,
					State: models.SessionStateRunning, CreatedAt: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)}
			}
			kf := newKubeFixture(t, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "2026-11-26T10:00:00Z hello from %s\n", r.PathValue("pod"))
			},
				res("a-label", "acme"), res("g-label", "globex"),
				res("a-row", ""), res("g-row", ""), res("orphan", ""),
				res("g-taken", "globex"), // labelled globex, with a row of acme
				models.Session{ID: "s-own", Namespace: "ns-solo", UserID: "u", PodName: "pod-s-own", State: models.SessionStateRunning},
				models.Session{ID: "s-other", OrgID: "globex", Namespace: "ns-solo", UserID: "u", PodName: "pod-s-other", State: models.SessionStateRunning},
			)
			d := dbtest.Open(t, dialect)
			for id, org := range map[string]string{"a-row": "acme", "g-row": "globex", "g-taken": "acme"} {
				if err := d.CreateSession(t.Context(), models.Session{ID: id, OrgID: org, UserID: "u-" + id, Namespace: shared, State: models.SessionStateRunning}); err != nil {
					t.Fatal(err)
				}
			}
			m := startKubeManager(t, d, kf.kube, Config{})
			sessions := sessionsServer(t, m)
			names := func(org, ns string) []string {
				c := dial(t, sessions, params("org", org, "user", "ops", "role", "operator", "ns", ns))
				var out []string
				for _, s := range readUntilType(t, c, "sessions_update")["sessions"].([]any) {
					out = append(out, s.(map[string]any)["name"].(string))
				}
				_ = c.Close()
				slices.Sort(out)
				return out
			}
			for _, tc := range []struct {
				org, ns string
				want    []string
			}{
				{"acme", "", []string{"a-label", "a-row"}},
				{"globex", "", []string{"g-label", "g-row", "g-taken"}},
				{"initech", "", nil},
				// A namespace named for the organization keeps its unlabelled resources.
				{"solo", "ns-solo", []string{"s-own"}},
			} {
				if got := names(tc.org, tc.ns); !slices.Equal(got, tc.want) {
					t.Errorf("%s sees %v, want %v", tc.org, got, tc.want)
				}
			}

			logs := logsServer(t, m)
			for _, tc := range []struct {
				org, ns, pod string
				ok           bool
			}{
				{"acme", "", "pod-a-label", true},
				{"acme", "", "pod-a-row", true},
				{"acme", "", "pod-g-label", false},
				{"acme", "", "pod-g-row", false},
				{"acme", "", "pod-g-taken", false},
				{"acme", "", "pod-orphan", false},
				{"acme", "", "pod-none", false},
				{"globex", "", "pod-g-taken", true},
				{"solo", "ns-solo", "pod-s-own", true},
				{"solo", "ns-solo", "pod-s-other", false},
			} {
				browser := dial(t, logs, params("org", tc.org, "role", "admin", "ns", tc.ns, "pod", tc.pod))
				if tc.ok {
					if l := readLog(t, browser); l.Type != "log" || l.Line != "hello from "+tc.pod {
						t.Errorf("%s reading %s: %+v", tc.org, tc.pod, l)
					}
					continue
				}
				if code, reason := expectClose(t, browser, 5*time.Second); code != websocket.ClosePolicyViolation || reason != "pod not found" {
					t.Errorf("%s reading %s: close %d %q, want 1008 \"pod not found\" as for an unknown pod", tc.org, tc.pod, code, reason)
				}
			}
			for pod, want := range map[string]error{"pod-g-label": ErrPodNotFound, "pod-orphan": ErrPodNotFound, "pod-a-row": nil} {
				_, err := m.ResolveLogs(t.Context(), &OrgContext{OrgID: "acme", Role: "operator"}, shared, pod)
				if !errors.Is(err, want) {
					t.Errorf("ResolveLogs(acme, %s/%s) = %v, want %v", shared, pod, err, want)
				}
			}
		})
	}
}
