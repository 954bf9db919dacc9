//go:build kubernetes

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// TestServeKubernetesSource: a binary built with -tags kubernetes reads the kubeconfig it is
// given: a missing one is the error, not missing support; a readable one (its API server need
// not answer until sessions are listed) serves with Kubernetes as the source.
// nokubernetes_test.go is the untagged build's.
func TestServeKubernetesSource(t *testing.T) {
	if openKubernetes == nil {
		t.Fatal("a build with -tags kubernetes has no Kubernetes opener")
	}
	environ := env(map[string]string{"STREAMSPACE_JWT_SECRET": strings.Repeat("s", 32), "STREAMSPACE_SERVICE_TOKEN": "svc"})
	dbURL := "sqlite://" + filepath.Join(t.TempDir(), "k.db")

	var out, errs testkit.LockedBuffer
	err := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--database-url", dbURL,
		"--session-source", "kubernetes", "--kubeconfig", "/nonexistent/kubeconfig"}, environ, &out, &errs)
	if err == nil {
		t.Fatal("serve started with a kubeconfig that does not exist")
	}
	if !strings.Contains(err.Error(), "/nonexistent/kubeconfig") || strings.Contains(err.Error(), "without Kubernetes support") {
		t.Fatalf("error %q, want one about loading /nonexistent/kubeconfig", err)
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: dev
  user: {token: not-a-secret}
contexts:
- name: local
  context: {cluster: local, user: dev}
current-context: local
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--database-url", dbURL,
			"--session-source", "kubernetes", "--kubeconfig", kubeconfig}, environ, &out, &errs)
	}()
	if err := testkit.WaitFor(10*time.Second, func() bool { return regexpListening.MatchString(errs.String()) }); err != nil {
		cancel()
		t.Fatalf("serve never listened (%v); stderr:\n%s", <-done, errs.String())
	}
	if !strings.Contains(errs.String(), `msg="sessions and pod logs come from Kubernetes" api=https://127.0.0.1:6443`) {
		t.Errorf("serve did not say where sessions come from; stderr:\n%s", errs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}
