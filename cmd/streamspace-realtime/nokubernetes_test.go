//go:build !kubernetes

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeKubernetesSource: a binary built without -tags kubernetes refuses
// --session-source kubernetes with the fix, before it opens the database or listens.
// kubernetes_test.go is the tagged build's.
func TestServeKubernetesSource(t *testing.T) {
	if openKubernetes != nil {
		t.Fatal("an untagged build has a Kubernetes opener: it links client-go")
	}
	file := filepath.Join(t.TempDir(), "k.db")
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--database-url", "sqlite://" + file, "--session-source", "kubernetes"},
		env(map[string]string{"STREAMSPACE_JWT_SECRET": strings.Repeat("s", 32), "STREAMSPACE_SERVICE_TOKEN": "svc"}), &out, &errs)
	if err == nil {
		t.Fatal("serve --session-source kubernetes ran without Kubernetes support")
	}
	for _, want := range []string{"STREAMSPACE_SESSION_SOURCE=kubernetes", "built without Kubernetes support", "-tags kubernetes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(errs.String(), "listening") {
		t.Errorf("serve listened before refusing:\n%s", errs.String())
	}
	if _, statErr := os.Stat(file); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("serve opened the database before refusing (stat: %v)", statErr)
	}

}
