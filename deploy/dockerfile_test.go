package deploy_test

import (
	"bytes"
	"cmp"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

const dockerfilePath = "../Dockerfile"

// stage is one FROM of the Dockerfile with its instructions.
type stage struct {
	image, name  string
	instructions []instruction
}

type instruction struct {
	line      int
	cmd, args string // cmd upper-cased
}

// parseDockerfile splits the Dockerfile into stages, joining continued lines and dropping
// comments.
func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var (
		stages []stage
		joined strings.Builder
		start  int
	)
	for n, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && joined.Len() == 0) {
			continue
		}
		if joined.Len() == 0 {
			start = n + 1
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			joined.WriteString(cont + " ")
			continue
		}
		joined.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(joined.String()), " ")
		joined.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			var words []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			s := stage{image: words[0]}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				s.name = words[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
		}
		last := &stages[len(stages)-1]
		last.instructions = append(last.instructions, in)
	}
	return stages
}

// goBuild is the Dockerfile's go build command, found on a RUN line or in the script a RUN line
// runs.
type goBuild struct {
	stage  int
	script string   // the script the RUN line runs, relative to the repository root ("": none)
	env    []string // KEY=VALUE, from ENV and the command's prefix
	args   []string // after "go build"
	output string
}

func findGoBuild(t *testing.T, stages []stage) goBuild {
	t.Helper()
	for i, s := range stages {
		var env []string
		for _, in := range s.instructions {
			switch in.cmd {
			case "ENV":
				env = append(env, envAssignments(in.args)...)
			case "RUN":
				words, err := shellWords(in.args)
				if err != nil {
					t.Fatalf("Dockerfile:%d: %v", in.line, err)
				}
				for cmd := range splitCommands(words) {
					if script, args, ok := scriptCall(cmd); ok {
						if b, ok := scriptGoBuild(t, script, args); ok {
							b.stage, b.env = i, append(slices.Clone(env), b.env...)
							return b
						}
						continue
					}
					if b, ok := parseGoBuild(cmd); ok {
						b.stage, b.env = i, append(slices.Clone(env), b.env...)
						return b
					}
				}
			}
		}
	}
	t.Fatal("the Dockerfile has no RUN go build")
	return goBuild{}
}

// parseGoBuild reads a command [KEY=VALUE…] go build ARGS.
func parseGoBuild(cmd []string) (goBuild, bool) {
	j := 0
	for j < len(cmd) && strings.Contains(cmd[j], "=") && !strings.HasPrefix(cmd[j], "-") {
		j++
	}
	if len(cmd) < j+2 || cmd[j] != "go" || cmd[j+1] != "build" {
		return goBuild{}, false
	}
	b := goBuild{env: slices.Clone(cmd[:j]), args: cmd[j+2:]}
	for k, a := range b.args {
		if a == "-o" && k+1 < len(b.args) {
			b.output = b.args[k+1]
		} else if out, ok := strings.CutPrefix(a, "-o="); ok {
			b.output = out
		}
	}
	return b, true
}

// scriptCall recognizes a RUN command that runs a script of the repository: [bash|sh]
// scripts/NAME.sh ARGS.
func scriptCall(cmd []string) (script string, args []string, ok bool) {
	if len(cmd) > 0 && (cmd[0] == "bash" || cmd[0] == "sh") {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 || !strings.HasSuffix(cmd[0], ".sh") {
		return "", nil, false
	}
	return strings.TrimPrefix(cmd[0], "./"), cmd[1:], true
}

// scriptGoBuild finds the go build command of a script the Dockerfile runs with args; an -o
// of the script's first argument ("$1", "${out}"…) is that argument.
func scriptGoBuild(t *testing.T, script string, args []string) (goBuild, bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", script))
	if err != nil {
		t.Fatalf("the Dockerfile runs %s: %v", script, err)
	}
	var joined strings.Builder
	for line := range strings.Lines(string(data)) {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			joined.WriteString(cont + " ")
			continue
		}
		joined.WriteString(trimmed)
		words, err := shellWords(joined.String())
		joined.Reset()
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		for cmd := range splitCommands(words) {
			if b, ok := parseGoBuild(cmd); ok {
				b.script = script
				if strings.HasPrefix(b.output, "$") && len(args) > 0 {
					b.output = args[0]
				}
				return b, true
			}
		}
	}
	return goBuild{}, false
}

// hasTag reports whether the build's -tags list names tag.
func (b goBuild) hasTag(tag string) bool {
	for k, a := range b.args {
		list, ok := strings.CutPrefix(a, "-tags=")
		if !ok && a == "-tags" && k+1 < len(b.args) {
			list, ok = b.args[k+1], true
		}
		if ok && slices.Contains(strings.Split(list, ","), tag) {
			return true
		}
	}
	return false
}

func (b goBuild) getenv(key string) string {
	v := ""
	for _, kv := range b.env {
		if k, val, _ := strings.Cut(kv, "="); k == key {
			v = val
		}
	}
	return v
}

// TestDockerfile checks that the image is built in a stage of its own as a static binary and
// runs as a non-root user on the port the Deployment declares.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("%d stages; want a build stage and a final one", len(stages))
	}
	var names []string
	for i, s := range stages {
		if s.image != "scratch" && !slices.Contains(names, s.image) {
			if err := pinned(s.image); err != nil {
				t.Errorf("stage %d: image %q: %v", i+1, s.image, err)
			}
		}
		names = append(names, s.name)
	}

	b := findGoBuild(t, stages)
	if b.getenv("CGO_ENABLED") != "0" {
		t.Errorf("go build without CGO_ENABLED=0: the binary would need a libc the final image lacks")
	}
	if !slices.Contains(b.args, "-trimpath") {
		t.Errorf("go build without -trimpath: %q", b.args)
	}
	if !slices.Contains(b.args, "./cmd/streamspace-realtime") {
		t.Errorf("go build does not build ./cmd/streamspace-realtime: %q", b.args)
	}
	if !b.hasTag("kubernetes") {
		t.Errorf("go build without -tags kubernetes: the image could not read sessions from Kubernetes: %q", b.args)
	}
	if b.output == "" {
		t.Fatalf("go build has no -o: %q", b.args)
	}
	if b.stage == len(stages)-1 {
		t.Errorf("the binary is built in the final stage; it belongs in a build stage")
	}

	final := stages[len(stages)-1]
	var binary string
	for _, in := range final.instructions {
		if in.cmd != "COPY" {
			continue
		}
		f := strings.Fields(in.args)
		if len(f) == 3 && (f[0] == "--from="+stages[b.stage].name || f[0] == "--from="+strconv.Itoa(b.stage)) && f[1] == b.output {
			binary = f[2]
		}
	}
	if binary == "" {
		t.Errorf("the final stage does not COPY %s from the build stage", b.output)
	}
	if got := execForm(t, final, "ENTRYPOINT"); len(got) != 1 || got[0] != binary {
		t.Errorf("ENTRYPOINT %q; want [%q] in exec form", got, binary)
	}
	if got := execForm(t, final, "CMD"); len(got) == 0 || got[0] != "serve" {
		t.Errorf("CMD %q; want serve", got)
	}

	user := last(final, "USER")
	uid, gid, hasGID := strings.Cut(user, ":")
	ids := []string{uid}
	if hasGID {
		ids = append(ids, gid)
	}
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err != nil || n <= 0 {
			t.Errorf("USER %q; want numeric ids other than root's (runAsNonRoot cannot check a name)", user)
		}
	}

	m := loadManifests(t)
	w, c := m.server(t)
	if sc := w.pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil && strconv.FormatInt(*sc.RunAsUser, 10) != uid {
		t.Errorf("%v runs as user %d, the image as %q", w, *sc.RunAsUser, uid)
	}
	exposed := strings.Fields(last(final, "EXPOSE"))
	for _, p := range c.Ports {
		if !slices.Contains(exposed, strconv.Itoa(int(p.ContainerPort))) && !slices.Contains(exposed, fmt.Sprintf("%d/tcp", p.ContainerPort)) {
			t.Errorf("%v declares port %d, the image exposes %q", w, p.ContainerPort, exposed)
		}
	}
}

// TestStaticBinary checks the binary that the Dockerfile's own build makes, the one
// scripts/build-static.sh builds: that it is static, so it runs on the distroless base, and that
// it knows every setting the manifests use. The test does not build it: make test does, before
// go test (see testkit.StaticBinary for running this test by itself).
func TestStaticBinary(t *testing.T) {
	t.Parallel()
	b := findGoBuild(t, parseDockerfile(t))
	if b.script != testkit.BuildStaticScript {
		t.Fatalf("the Dockerfile builds the binary with %q, not by running %s: the binary checked here would not be the image's",
			cmp.Or(b.script, "go build "+strings.Join(b.args, " ")), testkit.BuildStaticScript)
	}
	bin := testkit.StaticBinary(t)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("open the binary as ELF: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has a PT_INTERP program header: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("the binary needs shared libraries %q (%v)", libs, err)
	}

	usage := run(t, bin, "--help")
	if !strings.Contains(usage, "serve") {
		t.Errorf("--help does not mention serve:\n%s", usage)
	}
	help := run(t, bin, "serve", "-h")
	if !strings.Contains(help, "-replica") || !strings.Contains(help, "env STREAMSPACE_REPLICA,") {
		t.Errorf("serve -h does not mention --replica and STREAMSPACE_REPLICA:\n%s", help)
	}
	m := loadManifests(t)
	_, c := m.server(t)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "STREAMSPACE_") && !strings.Contains(help, "env "+e.Name+",") {
			t.Errorf("serve -h does not list %s, which the Deployment sets", e.Name)
		}
	}

	// Built with -tags kubernetes, the binary goes on to load the kubeconfig it is given,
	// where one built without refuses the kubernetes source for want of support.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--addr", "127.0.0.1:0",
		"--database-url", "sqlite://"+filepath.Join(t.TempDir(), "k.db"),
		"--session-source", "kubernetes", "--kubeconfig", "/nonexistent/kubeconfig")
	cmd.Env = append(os.Environ(), "STREAMSPACE_JWT_SECRET="+strings.Repeat("s", 32), "STREAMSPACE_SERVICE_TOKEN=svc")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/nonexistent/kubeconfig") || strings.Contains(string(out), "without Kubernetes support") {
		t.Errorf("serve --session-source kubernetes --kubeconfig /nonexistent/kubeconfig: %v, want an error about that kubeconfig:\n%s", err, out)
	}
}

// run runs the binary and returns what it printed. A help request ends with status 2 from the
// flag package (serve -h) or 0, so the status is not checked.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if exit := (*exec.ExitError)(nil); !errors.As(err, &exit) {
			t.Fatalf("%s %q: %v", bin, args, err)
		}
	}
	return out.String()
}

// execForm returns the JSON array of the stage's last instruction cmd.
func execForm(t *testing.T, s stage, cmd string) []string {
	t.Helper()
	v := last(s, cmd)
	if v == "" {
		return nil
	}
	var words []string
	if err := json.Unmarshal([]byte(v), &words); err != nil {
		t.Errorf("%s %s: not in exec form (a JSON array): %v", cmd, v, err)
	}
	return words
}

// last returns the arguments of the stage's last instruction cmd: the one that takes effect.
func last(s stage, cmd string) string {
	v := ""
	for _, in := range s.instructions {
		if in.cmd == cmd {
			v = in.args
		}
	}
	return v
}

// envAssignments reads ENV KEY=VALUE … (or the old form ENV KEY VALUE).
func envAssignments(args string) []string {
	words, err := shellWords(args)
	if err != nil || len(words) == 0 {
		return nil
	}
	if !strings.Contains(words[0], "=") {
		return []string{words[0] + "=" + strings.Join(words[1:], " ")}
	}
	return words
}

// shellWords splits a shell command line into words, removing quotes: enough for a RUN line
// (no variables, no globs).
func shellWords(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c quote in %q", c, s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += 1 + end
			inWord = true
		case '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
				inWord = true
			}
		case ' ', '\t', '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// splitCommands yields the commands of a RUN line joined by &&, || or ;.
func splitCommands(words []string) iter.Seq[[]string] {
	return func(yield func([]string) bool) {
		start := 0
		for i, w := range words {
			if w == "&&" || w == "||" || w == ";" {
				if !yield(words[start:i]) {
					return
				}
				start = i + 1
			}
		}
		yield(words[start:])
	}
}
