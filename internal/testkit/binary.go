package testkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// StaticBinaryEnv names the environment variable with the path of the server's static binary,
// which scripts/test.sh builds with scripts/build-static.sh before it runs go test.
const StaticBinaryEnv = "STREAMSPACE_STATIC_BINARY"

// BuildStaticScript is the script, relative to the module root, that builds the binary: the
// Dockerfile runs it too.
const BuildStaticScript = "scripts/build-static.sh"

// StaticBinary returns the path of the server's static binary, the build the image ships, for
// tests that check it or run it as a process of its own.
//
// Under scripts/test.sh (make test) it is the binary named by $STREAMSPACE_STATIC_BINARY,
// built before the tests so that no test depends on how fast a cold build is. Without the
// variable (go test run by hand) it is built once per test binary with scripts/build-static.sh,
// with no time limit of its own, into a directory under os.TempDir that is left for the
// system to clean. To build it once for many runs:
//
//	bash scripts/build-static.sh bin/streamspace-realtime-static
//	STREAMSPACE_STATIC_BINARY=$PWD/bin/streamspace-realtime-static go test ./deploy/
func StaticBinary(t testing.TB) string {
	t.Helper()
	if path := os.Getenv(StaticBinaryEnv); path != "" {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s=%s: %v; build it with: bash %s %s", StaticBinaryEnv, path, err, BuildStaticScript, path)
		}
		return path
	}
	t.Logf("%s is not set: building the binary with %s (make test builds it before the tests)", StaticBinaryEnv, BuildStaticScript)
	path, err := buildStatic()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// buildStatic builds the binary the first time a test of this process asks for it.
var buildStatic = sync.OnceValues(func() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "streamspace-realtime-static-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "streamspace-realtime")
	if out, err := exec.Command("bash", filepath.Join(root, BuildStaticScript), path).CombinedOutput(); err != nil {
		return "", fmt.Errorf("bash %s %s: %v\n%s", BuildStaticScript, path, err, out)
	}
	return path, nil
})

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
