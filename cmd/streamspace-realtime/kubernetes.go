//go:build kubernetes

package main

import (
	"log/slog"

	"github.com/streamspace/streamspace-realtime/k8s"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// Kubernetes support, in a binary built with -tags kubernetes (the container image is): the
// only file of the command that imports package k8s, so that a binary built without the tag
// links no client-go and does not pay for its initialization (docs/ARCHITECTURE.md).
func init() { openKubernetes = openK8s }

// openK8s builds the Kubernetes client of --session-source kubernetes from the kubeconfig
// (empty: the in-cluster config, else $KUBECONFIG or ~/.kube/config).
func openK8s(kubeconfig string, log *slog.Logger) (websocket.KubernetesClient, func(), error) {
	c, host, err := k8s.Open(kubeconfig, k8s.Options{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	log.Info("sessions and pod logs come from Kubernetes", "api", host)
	return c, c.Close, nil
}
