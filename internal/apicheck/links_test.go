package apicheck

import (
	"bytes"
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDefaultBuildLinksNoKubernetes fails when the default build of the command, or package
// websocket that embedders link, depends on a k8s.io package: every package of client-go, the
// API types and apimachinery runs its initialization in every process that links it, which
// doubles an idle server's memory (docs/ARCHITECTURE.md). Kubernetes is one build tag away,
// and the test checks that the tag still brings client-go in.
func TestDefaultBuildLinksNoKubernetes(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, pkg := range []string{"./cmd/streamspace-realtime", "./websocket"} {
		for path, imports := range deps(t, root, pkg) {
			if isKubernetes(path) {
				continue
			}
			for _, imp := range imports {
				if isKubernetes(imp) {
					t.Errorf("%s without -tags kubernetes links %s: %s imports it", pkg, imp, path)
				}
			}
		}
	}
	tagged := deps(t, root, "./cmd/streamspace-realtime", "-tags", "kubernetes")
	if _, ok := tagged["k8s.io/client-go/kubernetes"]; !ok {
		t.Errorf("./cmd/streamspace-realtime with -tags kubernetes does not link k8s.io/client-go/kubernetes: the tag no longer brings Kubernetes in")
	}
}

// deps maps each package pkg depends on (pkg included) to the packages it imports, as go list
// -deps sees them with flags.
func deps(t *testing.T, dir, pkg string, flags ...string) map[string][]string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`}, flags...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s %s: %v\n%s", strings.Join(args, " "), pkg, err, stderr.Bytes())
	}
	m := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	if _, ok := m[module+strings.TrimPrefix(pkg, ".")]; !ok {
		t.Fatalf("go list -deps %s did not list the package itself: the check would pass on nothing", pkg)
	}
	return m
}

func isKubernetes(path string) bool { return strings.HasPrefix(path, "k8s.io/") }

// TestCommandKeepsNoUncalledMethods fails when the command's binary keeps an exported method
// that nothing calls. The linker drops such methods unless some linked code may call a
// method by name through reflection (text/template, reflect.Value.MethodByName); then it
// keeps every exported method of every linked type (go-redis's commands alone are 4 MB of
// code), and an idle server pays for the bigger executable in resident pages
// (docs/PERFORMANCE.md).
func TestCommandKeepsNoUncalledMethods(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	bin := filepath.Join(t.TempDir(), "streamspace-realtime")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/streamspace-realtime")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	// GeoRadius: a go-redis command this project never sends; cmdable.Publish: one it does.
	const uncalled, called = "github.com/redis/go-redis/v9.cmdable.GeoRadius", "github.com/redis/go-redis/v9.cmdable.Publish"
	found := map[string]bool{}
	for _, s := range syms {
		found[s.Name] = true
	}
	if !found[called] {
		t.Fatalf("%s is not in the binary: the check no longer looks at go-redis's methods", called)
	}
	if found[uncalled] {
		t.Errorf("%s is linked though nothing calls it: some linked package looks methods up by name (text/template, reflect's MethodByName), so every exported method is kept", uncalled)
	}
}
