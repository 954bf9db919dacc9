package db_test

import (
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

func TestShares(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "owner", base))

		shared := func(user string) bool {
			t.Helper()
			ok, err := d.IsSessionSharedWith(ctx, "s1", user)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if shared("u2") {
			t.Error("shared before ShareSession")
		}
		if err := d.ShareSession(ctx, "s1", "u2", []string{"view"}); err != nil {
			t.Fatal(err)
		}
		// Sharing again replaces the permissions instead of failing.
		if err := d.ShareSession(ctx, "s1", "u2", []string{"view", "control"}); err != nil {
			t.Fatal(err)
		}
		if err := d.ShareSession(ctx, "s1", "u3", nil); err != nil {
			t.Fatal(err)
		}
		if !shared("u2") || !shared("u3") || shared("u4") {
			t.Errorf("shared u2=%v u3=%v u4=%v, want true true false", shared("u2"), shared("u3"), shared("u4"))
		}
		var perms string
		if err := d.SQL().QueryRowContext(ctx, d.Expand("SELECT permissions FROM {session_shares} WHERE user_id = 'u2'")).Scan(&perms); err != nil {
			t.Fatal(err)
		}
		if perms != `["view","control"]` {
			t.Errorf("stored permissions = %s", perms)
		}

		if err := d.UnshareSession(ctx, "s1", "u2"); err != nil {
			t.Fatal(err)
		}
		if shared("u2") {
			t.Error("still shared after UnshareSession")
		}
		wantErr(t, d.UnshareSession(ctx, "s1", "u2"), db.ErrNotFound, "UnshareSession(twice)")
		wantErr(t, d.ShareSession(ctx, "missing", "u2", nil), db.ErrNotFound, "ShareSession(missing session)")

		// Shares go with their session.
		if err := d.DeleteSession(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if shared("u3") {
			t.Error("share survived DeleteSession")
		}
	})
}

func TestSessionSharePermissions(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "owner", base))
		_, err := d.SessionSharePermissions(ctx, "s1", "u2")
		wantErr(t, err, db.ErrNotFound, "SessionSharePermissions(not shared)")
		if err := d.ShareSession(ctx, "s1", "u2", []string{"view", "control"}); err != nil {
			t.Fatal(err)
		}
		if err := d.ShareSession(ctx, "s1", "u3", nil); err != nil {
			t.Fatal(err)
		}
		perms, err := d.SessionSharePermissions(ctx, "s1", "u2")
		if err != nil {
			t.Fatal(err)
		}
		if len(perms) != 2 || perms[0] != "view" || perms[1] != "control" {
			t.Errorf("u2 permissions = %q, want [view control]", perms)
		}
		perms, err = d.SessionSharePermissions(ctx, "s1", "u3")
		if err != nil {
			t.Fatal(err)
		}
		if perms == nil || len(perms) != 0 {
			t.Errorf("u3 permissions = %#v, want an empty list", perms)
		}
		// Sharing again replaces the permissions.
		if err := d.ShareSession(ctx, "s1", "u2", []string{"view"}); err != nil {
			t.Fatal(err)
		}
		if perms, err = d.SessionSharePermissions(ctx, "s1", "u2"); err != nil || len(perms) != 1 || perms[0] != "view" {
			t.Errorf("u2 permissions after reshare = %q, %v; want [view]", perms, err)
		}
		_, err = d.SessionSharePermissions(ctx, "missing", "u2")
		wantErr(t, err, db.ErrNotFound, "SessionSharePermissions(missing session)")
	})
}
