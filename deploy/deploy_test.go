package deploy_test

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/streamspace/streamspace-realtime/internal/server"
)

// serverReplicas is how many replicas the server runs: enough that one can be drained or lost
// while two serve.
const serverReplicas = 3

// TestKustomizationListsEveryManifest checks that kubectl apply -k applies every manifest, and
// no example, in the namespace it creates.
func TestKustomizationListsEveryManifest(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	k := m.kustomization
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: apiVersion %q, kind %q; want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	var want []string
	for _, f := range m.files {
		// Example files hold placeholders that must never replace the real objects.
		if f != "kustomization.yaml" && !strings.Contains(f, ".example.") {
			want = append(want, f)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Errorf("kustomization.yaml lists a resource twice: %v", k.Resources)
	}
	for _, r := range got {
		if !slices.Contains(want, r) {
			t.Errorf("kustomization.yaml lists %q, which is not a manifest in %s (example files stay out)", r, manifestDir)
		}
	}
	for _, f := range want {
		if !slices.Contains(got, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	if len(m.namespaces) != 1 {
		t.Fatalf("%d Namespace objects; want 1", len(m.namespaces))
	}
	ns := m.namespaces[0].Name
	if k.Namespace != ns {
		t.Errorf("kustomization.yaml namespace %q; want %q, the Namespace it creates", k.Namespace, ns)
	}
	for _, o := range m.objects {
		if o.kind != "Namespace" && o.meta.GetNamespace() != ns {
			t.Errorf("%s: %s %s is in namespace %q; want %q, so that kubectl apply -f works as well", o.file, o.kind, o.meta.GetName(), o.meta.GetNamespace(), ns)
		}
	}
	for _, o := range m.objects {
		if o.kind == "Secret" && !strings.Contains(o.file, ".example.") {
			t.Errorf("%s: Secret %s outside an example file; secrets are created in the cluster, not kept here", o.file, o.meta.GetName())
		}
	}
}

// TestServerDeployment checks what the server relies on: three replicas behind a Service and
// a disruption budget, probes on its port, its replica name from the downward API, settings it
// knows with values it accepts, and a drain that ends within the grace period.
func TestServerDeployment(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	w, c := m.server(t)
	spec := &w.pod.Spec
	if w.replicas != serverReplicas {
		t.Errorf("%v: %d replicas; want %d", w, w.replicas, serverReplicas)
	}

	var services []*corev1.Service
	for _, s := range m.services {
		if slices.Contains(m.selecting(labels.SelectorFromSet(s.Spec.Selector)), w) {
			services = append(services, s)
		}
	}
	if len(services) == 0 {
		t.Errorf("no Service selects the pods of %v", w)
	}
	var budgets int
	for _, b := range m.budgets {
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err != nil || !slices.Contains(m.selecting(sel), w) {
			continue
		}
		budgets++
		down, err := disruptionsAllowed(b, w.replicas)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", b.Name, err)
		} else if down < 1 || w.replicas-down < 2 {
			t.Errorf("PodDisruptionBudget %s allows %d of %d replicas down; want at least one, leaving at least two", b.Name, down, w.replicas)
		}
	}
	if budgets != 1 {
		t.Errorf("%d PodDisruptionBudgets select the pods of %v; want 1", budgets, w)
	}
	if !spreadsOverNodes(spec, w.pod.Labels) {
		t.Errorf("%v: no topologySpreadConstraint or podAntiAffinity over kubernetes.io/hostname that selects its pods", w)
	}

	// The server must accept its configuration, secrets taken from the example Secret
	// (TestWorkloads checks the names and how they resolve).
	env, _ := resolveEnv(c, m.secretValues())
	if len(c.Command) != 0 {
		t.Errorf("%v: command %q replaces the image's entrypoint, the binary", w, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("%v: args %q; want serve first", w, c.Args)
	}
	cfg, err := server.LoadConfig(c.Args[1:], func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("%v: the server refuses its configuration: %v", w, err)
	}
	if cfg.Replica != podName {
		t.Errorf("%v: replica name %q; want the pod's name from the downward API (fieldRef metadata.name)", w, cfg.Replica)
	}
	if e := findEnv(c, "STREAMSPACE_REPLICA"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("%v: STREAMSPACE_REPLICA does not come from fieldRef metadata.name", w)
	}
	if cfg.RedisURL == "" {
		t.Errorf("%v: no STREAMSPACE_REDIS_URL; %d replicas need Redis to share events and agents", w, w.replicas)
	}
	checkReaches(t, m, "STREAMSPACE_DATABASE_URL", cfg.DatabaseURL, "postgres")
	checkReaches(t, m, "STREAMSPACE_REDIS_URL", cfg.RedisURL, "redis")
	checkDatabaseCredentials(t, m, cfg.DatabaseURL)

	// Probes on the port the server listens on.
	_, addrPort, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", cfg.Addr, err)
	}
	listen, _ := strconv.Atoi(addrPort)
	checkPeerLink(t, m, w, c, cfg, int32(listen))
	checkHTTPProbe(t, w, c, "readinessProbe", c.ReadinessProbe, "/readyz", listen)
	checkHTTPProbe(t, w, c, "livenessProbe", c.LivenessProbe, "/healthz", listen)
	if c.StartupProbe != nil {
		checkHTTPProbe(t, w, c, "startupProbe", c.StartupProbe, "/healthz", listen)
	}
	for _, s := range services {
		for _, p := range s.Spec.Ports {
			if n, ok := containerPort(c, p.TargetPort); !ok || n != int32(listen) {
				t.Errorf("Service %s port %d goes to %v, not the server's port %d", s.Name, p.Port, p.TargetPort.String(), listen)
			}
		}
	}

	// Shutdown: the preStop pause and the drain end before SIGKILL.
	grace := 30 * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	var pause time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil {
		if l.PreStop.Sleep == nil {
			t.Errorf("%v: a preStop hook other than sleep (the image has no shell)", w)
		} else {
			pause = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if pause+cfg.ShutdownTimeout >= grace {
		t.Errorf("%v: preStop %v + STREAMSPACE_SHUTDOWN_TIMEOUT %v is not below terminationGracePeriodSeconds %v", w, pause, cfg.ShutdownTimeout, grace)
	}

	// The container: read-only and without a service account token unless it talks to the API.
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%v: the root filesystem is not read-only", w)
	}
	wantToken := cfg.SessionSource == server.KubernetesSource
	if got := mountsToken(m, spec); got != wantToken {
		t.Errorf("%v: service account token mounted %v; want %v with session source %q", w, got, wantToken, cfg.SessionSource)
	}
}

// TestWorkloads checks every Deployment and StatefulSet: selectors, pinned images, non-root
// containers without privilege escalation, probes and resources, secrets the example Secret
// defines, and Services that reach declared ports.
func TestWorkloads(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	secrets := m.secretValues()
	settings := serverSettings(t)
	for _, w := range m.workloads() {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
			t.Errorf("%v: selector %v does not match its pod labels %v (%v)", w, w.selector, w.pod.Labels, err)
		}
		if got := m.selecting(sel); len(got) != 1 {
			t.Errorf("%v: its selector matches the pods of %v", w, got)
		}
		spec := &w.pod.Spec
		if name := spec.ServiceAccountName; name != "" && !slices.ContainsFunc(m.accounts, func(a *corev1.ServiceAccount) bool { return a.Name == name }) {
			t.Errorf("%v: service account %s is not in %s", w, name, manifestDir)
		}
		if len(spec.InitContainers) != 0 {
			t.Errorf("%v: init containers are not checked by this test", w)
		}
		for i := range spec.Containers {
			c := &spec.Containers[i]
			where := fmt.Sprintf("%v, container %s", w, c.Name)
			if err := pinned(c.Image); err != nil {
				t.Errorf("%s: image %q: %v", where, c.Image, err)
			}
			checkSecurity(t, where, spec, c)
			if c.ReadinessProbe == nil {
				t.Errorf("%s: no readinessProbe", where)
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if port, ok := probePort(p); ok {
					if _, declared := containerPort(c, port); !declared {
						t.Errorf("%s: a probe on port %s, which the container does not declare", where, port.String())
					}
				}
			}
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("%s: want cpu and memory requests and a memory limit, have %v / %v", where, r.Requests, r.Limits)
			}
			env, errs := resolveEnv(c, secrets)
			for _, err := range errs {
				t.Errorf("%s: %v", where, err)
			}
			for name := range env {
				if strings.HasPrefix(name, "STREAMSPACE_") && !settings[name] {
					t.Errorf("%s: %s is not a setting of the server", where, name)
				}
			}
		}
	}
	for _, s := range m.services {
		ws := m.selecting(labels.SelectorFromSet(s.Spec.Selector))
		if len(ws) != 1 {
			t.Errorf("Service %s selects the pods of %v; want one workload", s.Name, ws)
			continue
		}
		for _, p := range s.Spec.Ports {
			if !slices.ContainsFunc(ws[0].pod.Spec.Containers, func(c corev1.Container) bool {
				_, ok := containerPort(&c, p.TargetPort)
				return ok
			}) {
				t.Errorf("Service %s: target port %s is not a port of %v", s.Name, p.TargetPort.String(), ws[0])
			}
		}
	}
	for _, s := range m.statefulSets {
		if !slices.ContainsFunc(m.services, func(svc *corev1.Service) bool {
			return svc.Name == s.Spec.ServiceName && svc.Spec.ClusterIP == corev1.ClusterIPNone
		}) {
			t.Errorf("StatefulSet %s: serviceName %q is not a headless Service here", s.Name, s.Spec.ServiceName)
		}
	}
}

// TestSecretCreationDocumented checks that README.md's kubectl create secret line sets every
// key of the example Secret, so that following it gives pods that start.
func TestSecretCreationDocumented(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	if len(m.secrets) == 0 {
		t.Fatalf("no example Secret in %s", manifestDir)
	}
	for _, s := range m.secrets {
		if !strings.Contains(string(readme), "create secret generic "+s.Name) {
			t.Errorf("README.md does not show how to create the Secret %s", s.Name)
		}
		for key := range m.secretValues()[s.Name] {
			if !strings.Contains(string(readme), "--from-literal="+key+"=") {
				t.Errorf("README.md: the kubectl create secret line does not set %s", key)
			}
		}
	}
}

// serverSettings returns the environment variables the server reads: LoadConfig asks getenv
// for each of them (the call's error, secrets missing, does not matter here).
func serverSettings(t *testing.T) map[string]bool {
	t.Helper()
	names := make(map[string]bool)
	_, _ = server.LoadConfig(nil, func(k string) string { names[k] = true; return "" })
	if !names["STREAMSPACE_REPLICA"] {
		t.Fatalf("LoadConfig did not ask for STREAMSPACE_REPLICA; the settings cannot be enumerated this way (got %d names)", len(names))
	}
	return names
}

// checkReaches checks that a URL has the scheme and names a Service here, on one of its ports.
func checkReaches(t *testing.T, m *manifests, setting, rawURL, scheme string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Errorf("%s: %v", setting, err)
		return
	}
	if u.Scheme != scheme {
		t.Errorf("%s: scheme %q; want %q", setting, u.Scheme, scheme)
	}
	for _, s := range m.services {
		if s.Name != u.Hostname() {
			continue
		}
		if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == u.Port() }) {
			t.Errorf("%s: port %q is not a port of Service %s", setting, u.Port(), s.Name)
		}
		return
	}
	t.Errorf("%s: host %q is not a Service in %s", setting, u.Hostname(), manifestDir)
}

// checkDatabaseCredentials checks that the database URL names the user, password and database
// the PostgreSQL container is initialized with.
func checkDatabaseCredentials(t *testing.T, m *manifests, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		return // reported by checkReaches
	}
	for _, w := range m.workloads() {
		for i := range w.pod.Spec.Containers {
			c := &w.pod.Spec.Containers[i]
			if findEnv(c, "POSTGRES_PASSWORD") == nil || findEnv(c, "POSTGRES_DB") == nil {
				continue
			}
			pg, _ := resolveEnv(c, m.secretValues())
			password, _ := u.User.Password()
			if u.User.Username() != pg["POSTGRES_USER"] || password != pg["POSTGRES_PASSWORD"] || strings.TrimPrefix(u.Path, "/") != pg["POSTGRES_DB"] {
				t.Errorf("STREAMSPACE_DATABASE_URL: user %q, database %q (and its password) differ from %v's POSTGRES_USER %q, POSTGRES_DB %q, POSTGRES_PASSWORD",
					u.User.Username(), strings.TrimPrefix(u.Path, "/"), w, pg["POSTGRES_USER"], pg["POSTGRES_DB"])
			}
			return
		}
	}
	t.Errorf("no PostgreSQL container (with POSTGRES_PASSWORD and POSTGRES_DB) in %s", manifestDir)
}

func checkHTTPProbe(t *testing.T, w workload, c *corev1.Container, kind string, p *corev1.Probe, path string, listen int) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%v: no %s with httpGet %s", w, kind, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%v: %s on %s; want %s", w, kind, p.HTTPGet.Path, path)
	}
	if n, ok := containerPort(c, p.HTTPGet.Port); !ok || int(n) != listen {
		t.Errorf("%v: %s on port %s; want a declared port that is the server's, %d", w, kind, p.HTTPGet.Port.String(), listen)
	}
}

// checkSecurity checks the container's effective security context: non-root, no privilege
// escalation, no capabilities, a seccomp profile.
func checkSecurity(t *testing.T, where string, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	nonRoot := first(csc.RunAsNonRoot, psc.RunAsNonRoot)
	if nonRoot == nil || !*nonRoot {
		t.Errorf("%s: runAsNonRoot is not true", where)
	}
	if uid := first(csc.RunAsUser, psc.RunAsUser); uid == nil || *uid == 0 {
		t.Errorf("%s: runAsUser is not set to a user other than root", where)
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) != 0 {
		t.Errorf("%s: capabilities must drop ALL and add none", where)
	}
	if sp := first(csc.SeccompProfile, psc.SeccompProfile); sp == nil || sp.Type == corev1.SeccompProfileTypeUnconfined {
		t.Errorf("%s: no seccomp profile (want RuntimeDefault)", where)
	}
}

// first returns the first non-nil pointer: the container's setting over the pod's.
func first[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func disruptionsAllowed(b *policyv1.PodDisruptionBudget, replicas int32) (int32, error) {
	switch s := b.Spec; {
	case s.MaxUnavailable != nil && s.MinAvailable != nil:
		return 0, errors.New("both minAvailable and maxUnavailable")
	case s.MaxUnavailable != nil && s.MaxUnavailable.Type == intstr.Int:
		return s.MaxUnavailable.IntVal, nil
	case s.MinAvailable != nil && s.MinAvailable.Type == intstr.Int:
		return replicas - s.MinAvailable.IntVal, nil
	}
	return 0, errors.New("want minAvailable or maxUnavailable as a number of pods")
}

func spreadsOverNodes(spec *corev1.PodSpec, podLabels map[string]string) bool {
	matches := func(s *metav1.LabelSelector) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		return err == nil && !sel.Empty() && sel.Matches(labels.Set(podLabels))
	}
	for _, c := range spec.TopologySpreadConstraints {
		if c.TopologyKey == corev1.LabelHostname && matches(c.LabelSelector) {
			return true
		}
	}
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if term.TopologyKey == corev1.LabelHostname && matches(term.LabelSelector) {
				return true
			}
		}
		for _, wt := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if wt.PodAffinityTerm.TopologyKey == corev1.LabelHostname && matches(wt.PodAffinityTerm.LabelSelector) {
				return true
			}
		}
	}
	return false
}

// mountsToken reports whether the pod gets a service account token: the pod's setting wins
// over its service account's, and both default to true.
func mountsToken(m *manifests, spec *corev1.PodSpec) bool {
	if spec.AutomountServiceAccountToken != nil {
		return *spec.AutomountServiceAccountToken
	}
	for _, a := range m.accounts {
		if a.Name == spec.ServiceAccountName && a.AutomountServiceAccountToken != nil {
			return *a.AutomountServiceAccountToken
		}
	}
	return true
}

// checkPeerLink checks the link between replicas: its port declared as "peer", the pod's IP
// (status.podIP) as the address advertised, and a NetworkPolicy that admits the peer port from
// the server's own pods only, leaving the HTTP port open to every client.
func checkPeerLink(t *testing.T, m *manifests, w workload, c *corev1.Container, cfg server.Config, listen int32) {
	t.Helper()
	_, p, err := net.SplitHostPort(cfg.PeerAddr)
	if err != nil {
		t.Fatalf("%v: peer address %q: %v", w, cfg.PeerAddr, err)
	}
	n, _ := strconv.Atoi(p)
	peerPort := int32(n)
	if got, ok := containerPort(c, intstr.FromString("peer")); !ok || got != peerPort {
		t.Errorf("%v: container port \"peer\" is %d (declared %v); the server listens for its peers on %d", w, got, ok, peerPort)
	}
	if want := net.JoinHostPort(podIP, p); cfg.PeerAdvertiseAddr != want {
		t.Errorf("%v: the peer address advertised is %q; want %q, the pod's IP (POD_IP from fieldRef status.podIP)", w, cfg.PeerAdvertiseAddr, want)
	}
	if e := findEnv(c, "POD_IP"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("%v: POD_IP does not come from fieldRef status.podIP", w)
	}

	covers := func(rule networkingv1.NetworkPolicyIngressRule, port int32) bool {
		if len(rule.Ports) == 0 {
			return true
		}
		for _, np := range rule.Ports {
			if np.Port == nil {
				return true
			}
			first, ok := containerPort(c, *np.Port)
			if !ok {
				continue
			}
			last := first
			if np.EndPort != nil {
				last = *np.EndPort
			}
			if port >= first && port <= last {
				return true
			}
		}
		return false
	}
	var policies, peerRules, openHTTP int
	for _, np := range m.policies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(w.pod.Labels)) {
			continue
		}
		if len(np.Spec.PolicyTypes) != 0 && !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			continue
		}
		policies++
		for i, rule := range np.Spec.Ingress {
			if covers(rule, listen) && len(rule.From) == 0 {
				openHTTP++
			}
			if !covers(rule, peerPort) {
				continue
			}
			peerRules++
			if len(rule.From) == 0 {
				t.Errorf("NetworkPolicy %s, ingress rule %d: admits the peer port from anywhere", np.Name, i)
			}
			for _, from := range rule.From {
				if from.IPBlock != nil || from.NamespaceSelector != nil || from.PodSelector == nil {
					t.Errorf("NetworkPolicy %s, ingress rule %d: admits the peer port from %+v; want the server's pods only", np.Name, i, from)
					continue
				}
				sel, err := metav1.LabelSelectorAsSelector(from.PodSelector)
				if got := m.selecting(sel); err != nil || len(got) != 1 || got[0].name != w.name || got[0].kind != w.kind {
					t.Errorf("NetworkPolicy %s, ingress rule %d: admits the peer port from the pods of %v; want those of %v only", np.Name, i, got, w)
				}
			}
		}
	}
	switch {
	case policies == 0:
		t.Errorf("no NetworkPolicy selects the pods of %v: any pod may try their peer port", w)
	case peerRules == 0:
		t.Errorf("the NetworkPolicies of %v admit no one on the peer port: replicas cannot relay to each other", w)
	case openHTTP == 0:
		t.Errorf("the NetworkPolicies of %v do not leave the HTTP port %d open to browsers and agents", w, listen)
	}
}
