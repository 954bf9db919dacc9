package db_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// base is a fixed past instant with sub-microsecond digits, to show what precision survives.
var base = time.Date(2025, 11, 26, 10, 30, 0, 123456789, time.UTC)

func orgRow(id string) models.Organization {
	return models.Organization{ID: id, Name: "Org " + id, K8sNamespace: "ns-" + id}
}

func sessionRow(id, org, user string, created time.Time) models.Session {
	return models.Session{
		ID: id, OrgID: org, UserID: user, Namespace: "ns-" + org, Template: "firefox",
		State: models.SessionStateRunning, PodName: "pod-" + id, URL: "https://x/" + id,
		CPU: "1", Memory: "2Gi", Platform: "kubernetes", AgentID: "agent-1",
		IdleTimeoutSeconds: 600, CreatedAt: created, UpdatedAt: created,
	}
}

func mustCreate(t *testing.T, d *db.Database, ss ...models.Session) {
	t.Helper()
	for _, s := range ss {
		if err := d.CreateSession(t.Context(), s); err != nil {
			t.Fatalf("CreateSession(%s): %v", s.ID, err)
		}
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func ids(ss []models.Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func sameIDs(got []models.Session, want ...string) error {
	g := ids(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		return fmt.Errorf("got sessions %v, want %v", g, want)
	}
	return nil
}
