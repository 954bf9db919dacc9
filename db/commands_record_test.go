package db_test

import (
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// A command's ID, the caller's own identifier, is stored and comes back with every read of
// the command: GetCommand, the claim, and the transitions.
func TestCommandRecordID(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		c := commandRow("c1", "a1", base)
		c.ID = "api-7f3e" // the API server's own primary key
		mustCreateCommand(t, d, c)
		mustCreateCommand(t, d, commandRow("c2", "a1", base.Add(1))) // none
		if got := mustGetCommand(t, d, "c1"); got.ID != "api-7f3e" {
			t.Errorf("GetCommand: ID %q", got.ID)
		}
		if got := mustGetCommand(t, d, "c2"); got.ID != "" {
			t.Errorf("GetCommand of a command stored without one: ID %q", got.ID)
		}
		claimed, err := d.ClaimCommands(ctx, "a1", false, 0, base)
		if err != nil || len(claimed) != 2 || claimed[0].ID != "api-7f3e" || claimed[1].ID != "" {
			t.Fatalf("ClaimCommands = %+v, %v", claimed, err)
		}
		tr, err := d.AckCommand(ctx, "a1", "c1", base)
		if err != nil || !tr.Applied || tr.Command.ID != "api-7f3e" {
			t.Errorf("AckCommand = %+v, %v", tr, err)
		}
		tr, err = d.CompleteCommand(ctx, "a1", "c1", nil, base)
		if err != nil || tr.Command.ID != "api-7f3e" {
			t.Errorf("CompleteCommand = %+v, %v", tr, err)
		}
		tr, err = d.CompleteCommand(ctx, "a1", "c1", nil, base) // not applied: read back
		if err != nil || tr.Applied || tr.Command.ID != "api-7f3e" {
			t.Errorf("replayed CompleteCommand = %+v, %v", tr, err)
		}

		s := sessionRow("s1", "o1", "u1", base)
		sc := models.AgentCommand{CommandID: "c3", AgentID: "a1", Action: "start_session", ID: "api-start-s1"}
		if err := d.CreateSessionWithCommand(ctx, s, sc); err != nil {
			t.Fatal(err)
		}
		if got := mustGetCommand(t, d, "c3"); got.ID != "api-start-s1" || got.GetSessionID() != "s1" {
			t.Errorf("CreateSessionWithCommand stored %+v", got)
		}

		for _, bad := range []string{"bad\x00id", "line\nbreak", "\xff\xfe", strings.Repeat("x", models.MaxIDLen+1)} {
			c := commandRow("c-bad", "a1", base)
			c.ID = bad
			err := d.CreateCommand(ctx, c)
			if err == nil || !strings.Contains(err.Error(), "caller's id") {
				t.Errorf("CreateCommand with ID %q: %v", bad, err)
			}
			s := sessionRow("s-bad", "o1", "u1", base)
			c.CommandID = "c-bad2"
			if err := d.CreateSessionWithCommand(ctx, s, c); err == nil {
				t.Errorf("CreateSessionWithCommand with ID %q succeeded", bad)
			}
		}
		if _, err := d.GetCommand(ctx, "c-bad"); err == nil {
			t.Error("a refused command was stored")
		}
		if _, err := d.GetSession(ctx, "s-bad"); err == nil {
			t.Error("the session of a refused command was stored")
		}
	})
}
