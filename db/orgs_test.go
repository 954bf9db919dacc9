package db_test

import (
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

func TestOrganizations(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		_, err := d.GetOrganization(ctx, "nope")
		wantErr(t, err, db.ErrNotFound, "GetOrganization(missing)")

		o := orgRow("o1")
		o.CreatedAt = base
		if err := d.UpsertOrganization(ctx, o); err != nil {
			t.Fatal(err)
		}
		got, err := d.GetOrganization(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "Org o1" || got.K8sNamespace != "ns-o1" || !got.CreatedAt.Equal(base.Truncate(1000)) {
			t.Errorf("GetOrganization = %+v", got)
		}

		o.Name, o.K8sNamespace, o.CreatedAt = "Renamed", "ns2", base.Add(48*3600e9)
		if err := d.UpsertOrganization(ctx, o); err != nil {
			t.Fatal(err)
		}
		got, _ = d.GetOrganization(ctx, "o1")
		if got.Name != "Renamed" || got.K8sNamespace != "ns2" {
			t.Errorf("after update: %+v", got)
		}
		if !got.CreatedAt.Equal(base.Truncate(1000)) {
			t.Errorf("CreatedAt changed on update: %v", got.CreatedAt)
		}

		if err := d.UpsertOrganization(ctx, orgRow("")); err == nil {
			t.Error("UpsertOrganization with empty id succeeded")
		}
		noTime := orgRow("o2")
		if err := d.UpsertOrganization(ctx, noTime); err != nil {
			t.Fatal(err)
		}
		got, _ = d.GetOrganization(ctx, "o2")
		if got.CreatedAt.IsZero() {
			t.Error("zero CreatedAt not defaulted to now")
		}
	})
}
