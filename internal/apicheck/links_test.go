package apicheck

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
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

// TestCommandKeepsNoUncalledMethods fails when the server's binary keeps an exported method
// that nothing calls. The linker drops such methods unless some linked code may call a
// method by name through reflection (text/template, reflect.Value.MethodByName); then it
// keeps every exported method of every linked type (go-redis's commands alone are 4 MB of
// code), and an idle server pays for the bigger executable in resident pages
// (docs/PERFORMANCE.md). It reads the function table of the image's binary, which make test
// builds before the tests (its symbol table is stripped; the function table never is).
func TestCommandKeepsNoUncalledMethods(t *testing.T) {
	f, err := elf.Open(testkit.StaticBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pcln, text := f.Section(".gopclntab"), f.Section(".text")
	if pcln == nil || text == nil {
		t.Fatal("the binary has no .gopclntab or .text section")
	}
	data, err := pcln.Data()
	if err != nil {
		t.Fatal(err)
	}
	table, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		t.Fatal(err)
	}
	// GeoRadius: a go-redis command this project never sends; cmdable.Publish: one it does.
	const uncalled, called = "github.com/redis/go-redis/v9.cmdable.GeoRadius", "github.com/redis/go-redis/v9.cmdable.Publish"
	if table.LookupFunc(called) == nil {
		t.Fatalf("%s is not in the binary: the check no longer looks at go-redis's methods", called)
	}
	if table.LookupFunc(uncalled) != nil {
		t.Errorf("%s is linked though nothing calls it: some linked package looks methods up by name (text/template, reflect's MethodByName), so every exported method is kept", uncalled)
	}
}
