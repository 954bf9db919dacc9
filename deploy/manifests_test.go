package deploy_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	manifestDir = "kubernetes"
	// serverName names the server's Deployment, container, Service, PodDisruptionBudget and
	// ServiceAccount.
	serverName = "streamspace-realtime"
	// podName stands for what the downward API's metadata.name gives a replica.
	podName = "streamspace-realtime-7c9d5b6f4-x2k8p"
	// podIP stands for what the downward API's status.podIP gives a replica.
	podIP = "10.244.1.7"
)

// manifests is every object in deploy/kubernetes, each decoded into its Kubernetes type.
type manifests struct {
	files         []string // base names of the YAML files, kustomization.yaml included
	kustomization kustomization
	namespaces    []*corev1.Namespace
	deployments   []*appsv1.Deployment
	statefulSets  []*appsv1.StatefulSet
	services      []*corev1.Service
	accounts      []*corev1.ServiceAccount
	budgets       []*policyv1.PodDisruptionBudget
	policies      []*networkingv1.NetworkPolicy
	secrets       []*corev1.Secret
	objects       []object
}

// object is what checks across kinds need of a manifest.
type object struct {
	file, kind string
	meta       metav1.Object
}

// kustomization is the part of kustomization.yaml this test reads; kustomize has many more
// fields, so it is not decoded strictly.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// workload is a Deployment or a StatefulSet, for the checks they share.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
}

func (w workload) String() string { return w.kind + " " + w.name }

// docSeparator splits a file of several YAML documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadManifests reads every YAML document of deploy/kubernetes, failing the test on any
// document that does not decode strictly into the type of its kind.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	entries, err := os.ReadDir(manifestDir)
	if err != nil {
		t.Fatalf("read %s: %v", manifestDir, err)
	}
	m := &manifests{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || (filepath.Ext(name) != ".yaml" && filepath.Ext(name) != ".yml") {
			continue
		}
		m.files = append(m.files, name)
		data, err := os.ReadFile(filepath.Join(manifestDir, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if name == "kustomization.yaml" {
			if err := yaml.Unmarshal(data, &m.kustomization); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		for i, doc := range docSeparator.Split(string(data), -1) {
			if !hasContent(doc) {
				continue
			}
			if err := m.add(name, []byte(doc)); err != nil {
				t.Fatalf("%s, document %d: %v", name, i+1, err)
			}
		}
	}
	return m
}

// hasContent reports whether a YAML document holds more than blank lines and comments.
func hasContent(doc string) bool {
	for line := range strings.Lines(doc) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return true
		}
	}
	return false
}

// add decodes one document by its apiVersion and kind. A kind the test has no type for fails,
// so that nothing is applied unchecked.
func (m *manifests) add(file string, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("read apiVersion and kind: %w", err)
	}
	var (
		meta metav1.Object
		err  error
	)
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		meta, err = decode(doc, &m.namespaces)
	case "v1 Service":
		meta, err = decode(doc, &m.services)
	case "v1 ServiceAccount":
		meta, err = decode(doc, &m.accounts)
	case "v1 Secret":
		meta, err = decode(doc, &m.secrets)
	case "apps/v1 Deployment":
		meta, err = decode(doc, &m.deployments)
	case "apps/v1 StatefulSet":
		meta, err = decode(doc, &m.statefulSets)
	case "policy/v1 PodDisruptionBudget":
		meta, err = decode(doc, &m.budgets)
	case "networking.k8s.io/v1 NetworkPolicy":
		meta, err = decode(doc, &m.policies)
	default:
		return fmt.Errorf("%q %q: not a kind this test checks (add its type to manifests.add)", tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	m.objects = append(m.objects, object{file: file, kind: tm.Kind, meta: meta})
	return nil
}

// decode unmarshals doc strictly (unknown or duplicate fields fail) and appends it to list.
func decode[T any, PT interface {
	*T
	metav1.Object
}](doc []byte, list *[]PT) (metav1.Object, error) {
	v := PT(new(T))
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return nil, err
	}
	*list = append(*list, v)
	return v, nil
}

func (m *manifests) workloads() []workload {
	var ws []workload
	for _, d := range m.deployments {
		ws = append(ws, workload{"Deployment", d.Name, replicas(d.Spec.Replicas), d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range m.statefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, replicas(s.Spec.Replicas), s.Spec.Selector, &s.Spec.Template})
	}
	return ws
}

func replicas(n *int32) int32 {
	if n == nil {
		return 1
	}
	return *n
}

// server returns the server's Deployment and its container.
func (m *manifests) server(t *testing.T) (workload, *corev1.Container) {
	t.Helper()
	for _, w := range m.workloads() {
		if w.kind == "Deployment" && w.name == serverName {
			for i := range w.pod.Spec.Containers {
				if c := &w.pod.Spec.Containers[i]; c.Name == serverName {
					return w, c
				}
			}
			t.Fatalf("%v has no container %s", w, serverName)
		}
	}
	t.Fatalf("no Deployment %s in %s", serverName, manifestDir)
	return workload{}, nil
}

// secretValues returns the example Secrets' values by Secret name and key.
func (m *manifests) secretValues() map[string]map[string]string {
	out := make(map[string]map[string]string)
	for _, s := range m.secrets {
		values := make(map[string]string)
		for k, v := range s.Data {
			values[k] = string(v)
		}
		for k, v := range s.StringData {
			values[k] = v
		}
		out[s.Name] = values
	}
	return out
}

// selecting returns the workloads whose pods sel matches.
func (m *manifests) selecting(sel labels.Selector) []workload {
	var ws []workload
	for _, w := range m.workloads() {
		if !sel.Empty() && sel.Matches(labels.Set(w.pod.Labels)) {
			ws = append(ws, w)
		}
	}
	return ws
}

// resolveEnv gives a container's environment as the kubelet would: secrets from the example
// Secrets, metadata.name as podName, status.podIP as podIP, and $(NAME) replaced by earlier variables. It also returns
// what would not resolve in a cluster (TestWorkloads reports it).
func resolveEnv(c *corev1.Container, secrets map[string]map[string]string) (map[string]string, []error) {
	var errs []error
	if len(c.EnvFrom) != 0 {
		errs = append(errs, errors.New("envFrom hides variable names from this test; list them under env"))
	}
	env := make(map[string]string)
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			errs = append(errs, fmt.Errorf("%s is set twice", e.Name))
		}
		switch from := e.ValueFrom; {
		case from == nil:
			v, undefined := expand(e.Value, env)
			for _, name := range undefined {
				errs = append(errs, fmt.Errorf("%s refers to $(%s), which no earlier variable defines", e.Name, name))
			}
			env[e.Name] = v
		case from.FieldRef != nil && from.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case from.FieldRef != nil && from.FieldRef.FieldPath == "status.podIP":
			env[e.Name] = podIP
		case from.SecretKeyRef != nil:
			ref := from.SecretKeyRef
			v, ok := secrets[ref.Name][ref.Key]
			if !ok {
				errs = append(errs, fmt.Errorf("%s comes from key %q of Secret %q, which the example Secret does not define", e.Name, ref.Key, ref.Name))
			}
			env[e.Name] = v
		default:
			errs = append(errs, fmt.Errorf("%s has a source this test does not resolve: %+v", e.Name, from))
		}
	}
	return env, errs
}

// expand replaces $(NAME) by the value of an earlier variable and $$ by $, as the kubelet does.
// It returns the names referred to that are not defined, which the kubelet leaves as written.
func expand(s string, env map[string]string) (string, []string) {
	var (
		b         strings.Builder
		undefined []string
	)
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String(), undefined
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				undefined = append(undefined, name)
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), undefined
}

func findEnv(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func probePort(p *corev1.Probe) (intstr.IntOrString, bool) {
	switch {
	case p == nil:
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, true
	case p.GRPC != nil:
		return intstr.FromInt32(p.GRPC.Port), true
	}
	return intstr.IntOrString{}, false
}

// containerPort resolves a port by name or number among the container's declared ports.
func containerPort(c *corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// pinned accepts an image with a tag other than latest, or a digest.
func pinned(image string) error {
	if _, digest, ok := strings.Cut(image, "@"); ok {
		if !strings.HasPrefix(digest, "sha256:") {
			return fmt.Errorf("digest %q is not sha256", digest)
		}
		return nil
	}
	name := image[strings.LastIndexByte(image, '/')+1:]
	_, tag, ok := strings.Cut(name, ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("no tag, which means latest")
	case tag == "latest":
		return fmt.Errorf("tag latest")
	}
	return nil
}
