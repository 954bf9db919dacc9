package websocket

import (
	"context"
	"io"
	"reflect"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// ErrNotFound is what an embedder's store wraps for a row that does not exist: a session,
// organization, share, agent or command. It is db.ErrNotFound, so this module's stores and an
// embedder's are told apart by nothing; any other error is taken for a store that could not
// answer (a refusal with 1011, a retry, a logged warning), never for "no such row".
var ErrNotFound = db.ErrNotFound

// SessionSource tells which sessions exist in a namespace and their state: the Session
// resources of a Kubernetes cluster. *k8s.Client implements it (k8s.New over a clientset and
// dynamic client the caller has, or k8s.NewForConfig over its rest.Config); this package
// names none of package k8s's types, so a program that embeds it without Kubernetes does not
// link client-go.
//
// With a source the Manager lists what the source says exists, merged with the SessionStore's
// rows of the same ids for what only the control plane knows (browser connections, activity,
// the agent); without one the store's rows are the list. A source that also implements
// PodLogSource streams the logs sockets' pod logs (else the agent running the session relays
// them). ListSessions is called every Config.SessionsInterval for each organization with
// listeners, so it should answer from a cache.
type SessionSource interface {
	ListSessions(ctx context.Context, namespace string) ([]models.Session, error)
}

// PodLogSource streams a pod's log for the logs sockets. *k8s.Client implements it.
//
// PodLogs follows the log (the stream stays open for new lines until ctx ends or the stream is
// closed) and starts tailLines lines back. Each line is text ending in '\n', preferably
// prefixed with its RFC 3339 time and a space, as the Kubernetes API sends it with
// timestamps=true (a line without one is sent with the time it was read). A pod that does not
// exist is an error wrapping ErrPodNotFound (k8s.ErrPodNotFound is the same error). The
// Manager closes the stream when the browser leaves.
type PodLogSource interface {
	PodLogs(ctx context.Context, namespace, pod string, tailLines int64) (io.ReadCloser, error)
}

// KubernetesClient is a Kubernetes cluster as both the session source and the pod log
// source: what NewManager and NewManagerWithConfig take. *k8s.Client implements it, so a
// caller passes one as before. The parameter is an interface so that this package does not
// import package k8s, whose client-go initializes its API machinery in every process that
// links it (about half of an idle server's memory, docs/ARCHITECTURE.md). nil, or a nil
// pointer, means the database is the session source and agents relay pod logs.
type KubernetesClient interface {
	SessionSource
	PodLogSource
}

// isNil reports whether v is nil or an interface holding a nil pointer (or map, func, chan,
// slice): a (*db.Database)(nil) or (*k8s.Client)(nil) given where an interface is expected
// must mean "none", not a value whose methods panic.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Chan, reflect.Slice, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
