//go:build !unix

package dbtest

import (
	"errors"
	"os/exec"
)

// credential is never made here: only unix has root (os.Geteuid is -1 elsewhere), and so
// only there does the server need another user.
type credential struct{}

func credentialOf(string) (*credential, error) {
	return nil, errors.New("running PostgreSQL as another user needs unix")
}

func chownTo(string, *credential) error { return nil }

func runAs(*exec.Cmd, *credential) {}
