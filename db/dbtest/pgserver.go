package dbtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Postgres is a private PostgreSQL server a test may crash and start again: real PostgreSQL on
// its own port and data directory, so fault tests never disturb the shared server the other
// tests use. The binaries are the machine's (scripts/services.sh installs them).
type Postgres struct {
	bin  string // the directory of initdb, pg_ctl and postgres
	dir  string // the data directory
	port int
	cred *credential // whom the server runs as (PostgreSQL refuses root)
}

// StartPostgres creates a data directory (trust authentication, user postgres) and starts a
// server on a free 127.0.0.1 port. Cleanup stops it and removes its files.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	p := &Postgres{bin: bin}
	if os.Geteuid() == 0 {
		if p.cred, err = credentialOf("postgres"); err != nil {
			t.Fatalf("dbtest: PostgreSQL must not run as root, and %v", err)
		}
	}
	// Not t.TempDir: its parents are private to the test's user, and the server runs as
	// postgres.
	if p.dir, err = os.MkdirTemp("", "streamspace-pg-"); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(p.dir) })
	if p.cred != nil {
		if err := chownTo(p.dir, p.cred); err != nil {
			t.Fatalf("dbtest: %v", err)
		}
	}
	data := filepath.Join(p.dir, "data")
	if out, err := p.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("dbtest: initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	t.Cleanup(func() { _, _ = p.run("pg_ctl", "-D", data, "stop", "-m", "immediate", "-w") })
	p.Start(t)
	return p
}

// URL is the server's database postgres, with sslmode=disable.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Start starts the server and waits until it accepts connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", p.port, p.dir)
	out, err := p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-o", opts, "-l", filepath.Join(p.dir, "log"), "-w", "-t", "30", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		t.Fatalf("dbtest: start postgres: %v\n%s\n%s", err, out, log)
	}
}

// Crash stops the server at once, as a crash would ("immediate" shutdown: no checkpoint,
// connections cut), and returns once it is gone.
func (p *Postgres) Crash(t testing.TB) {
	t.Helper()
	if out, err := p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "stop", "-m", "immediate", "-w"); err != nil {
		t.Fatalf("dbtest: stop postgres: %v\n%s", err, out)
	}
}

func (p *Postgres) run(tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(p.bin, tool), args...)
	cmd.Dir = p.dir
	if p.cred != nil {
		runAs(cmd, p.cred)
	}
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
		return out, err
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return out, fmt.Errorf("%s did not finish within 2 minutes", tool)
	}
}

// postgresBinDir finds the server's binaries: pg_config's bindir, else the newest
// /usr/lib/postgresql/*/bin (Debian keeps them off the PATH).
func postgresBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("PostgreSQL's pg_ctl not found (install the server with scripts/services.sh)")
}
