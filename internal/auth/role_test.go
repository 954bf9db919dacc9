package auth

import "testing"

func TestRole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		role     Role
		valid    bool
		wholeOrg bool
	}{
		{RoleUser, true, false},
		{RoleOperator, true, true},
		{RoleAdmin, true, true},
		{"", false, false},
		{"Admin", false, false},
		{"superuser", false, false},
	}
	for _, tt := range tests {
		if got := tt.role.Valid(); got != tt.valid {
			t.Errorf("Role(%q).Valid() = %v, want %v", tt.role, got, tt.valid)
		}
		if got := tt.role.CanSeeWholeOrg(); got != tt.wholeOrg {
			t.Errorf("Role(%q).CanSeeWholeOrg() = %v, want %v", tt.role, got, tt.wholeOrg)
		}
	}
}
