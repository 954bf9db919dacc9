package server

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/streamspace/streamspace-realtime/k8s"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// openK8s is the opener of a binary built with -tags kubernetes (cmd/streamspace-realtime's
// kubernetes.go), which this package does not import.
func openK8s(kubeconfig string, log *slog.Logger) (websocket.KubernetesClient, func(), error) {
	c, _, err := k8s.Open(kubeconfig, k8s.Options{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return c, c.Close, nil
}

// fakeK8s is a *k8s.Client over client-go's fake dynamic client, with no Session resources.
func fakeK8s(t *testing.T) *k8s.Client {
	t.Helper()
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{k8s.SessionGVR: "SessionList"})
	c := k8s.New(dyn, nil, k8s.Options{Logger: slog.New(slog.DiscardHandler), SyncTimeout: 5 * time.Second})
	t.Cleanup(c.Close)
	return c
}

// STREAMSPACE_SESSION_SOURCE=kubernetes with a kubeconfig that cannot be read refuses to
// start, naming the setting and the file.
func TestKubernetesSourceNeedsConfig(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "sqlite", map[string]string{
		"STREAMSPACE_SESSION_SOURCE": "kubernetes", "STREAMSPACE_KUBECONFIG": "/nonexistent/kubeconfig",
	})
	cfg.OpenKubernetes = openK8s
	srv, err := New(t.Context(), cfg, nil)
	if err == nil {
		_ = srv.Shutdown(t.Context())
		t.Fatal("started without a readable kubeconfig")
	}
	if !strings.Contains(err.Error(), "STREAMSPACE_SESSION_SOURCE=kubernetes") || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Fatalf("error %q should name the setting and the file", err)
	}
}

// Without an opener (a binary built without -tags kubernetes) the kubernetes source is refused
// with the fix, before the database is opened; a caller's client needs no opener.
func TestKubernetesSourceWithoutSupport(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "sqlite", map[string]string{"STREAMSPACE_SESSION_SOURCE": "kubernetes"})
	file := filepath.Join(t.TempDir(), "k.db")
	cfg.DatabaseURL = "sqlite://" + file
	srv, err := New(t.Context(), cfg, nil)
	if err == nil {
		_ = srv.Shutdown(t.Context())
		t.Fatal("started the kubernetes source without an opener")
	}
	if !errors.Is(err, errNoKubernetes) || !strings.Contains(err.Error(), "-tags kubernetes") {
		t.Fatalf("error %q, want %q", err, errNoKubernetes)
	}
	if _, statErr := os.Stat(file); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("the database was opened before the refusal (stat: %v)", statErr)
	}

	// A nil *k8s.Client is no client either.
	cfg.Kubernetes = (*k8s.Client)(nil)
	if srv, err := New(t.Context(), cfg, nil); !errors.Is(err, errNoKubernetes) {
		if err == nil {
			_ = srv.Shutdown(t.Context())
		}
		t.Fatalf("with a nil *k8s.Client: %v, want %q", err, errNoKubernetes)
	}

	cfg.Kubernetes = fakeK8s(t)
	srv, err = New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("with Config.Kubernetes set and no opener: %v", err)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// A client the opener built is the server's and closed at Shutdown; a caller's client stays
// open, and the opener is not asked for one.
func TestKubernetesOwnership(t *testing.T) {
	t.Parallel()
	t.Run("built", func(t *testing.T) {
		t.Parallel()
		built := fakeK8s(t)
		var closes atomic.Int32
		var path string
		cfg := testConfig(t, "sqlite", map[string]string{
			"STREAMSPACE_SESSION_SOURCE": "kubernetes", "STREAMSPACE_KUBECONFIG": "/etc/streamspace/kubeconfig",
		})
		cfg.OpenKubernetes = func(kubeconfig string, _ *slog.Logger) (websocket.KubernetesClient, func(), error) {
			path = kubeconfig
			return built, func() { closes.Add(1); built.Close() }, nil
		}
		srv, err := New(t.Context(), cfg, nil)
		if err != nil {
			t.Fatalf("new: %v", err)
		}
		if path != "/etc/streamspace/kubeconfig" {
			t.Errorf("the opener was given %q, want STREAMSPACE_KUBECONFIG", path)
		}
		if n := closes.Load(); n != 0 {
			t.Fatalf("closed %d times before Shutdown", n)
		}
		if err := srv.Shutdown(t.Context()); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if n := closes.Load(); n != 1 {
			t.Fatalf("closed %d times by Shutdown, want 1", n)
		}
		if _, err := built.ListSessions(t.Context(), "ns"); !errors.Is(err, k8s.ErrClosed) {
			t.Fatalf("the built client after Shutdown: %v, want k8s.ErrClosed", err)
		}
	})
	t.Run("caller's", func(t *testing.T) {
		t.Parallel()
		caller := fakeK8s(t)
		cfg := testConfig(t, "sqlite", map[string]string{"STREAMSPACE_SESSION_SOURCE": "kubernetes"})
		cfg.Kubernetes = caller
		cfg.OpenKubernetes = func(string, *slog.Logger) (websocket.KubernetesClient, func(), error) {
			t.Error("the opener was called although Config.Kubernetes is set")
			return nil, nil, errors.New("unexpected")
		}
		srv, err := New(t.Context(), cfg, nil)
		if err != nil {
			t.Fatalf("new: %v", err)
		}
		if err := srv.Shutdown(t.Context()); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if _, err := caller.ListSessions(t.Context(), "ns"); err != nil {
			t.Fatalf("the caller's client after Shutdown: %v, want it still open", err)
		}
	})
}
