package k8s

import "errors"

var (
	// ErrClosed is returned by ListSessions after Close.
	ErrClosed = errors.New("k8s: client closed")
	// ErrNotSynced means a namespace's session cache did not complete its
	// first list within Options.SyncTimeout; the next call starts over.
	ErrNotSynced = errors.New("k8s: session cache not synced")
	// ErrPodNotFound means the pod whose logs were asked for does not exist.
	ErrPodNotFound = errors.New("k8s: pod not found")

	// errEmptyNamespace keeps ListSessions namespaced: an all-namespaces
	// informer would need cluster-wide RBAC.
	errEmptyNamespace = errors.New("k8s: empty namespace")
)
