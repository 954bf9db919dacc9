package apicheck

import (
	"bufio"
	"bytes"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/streamspace/streamspace-realtime"

// TestPublicAPINamesNoInternalType fails when an exported identifier of a public package (any
// package of the module outside internal/ and cmd/) names a type of an internal package, in
// its type, a field, a method, an interface method, an embedded type or a type parameter's
// constraint, directly or through an unexported type whose exported parts it exposes.
func TestPublicAPINamesNoInternalType(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the whole module")
	}
	pkgs := load(t, filepath.Join("..", ".."), module+"/...")
	var public []*types.Package
	for _, p := range pkgs {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.Path(), module), "/")
		if isInternal(p.Path()) || rel == "cmd" || strings.HasPrefix(rel, "cmd/") || p.Name() == "main" {
			continue
		}
		public = append(public, p)
	}
	if len(public) < 5 {
		t.Fatalf("found %d public packages; the pattern or the filter is wrong", len(public))
	}
	for _, p := range public {
		for _, leak := range leaks(p) {
			t.Errorf("%s: %s", p.Path(), leak)
		}
	}
}

// TestLeaksFindsEveryKind runs the check on testdata/leaky, whose public package leaks an
// internal type in every way it must catch and holds it in the ways that are fine.
func TestLeaksFindsEveryKind(t *testing.T) {
	pkgs := load(t, filepath.Join("testdata", "leaky"), "./public")
	got := leaks(pkgs[0])
	want := []string{
		"AliasLeak names example.com/leaky/internal/secret.Token",
		"EmbedLeak.Token names example.com/leaky/internal/secret.Token",
		"FieldLeak.T names example.com/leaky/internal/secret.Token",
		"FuncLeak names example.com/leaky/internal/secret.Token",
		"GenericLeak[T] names example.com/leaky/internal/secret.Token",
		"HiddenLeak → hidden.T names example.com/leaky/internal/secret.Token",
		"InterfaceLeak.M names example.com/leaky/internal/secret.Token",
		"MethodsLeak.M names example.com/leaky/internal/secret.Token",
		"VarLeak names example.com/leaky/internal/secret.Token",
	}
	if !slices.Equal(got, want) {
		t.Errorf("leaks:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// load type-checks the packages pattern matches in dir from the compiler's export data, which
// go list -export builds (or finds in the build cache).
func load(t *testing.T, dir, pattern string) []*types.Package {
	t.Helper()
	cmd := exec.Command("go", "list", "-export", "-deps", "-f", "{{.ImportPath}} {{.DepOnly}} {{.Export}}", pattern)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod") // testdata/leaky has no go.sum to check
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s in %s: %v\n%s", pattern, dir, err, stderr.Bytes())
	}
	exports := map[string]string{}
	var roots []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue // a package without export data (no Go files for this platform)
		}
		exports[f[0]] = f[2]
		if f[1] == "false" {
			roots = append(roots, f[0])
		}
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		if file, ok := exports[path]; ok {
			return os.Open(file)
		}
		return nil, fmt.Errorf("no export data for %s", path)
	})
	var pkgs []*types.Package
	for _, path := range roots {
		p, err := imp.Import(path)
		if err != nil {
			t.Fatalf("import %s: %v", path, err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %s in %s: no package", pattern, dir)
	}
	return pkgs
}

// isInternal reports whether path is an internal package (Go's rule: a path element
// "internal").
func isInternal(path string) bool {
	return slices.Contains(strings.Split(path, "/"), "internal")
}

// leaks lists, sorted, each exported identifier of pkg that names an internal package's type.
func leaks(pkg *types.Package) []string {
	w := &walker{pkg: pkg, seen: map[types.Type]bool{}}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		tn, isType := obj.(*types.TypeName)
		if !isType || tn.IsAlias() {
			w.walk(obj.Type(), name)
			continue
		}
		named, ok := tn.Type().(*types.Named)
		if !ok {
			continue
		}
		w.exposed(named, name)
	}
	slices.Sort(w.found)
	return slices.Compact(w.found)
}

// walker follows the types an exported identifier exposes.
type walker struct {
	pkg   *types.Package
	seen  map[types.Type]bool // the unexported types of pkg already followed
	found []string
}

// exposed walks what a named type of pkg shows an embedder: its type parameters'
// constraints, its underlying type and its exported methods.
func (w *walker) exposed(named *types.Named, where string) {
	if tps := named.TypeParams(); tps != nil {
		for tp := range tps.TypeParams() {
			w.walk(tp.Constraint(), fmt.Sprintf("%s[%s]", where, tp.Obj().Name()))
		}
	}
	w.walk(named.Underlying(), where)
	for m := range named.Methods() {
		if m.Exported() {
			w.walk(m.Type(), where+"."+m.Name())
		}
	}
}

func (w *walker) walk(t types.Type, where string) {
	switch t := t.(type) {
	case *types.Alias:
		if obj := t.Obj(); obj.Pkg() != nil && isInternal(obj.Pkg().Path()) {
			w.report(obj, where)
			return
		}
		w.walk(types.Unalias(t), where)
	case *types.Named:
		obj := t.Obj()
		if obj.Pkg() != nil && isInternal(obj.Pkg().Path()) {
			w.report(obj, where)
			return
		}
		for arg := range t.TypeArgs().Types() {
			w.walk(arg, where)
		}
		// An exported type of pkg is walked as an identifier of its own, and another package's
		// types are that package's concern; an unexported type of pkg shows its exported parts
		// through whatever exposes it.
		if obj.Pkg() == w.pkg && !obj.Exported() && !w.seen[t] {
			w.seen[t] = true
			w.exposed(t, where+" → "+obj.Name())
		}
	case *types.Pointer:
		w.walk(t.Elem(), where)
	case *types.Slice:
		w.walk(t.Elem(), where)
	case *types.Array:
		w.walk(t.Elem(), where)
	case *types.Chan:
		w.walk(t.Elem(), where)
	case *types.Map:
		w.walk(t.Key(), where)
		w.walk(t.Elem(), where)
	case *types.Signature:
		if tps := t.TypeParams(); tps != nil {
			for tp := range tps.TypeParams() {
				w.walk(tp.Constraint(), where)
			}
		}
		w.walk(t.Params(), where)
		w.walk(t.Results(), where)
	case *types.Tuple:
		for v := range t.Variables() {
			w.walk(v.Type(), where)
		}
	case *types.Struct:
		for f := range t.Fields() {
			if f.Exported() || f.Embedded() {
				w.walk(f.Type(), where+"."+f.Name())
			}
		}
	case *types.Interface:
		for m := range t.ExplicitMethods() {
			if m.Exported() {
				w.walk(m.Type(), where+"."+m.Name())
			}
		}
		for e := range t.EmbeddedTypes() {
			w.walk(e, where)
		}
	case *types.Union:
		for term := range t.Terms() {
			w.walk(term.Type(), where)
		}
	case *types.TypeParam:
		// Its constraint is walked where the parameter is declared.
	}
}

func (w *walker) report(obj *types.TypeName, where string) {
	w.found = append(w.found, fmt.Sprintf("%s names %s.%s", where, obj.Pkg().Path(), obj.Name()))
}
