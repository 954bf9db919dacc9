package testkit

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// StaticBinaryEnv names the environment variable with the path of the server's static binary,
// which scripts/test.sh builds with scripts/build-static.sh before it runs go test.
const StaticBinaryEnv = "STREAMSPACE_STATIC_BINARY"

// BuildStaticScript is the script, relative to the module root, that builds the binary: the
// Dockerfile runs it too.
const BuildStaticScript = "scripts/build-static.sh"

// StaticBinary returns the path of the server's static binary, the build the image ships.
//
// Under scripts/test.sh (make test) it is the binary named by $STREAMSPACE_STATIC_BINARY,
// built before the tests so that no test depends on how fast a cold build is. Without the
// variable (go test run by hand) it builds one now with scripts/build-static.sh into the
// test's temporary directory, with no time limit of its own; to build once for many runs:
//
//	bash scripts/build-static.sh bin/streamspace-realtime-static
//	STREAMSPACE_STATIC_BINARY=$PWD/bin/streamspace-realtime-static go test ./deploy/ ./internal/browsertest/
func StaticBinary(t testing.TB) string {
	t.Helper()
	if path := os.Getenv(StaticBinaryEnv); path != "" {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s=%s: %v; build it with: bash %s %s", StaticBinaryEnv, path, err, BuildStaticScript, path)
		}
		return path
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "streamspace-realtime")
	t.Logf("%s is not set: building %s with %s (make test builds it before the tests)", StaticBinaryEnv, path, BuildStaticScript)
	start := time.Now()
	build := exec.Command("bash", filepath.Join(root, BuildStaticScript), path)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("bash %s %s: %v\n%s", BuildStaticScript, path, err, out)
	}
	t.Logf("built in %v", time.Since(start).Round(time.Millisecond))
	return path
}

// ModuleRoot returns the directory of the go.mod above the working directory: a test runs in
// its package's directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
