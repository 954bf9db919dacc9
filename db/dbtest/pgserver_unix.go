//go:build unix

package dbtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
)

// credential is a user the server runs as when the tests run as root.
type credential = syscall.Credential

func credentialOf(name string) (*credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("no user %q to run it as: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chownTo gives dir to c.
func chownTo(dir string, c *credential) error { return os.Chown(dir, int(c.Uid), int(c.Gid)) }

// runAs makes cmd run as c.
func runAs(cmd *exec.Cmd, c *credential) { cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c} }
