package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// token mints a browser JWT with the server's secret.
func token(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user id (required)")
	org := fs.String("org", "", "organization id (required)")
	role := fs.String("role", string(auth.RoleUser), "user, operator or admin")
	namespace := fs.String("namespace", "", "Kubernetes namespace (default: the organization's)")
	username := fs.String("username", "", "display name")
	ttl := fs.Duration("ttl", time.Hour, "validity")
	secret := fs.String("secret", getenv("STREAMSPACE_JWT_SECRET"), "HS256 secret (env STREAMSPACE_JWT_SECRET)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" || *org == "" {
		fs.Usage()
		return errors.New("token: --user and --org are required")
	}
	if *ttl <= 0 {
		return errors.New("token: --ttl must be positive")
	}
	tok, err := auth.Mint([]byte(*secret), auth.Identity{
		UserID: *user, OrgID: *org, Role: auth.Role(*role), K8sNamespace: *namespace, Username: *username,
	}, *ttl, time.Now())
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
