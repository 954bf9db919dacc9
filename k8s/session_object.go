package k8s

import (
	"log/slog"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/cache"

	"github.com/streamspace/streamspace-realtime/models"
)

// OrgKey is the label, or annotation, of a Session resource that names the
// organization owning it, next to StreamSpace's streamspace.io/user and
// streamspace.io/template labels. The label wins when both are set; the
// annotation is for organization ids a label value cannot hold.
const OrgKey = "streamspace.io/org"

// ResourceOrg is the organization a Session resource names with OrgKey, its
// label or else its annotation; "" when it names none.
func ResourceOrg(u *unstructured.Unstructured) string {
	if org := u.GetLabels()[OrgKey]; org != "" {
		return org
	}
	return u.GetAnnotations()[OrgKey]
}

// sessionFromObject maps a Session custom resource to a models.Session. It
// reads every field through the unstructured accessors, so a field of the
// wrong shape is left empty instead of failing the list or panicking. OrgID
// is the organization the resource names (ResourceOrg), "" when it names
// none: whether such a resource is an organization's is the caller's rule.
func sessionFromObject(u *unstructured.Unstructured) models.Session {
	obj := u.Object
	str := func(fields ...string) string {
		s, _, _ := unstructured.NestedString(obj, fields...)
		return s
	}
	s := models.Session{
		ID:        u.GetName(),
		Namespace: u.GetNamespace(),
		UserID:    str("spec", "user"),
		Template:  str("spec", "template"),
		PodName:   str("status", "podName"),
		URL:       str("status", "url"),
		CPU:       str("spec", "resources", "cpu"),
		Memory:    str("spec", "resources", "memory"),
		Platform:  models.PlatformKubernetes,
		CreatedAt: u.GetCreationTimestamp().UTC(),
		OrgID:     ResourceOrg(u),
	}
	// The phase is what the controller observed; spec.state is only what was
	// asked for, the best we have before the controller first reports.
	if phase := str("status", "phase"); phase != "" {
		s.State = strings.ToLower(phase)
	} else {
		s.State = strings.ToLower(str("spec", "state"))
	}
	s.IdleTimeoutSeconds, _ = idleTimeoutSeconds(obj)
	if t, err := time.Parse(time.RFC3339Nano, str("status", "lastActivity")); err == nil {
		s.LastActivity = t.UTC()
	}
	return s
}

// idleTimeoutSeconds reads spec.idleTimeout, a Go duration ("30m") or a
// number of seconds (1800 or "1800"). ok is false when the field is present
// but unusable; the timeout is then 0, as for a session without one.
func idleTimeoutSeconds(obj map[string]any) (secs int64, ok bool) {
	v, found, err := unstructured.NestedFieldNoCopy(obj, "spec", "idleTimeout")
	if err != nil {
		return 0, false
	}
	if !found || v == nil {
		return 0, true
	}
	switch x := v.(type) {
	case string:
		if x == "" {
			return 0, true
		}
		if n, err := strconv.ParseInt(x, 10, 64); err == nil && n >= 0 {
			return n, true
		}
		if d, err := time.ParseDuration(x); err == nil && d >= 0 {
			return int64(d / time.Second), true
		}
	case int64:
		if x >= 0 {
			return x, true
		}
	case float64:
		if x >= 0 && x == math.Trunc(x) && x <= math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// idleTimeoutLogger notes an unusable spec.idleTimeout once per object: on
// add, and on update only when the value changed, so resyncs stay quiet.
func idleTimeoutLogger(log *slog.Logger) cache.ResourceEventHandlerFuncs {
	check := func(obj any) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		if _, ok := idleTimeoutSeconds(u.Object); !ok {
			v, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "idleTimeout")
			log.Debug("k8s: session has an invalid spec.idleTimeout; using none",
				"session", u.GetName(), "idleTimeout", v)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: check,
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*unstructured.Unstructured)
			n, ok2 := newObj.(*unstructured.Unstructured)
			if ok1 && ok2 {
				ov, _, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "idleTimeout")
				nv, _, _ := unstructured.NestedFieldNoCopy(n.Object, "spec", "idleTimeout")
				if reflect.DeepEqual(ov, nv) { // values may be maps: == could panic
					return
				}
			}
			check(newObj)
		},
	}
}

// SessionObject builds the Session custom resource for s, the inverse of the
// mapping ListSessions applies, for tests and for callers that create
// sessions. Times are written as Kubernetes stores them: creationTimestamp to
// the second, lastActivity in RFC 3339 with nanoseconds. A non-empty OrgID is
// written as the OrgKey label, or as its annotation when it is not a valid
// label value.
func SessionObject(s models.Session) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(SessionGVR.GroupVersion().String())
	u.SetKind("Session")
	u.SetName(s.ID)
	u.SetNamespace(s.Namespace)
	if s.OrgID != "" {
		if len(validation.IsValidLabelValue(s.OrgID)) == 0 {
			u.SetLabels(map[string]string{OrgKey: s.OrgID})
		} else {
			u.SetAnnotations(map[string]string{OrgKey: s.OrgID})
		}
	}
	if !s.CreatedAt.IsZero() {
		u.SetCreationTimestamp(metav1.NewTime(s.CreatedAt))
	}

	spec := map[string]any{
		"user":     s.UserID,
		"template": s.Template,
		"state":    desiredState(s.State),
	}
	resources := map[string]any{}
	if s.CPU != "" {
		resources["cpu"] = s.CPU
	}
	if s.Memory != "" {
		resources["memory"] = s.Memory
	}
	if len(resources) > 0 {
		spec["resources"] = resources
	}
	if s.IdleTimeoutSeconds > 0 {
		spec["idleTimeout"] = (time.Duration(s.IdleTimeoutSeconds) * time.Second).String()
	}
	u.Object["spec"] = spec

	status := map[string]any{}
	if s.State != "" {
		status["phase"] = strings.ToUpper(s.State[:1]) + s.State[1:]
	}
	if s.PodName != "" {
		status["podName"] = s.PodName
	}
	if s.URL != "" {
		status["url"] = s.URL
	}
	if !s.LastActivity.IsZero() {
		status["lastActivity"] = s.LastActivity.UTC().Format(time.RFC3339Nano)
	}
	if len(status) > 0 {
		u.Object["status"] = status
	}
	return u
}

// desiredState is the spec.state matching an observed state: the CRD only
// accepts running, hibernated and terminated as wishes.
func desiredState(state string) string {
	switch state {
	case models.SessionStateHibernated, models.SessionStateTerminated:
		return state
	default:
		return models.SessionStateRunning
	}
}
