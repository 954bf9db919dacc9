package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/streamspace/streamspace-realtime/models"
)

var (
	qUpsertOrganization = newQuery(`
		INSERT INTO {organizations} (id, name, k8s_namespace, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, k8s_namespace = excluded.k8s_namespace`)
	qGetOrganization = newQuery(`
		SELECT id, name, k8s_namespace, created_at FROM {organizations} WHERE id = ?`)
)

// UpsertOrganization creates the org or updates its name and namespace. CreatedAt is kept
// from the first write; when zero it is set to now.
func (d *Database) UpsertOrganization(ctx context.Context, org models.Organization) error {
	if org.ID == "" {
		return errors.New("db: upsert organization: empty id")
	}
	if org.CreatedAt.IsZero() {
		org.CreatedAt = d.now()
	}
	if _, err := d.exec(ctx, d.db, qUpsertOrganization,
		org.ID, org.Name, org.K8sNamespace, d.timeArg(org.CreatedAt)); err != nil {
		return fmt.Errorf("db: upsert organization %q: %w", org.ID, err)
	}
	return nil
}

// GetOrganization returns the org, or ErrNotFound.
func (d *Database) GetOrganization(ctx context.Context, id string) (models.Organization, error) {
	var org models.Organization
	err := d.queryRow(ctx, d.db, qGetOrganization, id).
		Scan(&org.ID, &org.Name, &org.K8sNamespace, timeDest{&org.CreatedAt})
	if errors.Is(err, sql.ErrNoRows) {
		return models.Organization{}, fmt.Errorf("db: organization %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return models.Organization{}, fmt.Errorf("db: get organization %q: %w", id, err)
	}
	return org, nil
}
