package k8s

import (
	"errors"

	"github.com/streamspace/streamspace-realtime/k8s/podlog"
)

var (
	// ErrClosed is returned by ListSessions after Close.
	ErrClosed = errors.New("k8s: client closed")
	// ErrNotSynced means a namespace's session cache did not complete its
	// first list within Options.SyncTimeout; the next call starts over.
	ErrNotSynced = errors.New("k8s: session cache not synced")
	// ErrPodNotFound means the pod whose logs were asked for does not exist. It is
	// podlog.ErrPodNotFound, which readers of pod logs check without linking client-go.
	ErrPodNotFound = podlog.ErrPodNotFound

	// errEmptyNamespace keeps ListSessions namespaced: an all-namespaces
	// informer would need cluster-wide RBAC.
	errEmptyNamespace = errors.New("k8s: empty namespace")
)
