package db_test

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestCommandCRUD(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		exp := base.Add(time.Hour)
		c := commandRow("c1", "a1", base)
		c.SessionID, c.ExpiresAt = models.OptionalString("s1"), &exp
		// A new command starts fresh whatever lifecycle fields the caller left in it.
		c.Attempts, c.ErrorMessage, c.Result, c.SentAt = 5, models.OptionalString("boom"), map[string]any{"x": 1.0}, &exp
		mustCreateCommand(t, d, c)
		wantErr(t, d.CreateCommand(ctx, commandRow("c1", "a2", base)), db.ErrConflict, "CreateCommand(duplicate)")

		got := mustGetCommand(t, d, "c1")
		wantExp := exp.Truncate(time.Microsecond)
		want := models.AgentCommand{
			CommandID: "c1", AgentID: "a1", SessionID: models.OptionalString("s1"), Action: "start_session",
			Payload: map[string]any{"template": "firefox"}, Status: models.CommandStatusPending,
			CreatedAt: base.Truncate(time.Microsecond), ExpiresAt: &wantExp,
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetCommand =\n %+v\nwant\n %+v", got, want)
		}
		_, err := d.GetCommand(ctx, "missing")
		wantErr(t, err, db.ErrNotFound, "GetCommand(missing)")

		before := time.Now().Add(-time.Second)
		mustCreateCommand(t, d, models.AgentCommand{CommandID: "c2", AgentID: "a1", Action: "stop_session"})
		c2 := mustGetCommand(t, d, "c2")
		if c2.Status != models.CommandStatusPending || c2.Payload == nil || len(c2.Payload) != 0 ||
			c2.CreatedAt.Before(before) || c2.ExpiresAt != nil || c2.Result != nil {
			t.Errorf("command with defaults = %+v", c2)
		}
		for _, bad := range []models.AgentCommand{
			{AgentID: "a1", Action: "x"},
			{CommandID: "b", Action: "x"},
			{CommandID: "b", AgentID: "a1"},
			{CommandID: "b", AgentID: "a1", Action: "x", Status: models.CommandStatusSent},
		} {
			if err := d.CreateCommand(ctx, bad); err == nil {
				t.Errorf("CreateCommand(%+v) succeeded", bad)
			}
		}
	})
}

func TestCreateSessionWithCommand(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		if err := d.CreateSessionWithCommand(ctx, sessionRow("s1", "o1", "u1", base), commandRow("c1", "a1", base)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetSession(ctx, "s1"); err != nil {
			t.Error(err)
		}
		if c := mustGetCommand(t, d, "c1"); c.GetSessionID() != "s1" {
			t.Errorf("command SessionID = %q, want the session's id s1", c.GetSessionID())
		}

		// The session exists: the new command must not be stored either.
		err := d.CreateSessionWithCommand(ctx, sessionRow("s1", "o1", "u1", base), commandRow("c2", "a1", base))
		wantErr(t, err, db.ErrConflict, "CreateSessionWithCommand(existing session)")
		_, err = d.GetCommand(ctx, "c2")
		wantErr(t, err, db.ErrNotFound, "command of a refused session")

		// The command exists: the new session must be rolled back.
		err = d.CreateSessionWithCommand(ctx, sessionRow("s2", "o1", "u1", base), commandRow("c1", "a1", base))
		wantErr(t, err, db.ErrConflict, "CreateSessionWithCommand(existing command)")
		_, err = d.GetSession(ctx, "s2")
		wantErr(t, err, db.ErrNotFound, "session of a refused command")

		// Invalid input on either side stores nothing.
		mismatch := commandRow("c3", "a1", base)
		mismatch.SessionID = models.OptionalString("other")
		noAction := commandRow("c3", "a1", base)
		noAction.Action = ""
		for i, c := range []models.AgentCommand{mismatch, noAction} {
			if err := d.CreateSessionWithCommand(ctx, sessionRow("s3", "o1", "u1", base), c); err == nil {
				t.Errorf("case %d: CreateSessionWithCommand with a bad command succeeded", i)
			}
		}
		if err := d.CreateSessionWithCommand(ctx, models.Session{ID: "s3"}, commandRow("c3", "a1", base)); err == nil {
			t.Error("CreateSessionWithCommand with a session without org succeeded")
		}
		_, err = d.GetSession(ctx, "s3")
		wantErr(t, err, db.ErrNotFound, "session of an invalid call")
		_, err = d.GetCommand(ctx, "c3")
		wantErr(t, err, db.ErrNotFound, "command of an invalid call")
	})
}

func TestClaimCommands(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		past, future := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
		// Created out of order; b and c share created_at so id breaks the tie.
		for _, c := range []models.AgentCommand{
			commandRow("c", "a1", base.Add(2*time.Microsecond)),
			commandRow("a", "a1", base.Add(time.Microsecond)),
			commandRow("d", "a1", base.Add(time.Second)),
			commandRow("b", "a1", base.Add(2*time.Microsecond)),
			commandRow("e", "a1", base.Add(2*time.Second)),
			commandRow("0-newest", "a1", base.Add(time.Minute)), // sorts first by id, last by time
			commandRow("other", "a2", base),
		} {
			mustCreateCommand(t, d, c)
		}
		late := commandRow("late", "a1", base) // deadline passed, not yet swept
		late.ExpiresAt = &past
		inTime := commandRow("in-time", "a1", base.Add(3*time.Second))
		inTime.ExpiresAt = &future
		mustCreateCommand(t, d, late, inTime)
		if _, ok, err := d.MarkCommandSent(ctx, "d", base); !ok || err != nil {
			t.Fatalf("MarkCommandSent(d) = %v, %v", ok, err)
		}
		if _, err := d.AckCommand(ctx, "a1", "e", base); err != nil {
			t.Fatal(err)
		}

		at := time.Now().UTC().Truncate(time.Microsecond) // deadlines are judged at the claim time
		steps := []struct {
			includeSent bool
			limit       int
			want        []string
			attempts    []int
		}{
			{false, 2, []string{"a", "b"}, []int{1, 1}},
			{false, 0, []string{"c", "in-time", "0-newest"}, []int{1, 1, 1}},
			{false, -1, []string{}, nil},
			// After a reconnect: every unacknowledged command again, one more attempt each.
			{true, 0, []string{"a", "b", "c", "d", "in-time", "0-newest"}, []int{2, 2, 2, 2, 2, 2}},
		}
		for _, st := range steps {
			got, err := d.ClaimCommands(ctx, "a1", st.includeSent, st.limit, at)
			if err != nil {
				t.Fatal(err)
			}
			if g := commandIDs(got); fmt.Sprint(g) != fmt.Sprint(st.want) {
				t.Fatalf("ClaimCommands(includeSent=%v, limit=%d) = %v, want %v", st.includeSent, st.limit, g, st.want)
			}
			for i, c := range got {
				if c.Status != models.CommandStatusSent || c.Attempts != st.attempts[i] || c.SentAt == nil || !c.SentAt.Equal(at) {
					t.Errorf("claimed %s: status %s attempts %d sent_at %v", c.CommandID, c.Status, c.Attempts, c.SentAt)
				}
			}
		}
		for id, want := range map[string]string{"e": models.CommandStatusAck, "late": models.CommandStatusPending, "other": models.CommandStatusPending} {
			if c, _ := d.GetCommand(ctx, id); c.Status != want {
				t.Errorf("command %s is %s after claims, want %s", id, c.Status, want)
			}
		}
		none, err := d.ClaimCommands(ctx, "nobody", true, 0, at)
		if err != nil || none == nil || len(none) != 0 {
			t.Errorf("ClaimCommands(unknown agent) = %v, %v; want empty non-nil", none, err)
		}
	})
}

func TestMarkCommandSent(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreateCommand(t, d, commandRow("c1", "a1", base))
		for want := 1; want <= 3; want++ {
			at := base.Add(time.Duration(want) * time.Second)
			attempt, ok, err := d.MarkCommandSent(ctx, "c1", at)
			if err != nil || !ok || attempt != want {
				t.Fatalf("MarkCommandSent #%d = %d, %v, %v", want, attempt, ok, err)
			}
			c := mustGetCommand(t, d, "c1")
			if c.Status != models.CommandStatusSent || c.Attempts != want || !timeIs(c.SentAt, at) {
				t.Errorf("after send #%d: %+v", want, c)
			}
		}
		// Once acknowledged it is never sent again.
		if _, err := d.AckCommand(ctx, "a1", "c1", base.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		attempt, ok, err := d.MarkCommandSent(ctx, "c1", base.Add(time.Hour))
		if err != nil || ok || attempt != 3 {
			t.Errorf("MarkCommandSent(acked) = %d, %v, %v; want 3, false, nil", attempt, ok, err)
		}
		if c := mustGetCommand(t, d, "c1"); c.Status != models.CommandStatusAck || !timeIs(c.SentAt, base.Add(3*time.Second)) {
			t.Errorf("MarkCommandSent changed an acked command: %+v", c)
		}
		_, _, err = d.MarkCommandSent(ctx, "missing", base)
		wantErr(t, err, db.ErrNotFound, "MarkCommandSent(missing)")
	})
}

// TestCommandTransitionsNeverBackwards applies every operation to a command in every status:
// an allowed move lands in its status, any other call changes nothing at all.
func TestCommandTransitionsNeverBackwards(t *testing.T) {
	t.Parallel()
	statuses := []string{models.CommandStatusPending, models.CommandStatusSent, models.CommandStatusAck,
		models.CommandStatusCompleted, models.CommandStatusFailed, models.CommandStatusExpired}
	ops := []string{"send", "ack", "complete", "fail", "expire"}
	moves := map[string]map[string]string{ // from → op → to; missing means no change
		models.CommandStatusPending: {"send": "sent", "ack": "ack", "complete": "completed", "fail": "failed", "expire": "expired"},
		models.CommandStatusSent:    {"send": "sent", "ack": "ack", "complete": "completed", "fail": "failed", "expire": "expired"},
		models.CommandStatusAck:     {"complete": "completed", "fail": "failed", "expire": "expired"},
	}
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		// Cases run in order on one database. Each case's deadline is earlier than every
		// earlier case's, so its ExpireCommands reaches only its own command.
		deadline := base.Add(24 * time.Hour)
		for _, from := range statuses {
			for _, op := range ops {
				deadline = deadline.Add(-time.Minute)
				id := from + "-" + op
				before := commandIn(t, d, id, from, deadline)
				at := deadline.Add(time.Second)
				var (
					applied bool
					err     error
				)
				switch op {
				case "send":
					var attempt int
					attempt, applied, err = d.MarkCommandSent(ctx, id, at)
					if err == nil && applied != (attempt == before.Attempts+1) {
						t.Errorf("%s: attempt %d after %d (applied %v)", id, attempt, before.Attempts, applied)
					}
				case "expire":
					var n int64
					n, err = d.ExpireCommands(ctx, deadline)
					applied = n == 1
					if n > 1 {
						t.Errorf("%s: ExpireCommands moved %d commands", id, n)
					}
				default:
					var tr db.Transition
					switch op {
					case "ack":
						tr, err = d.AckCommand(ctx, "a1", id, at)
					case "complete":
						tr, err = d.CompleteCommand(ctx, "a1", id, map[string]any{"ok": true}, at)
					case "fail":
						tr, err = d.FailCommand(ctx, "a1", id, "it broke", at)
					}
					applied = tr.Applied
					if err == nil && (tr.Status != tr.Command.Status || tr.Command.CommandID != id) {
						t.Errorf("%s: transition %+v does not describe the command", id, tr)
					}
					want := before
					want.Payload = nil // transitions leave the payload unread
					if err == nil && !tr.Applied && !reflect.DeepEqual(tr.Command, want) {
						t.Errorf("%s: unapplied transition returned\n %+v\nwant\n %+v", id, tr.Command, want)
					}
				}
				if err != nil {
					t.Errorf("%s: %v", id, err)
					continue
				}
				after := mustGetCommand(t, d, id)
				to, allowed := moves[from][op]
				switch {
				case allowed && (!applied || after.Status != to):
					t.Errorf("%s: applied %v, status %s; want applied, %s", id, applied, after.Status, to)
				case !allowed && (applied || !reflect.DeepEqual(after, before)):
					t.Errorf("%s: applied %v; command went from\n %+v\nto\n %+v", id, applied, before, after)
				}
			}
		}
	})
}

func TestCompleteAndFailCommand(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreateCommand(t, d, commandRow("c1", "a1", base), commandRow("c2", "a1", base), commandRow("c3", "a1", base))
		t1, t2 := base.Add(time.Second), base.Add(time.Minute)

		// Completing an unacknowledged command also sets acknowledged_at.
		tr, err := d.CompleteCommand(ctx, "a1", "c1", map[string]any{"podName": "p1"}, t1)
		if err != nil || !tr.Applied || tr.Status != models.CommandStatusCompleted {
			t.Fatalf("CompleteCommand = %+v, %v", tr, err)
		}
		c := tr.Command
		if c.Result["podName"] != "p1" || !timeIs(c.CompletedAt, t1) || !timeIs(c.AcknowledgedAt, t1) || c.Payload != nil {
			t.Errorf("completed command = %+v (want its payload left unread)", c)
		}
		completed := mustGetCommand(t, d, "c1")
		// A replayed completion keeps the first result; a late failure or ack changes nothing.
		tr, err = d.CompleteCommand(ctx, "a1", "c1", map[string]any{"podName": "p2"}, t2)
		if err != nil || tr.Applied || tr.Status != models.CommandStatusCompleted || tr.Command.Result["podName"] != "p1" {
			t.Errorf("replayed CompleteCommand = %+v, %v", tr, err)
		}
		if tr, err := d.FailCommand(ctx, "a1", "c1", "late", t2); err != nil || tr.Applied {
			t.Errorf("FailCommand(completed) = %+v, %v", tr, err)
		}
		if tr, err := d.AckCommand(ctx, "a1", "c1", t2); err != nil || tr.Applied || tr.Status != models.CommandStatusCompleted {
			t.Errorf("AckCommand(completed) = %+v, %v", tr, err)
		}
		if got := mustGetCommand(t, d, "c1"); !reflect.DeepEqual(got, completed) {
			t.Errorf("replays changed the command:\n %+v\nwant\n %+v", got, completed)
		}

		// An acknowledged command keeps its ack time when it fails.
		if _, err := d.AckCommand(ctx, "a1", "c2", t1); err != nil {
			t.Fatal(err)
		}
		tr, err = d.FailCommand(ctx, "a1", "c2", "no capacity", t2)
		if err != nil || !tr.Applied || tr.Command.GetErrorMessage() != "no capacity" || tr.Command.Result != nil ||
			!timeIs(tr.Command.AcknowledgedAt, t1) || !timeIs(tr.Command.CompletedAt, t2) {
			t.Errorf("FailCommand(ack) = %+v, %v", tr, err)
		}

		// The control plane (empty agent) fails a command of any agent.
		tr, err = d.FailCommand(ctx, "", "c3", "attempts exhausted", t2)
		if err != nil || !tr.Applied || tr.Status != models.CommandStatusFailed || tr.Command.GetErrorMessage() != "attempts exhausted" {
			t.Errorf("FailCommand(control plane) = %+v, %v", tr, err)
		}
		_, err = d.FailCommand(ctx, "", "missing", "x", t2)
		wantErr(t, err, db.ErrNotFound, "FailCommand(control plane, missing)")
	})
}

// TestCommandOfAnotherAgent checks that an agent can neither move nor learn about another
// agent's command: it looks exactly like a missing one.
func TestCommandOfAnotherAgent(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreateCommand(t, d, commandRow("c1", "a1", base))
		if _, _, err := d.MarkCommandSent(ctx, "c1", base); err != nil {
			t.Fatal(err)
		}
		before := mustGetCommand(t, d, "c1")
		for _, id := range []string{"c1", "missing"} {
			tr, err := d.AckCommand(ctx, "a2", id, base.Add(time.Second))
			wantErr(t, err, db.ErrNotFound, "AckCommand(a2, "+id+")")
			if tr.Command.CommandID != "" || tr.Status != "" {
				t.Errorf("AckCommand(a2, %s) revealed %+v", id, tr)
			}
			_, err = d.CompleteCommand(ctx, "a2", id, map[string]any{"x": 1.0}, base.Add(time.Second))
			wantErr(t, err, db.ErrNotFound, "CompleteCommand(a2, "+id+")")
			_, err = d.FailCommand(ctx, "a2", id, "x", base.Add(time.Second))
			wantErr(t, err, db.ErrNotFound, "FailCommand(a2, "+id+")")
		}
		if after := mustGetCommand(t, d, "c1"); !reflect.DeepEqual(after, before) {
			t.Errorf("another agent changed the command:\n %+v\nwant\n %+v", after, before)
		}
	})
}

// TestCommandRaces runs, for many commands at once, a send against an ack and an ack against
// a completion. Whatever the order, a command must end in the later protocol status.
func TestCommandRaces(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		const n = 50
		for i := range n {
			mustCreateCommand(t, d, commandRow(fmt.Sprintf("sa-%02d", i), "a1", base), commandRow(fmt.Sprintf("ac-%02d", i), "a1", base))
			if i%2 == 1 { // half of the send-vs-ack commands are resends
				if _, _, err := d.MarkCommandSent(ctx, fmt.Sprintf("sa-%02d", i), base); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := d.MarkCommandSent(ctx, fmt.Sprintf("ac-%02d", i), base); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4*n)
		completed := make(chan db.Transition, n)
		start := make(chan struct{})
		at := base.Add(time.Second)
		for i := range n {
			sa, ac := fmt.Sprintf("sa-%02d", i), fmt.Sprintf("ac-%02d", i)
			wg.Go(func() {
				<-start
				if _, _, err := d.MarkCommandSent(ctx, sa, at); err != nil {
					errs <- err
				}
			})
			wg.Go(func() {
				<-start
				if _, err := d.AckCommand(ctx, "a1", sa, at); err != nil {
					errs <- err
				}
			})
			wg.Go(func() {
				<-start
				if _, err := d.AckCommand(ctx, "a1", ac, at); err != nil {
					errs <- err
				}
			})
			wg.Go(func() {
				<-start
				tr, err := d.CompleteCommand(ctx, "a1", ac, map[string]any{"i": float64(i)}, at)
				if err != nil {
					errs <- err
				}
				completed <- tr
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		close(completed)
		for err := range errs {
			t.Errorf("racing call: %v", err)
		}
		for tr := range completed {
			if !tr.Applied {
				t.Errorf("CompleteCommand(%s) lost to an ack: %+v", tr.Command.CommandID, tr)
			}
		}
		for i := range n {
			sa := mustGetCommand(t, d, fmt.Sprintf("sa-%02d", i))
			if sa.Status != models.CommandStatusAck || sa.AcknowledgedAt == nil {
				t.Errorf("%s: status %s after send vs ack, want ack", sa.CommandID, sa.Status)
			}
			ac := mustGetCommand(t, d, fmt.Sprintf("ac-%02d", i))
			if ac.Status != models.CommandStatusCompleted || ac.Result["i"] != float64(i) {
				t.Errorf("%s: status %s result %v after ack vs complete, want completed", ac.CommandID, ac.Status, ac.Result)
			}
		}
		counts, err := d.CountCommands(ctx, "a1")
		if err != nil || counts[models.CommandStatusAck] != n || counts[models.CommandStatusCompleted] != n || len(counts) != 2 {
			t.Errorf("CountCommands = %v, %v", counts, err)
		}
	})
}

func TestExpireCommands(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		deadline, later := base.Add(time.Minute), base.Add(time.Hour)
		for _, s := range []string{models.CommandStatusPending, models.CommandStatusSent, models.CommandStatusAck, models.CommandStatusCompleted} {
			commandIn(t, d, s, s, deadline)
		}
		mustCreateCommand(t, d, commandRow("no-deadline", "a1", base))
		future := commandRow("future", "a1", base)
		future.ExpiresAt = &later
		mustCreateCommand(t, d, future)
		completed := mustGetCommand(t, d, models.CommandStatusCompleted)

		now := deadline.Add(time.Second)
		n, err := d.ExpireCommands(ctx, now)
		if err != nil || n != 3 {
			t.Fatalf("ExpireCommands = %d, %v; want 3", n, err)
		}
		for _, id := range []string{models.CommandStatusPending, models.CommandStatusSent, models.CommandStatusAck} {
			if c := mustGetCommand(t, d, id); c.Status != models.CommandStatusExpired || !timeIs(c.CompletedAt, now) {
				t.Errorf("%s after expiry: %+v", id, c)
			}
		}
		if c := mustGetCommand(t, d, models.CommandStatusCompleted); !reflect.DeepEqual(c, completed) {
			t.Errorf("expiry changed a completed command: %+v", c)
		}
		for _, id := range []string{"no-deadline", "future"} {
			if c := mustGetCommand(t, d, id); c.Status != models.CommandStatusPending {
				t.Errorf("%s: status %s, want pending", id, c.Status)
			}
		}
		if n, err := d.ExpireCommands(ctx, now); err != nil || n != 0 {
			t.Errorf("second ExpireCommands = %d, %v; want 0", n, err)
		}
		all, err := d.CountCommands(ctx, "")
		want := map[string]int{models.CommandStatusExpired: 3, models.CommandStatusCompleted: 1, models.CommandStatusPending: 2}
		if err != nil || !reflect.DeepEqual(all, want) {
			t.Errorf("CountCommands(all) = %v, %v; want %v", all, err, want)
		}
		none, err := d.CountCommands(ctx, "nobody")
		if err != nil || none == nil || len(none) != 0 {
			t.Errorf("CountCommands(nobody) = %v, %v", none, err)
		}
	})
}

func commandRow(id, agent string, created time.Time) models.AgentCommand {
	return models.AgentCommand{
		CommandID: id, AgentID: agent, Action: "start_session",
		Payload: map[string]any{"template": "firefox"}, CreatedAt: created,
	}
}

func mustCreateCommand(t *testing.T, d *db.Database, cs ...models.AgentCommand) {
	t.Helper()
	for _, c := range cs {
		if err := d.CreateCommand(t.Context(), c); err != nil {
			t.Fatalf("CreateCommand(%s): %v", c.CommandID, err)
		}
	}
}

func mustGetCommand(t *testing.T, d *db.Database, id string) models.AgentCommand {
	t.Helper()
	c, err := d.GetCommand(t.Context(), id)
	if err != nil {
		t.Fatalf("GetCommand(%s): %v", id, err)
	}
	return c
}

// commandIn creates a command of agent a1 with the given deadline and moves it to status
// through the public API, the only way a command changes status.
func commandIn(t *testing.T, d *db.Database, id, status string, deadline time.Time) models.AgentCommand {
	t.Helper()
	ctx := t.Context()
	c := commandRow(id, "a1", base)
	c.ExpiresAt = &deadline
	mustCreateCommand(t, d, c)
	var err error
	switch status {
	case models.CommandStatusPending:
	case models.CommandStatusSent:
		_, _, err = d.MarkCommandSent(ctx, id, base)
	case models.CommandStatusAck:
		_, err = d.AckCommand(ctx, "a1", id, base)
	case models.CommandStatusCompleted:
		_, err = d.CompleteCommand(ctx, "a1", id, map[string]any{"first": true}, base)
	case models.CommandStatusFailed:
		_, err = d.FailCommand(ctx, "a1", id, "first failure", base)
	case models.CommandStatusExpired:
		_, err = d.ExpireCommands(ctx, deadline)
	}
	got := mustGetCommand(t, d, id)
	if err != nil || got.Status != status {
		t.Fatalf("commandIn(%s, %s): status %s, %v", id, status, got.Status, err)
	}
	return got
}

// timeIs reports whether an optional timestamp is at, to the stored microsecond.
func timeIs(p *time.Time, at time.Time) bool {
	return p != nil && p.Equal(at.Truncate(time.Microsecond))
}

func commandIDs(cs []models.AgentCommand) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.CommandID
	}
	return out
}
