package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

var (
	qShareSession = newQuery(`
		INSERT INTO {session_shares} (session_id, user_id, permissions, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (session_id, user_id) DO UPDATE SET permissions = excluded.permissions`)
	qUnshareSession = newQuery(`DELETE FROM {session_shares} WHERE session_id = ? AND user_id = ?`)
	qIsShared       = newQuery(`SELECT COUNT(*) FROM {session_shares} WHERE session_id = ? AND user_id = ?`)
	qSharePerms     = newQuery(`SELECT permissions FROM {session_shares} WHERE session_id = ? AND user_id = ?`)
)

// ShareSession lets userID see the session (stored permissions replace earlier ones).
// ErrNotFound when the session does not exist.
func (d *Database) ShareSession(ctx context.Context, sessionID, userID string, permissions []string) error {
	if sessionID == "" || userID == "" {
		return errors.New("db: share session: session id and user id are required")
	}
	_, err := d.exec(ctx, d.db, qShareSession, sessionID, userID, jsonListArg(permissions), d.timeArg(d.now()))
	if isForeignKeyViolation(err) {
		return fmt.Errorf("db: share session %q: %w", sessionID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("db: share session %q with %q: %w", sessionID, userID, err)
	}
	return nil
}

// UnshareSession withdraws a share, or returns ErrNotFound when there was none.
func (d *Database) UnshareSession(ctx context.Context, sessionID, userID string) error {
	n, err := d.execAffected(ctx, d.db, qUnshareSession, sessionID, userID)
	if err != nil {
		return fmt.Errorf("db: unshare session %q from %q: %w", sessionID, userID, err)
	}
	if n == 0 {
		return fmt.Errorf("db: share of session %q with %q: %w", sessionID, userID, ErrNotFound)
	}
	return nil
}

// IsSessionSharedWith reports whether the session is shared with userID. It says nothing of
// orgs: callers check the session's org first.
func (d *Database) IsSessionSharedWith(ctx context.Context, sessionID, userID string) (bool, error) {
	var n int
	if err := d.queryRow(ctx, d.db, qIsShared, sessionID, userID).Scan(&n); err != nil {
		return false, fmt.Errorf("db: is session %q shared with %q: %w", sessionID, userID, err)
	}
	return n > 0, nil
}

// SessionSharePermissions returns the permissions of the session's share with userID (never
// nil for a share, so "shared with none" and "not shared" differ), or ErrNotFound when it is
// not shared with userID. The viewer socket reads it to tell control from view-only shares.
func (d *Database) SessionSharePermissions(ctx context.Context, sessionID, userID string) ([]string, error) {
	var perms []string
	err := d.queryRow(ctx, d.db, qSharePerms, sessionID, userID).Scan(jsonDest{&perms})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("db: share of session %q with %q: %w", sessionID, userID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("db: share permissions of session %q for %q: %w", sessionID, userID, err)
	}
	if perms == nil {
		perms = []string{}
	}
	return perms, nil
}
