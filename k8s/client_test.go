package k8s

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: dev
  user:
    token: not-a-secret
contexts:
- name: local
  context: {cluster: local, user: dev, namespace: streamspace-acme}
current-context: local
`

func writeKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(testKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigKubeconfigFile(t *testing.T) {
	cfg, err := LoadConfig(writeKubeconfig(t))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("Host = %q, want https://127.0.0.1:6443", cfg.Host)
	}
	if cfg.BearerToken != "not-a-secret" {
		t.Errorf("BearerToken = %q, want the current context's user token", cfg.BearerToken)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "kubeconfig")
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("LoadConfig of a missing file succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not mention %s", err, path)
	}
}

func TestLoadConfigEmptyOutsideClusterUsesKUBECONFIG(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	t.Setenv("KUBECONFIG", writeKubeconfig(t))
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("Host = %q, want https://127.0.0.1:6443", cfg.Host)
	}
}

func TestNewForConfig(t *testing.T) {
	c, err := NewForConfig(&rest.Config{Host: "https://127.0.0.1:6443"}, Options{})
	if err != nil {
		t.Fatalf("NewForConfig: %v", err)
	}
	defer c.Close()
	if c.opts.SyncTimeout != DefaultSyncTimeout || c.opts.Logger != slog.Default() {
		t.Errorf("zero Options not defaulted: %+v", c.opts)
	}
}

func TestCloseNilClient(t *testing.T) {
	var c *Client
	c.Close() // must not panic: a nil Client is the database-backed default
}
