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

func TestRoleAtLeast(t *testing.T) {
	t.Parallel()
	roles := []Role{RoleUser, RoleOperator, RoleAdmin}
	for i, r := range roles {
		for j, min := range roles {
			if got, want := r.AtLeast(min), i >= j; got != want {
				t.Errorf("%q.AtLeast(%q) = %v, want %v", r, min, got, want)
			}
		}
		for _, notARole := range []Role{"", "Admin", "service"} {
			if notARole.AtLeast(r) {
				t.Errorf("%q.AtLeast(%q) = true: only roles rank", notARole, r)
			}
		}
	}
}

func TestScopeAtLeast(t *testing.T) {
	t.Parallel()
	if !ServiceScope().AtLeast(RoleAdmin) {
		t.Error("the service token is below admin")
	}
	operator := Scope{Identity: Identity{OrgID: "o1", Role: RoleOperator}}
	if !operator.AtLeast(RoleOperator) || operator.AtLeast(RoleAdmin) {
		t.Error("an operator's scope does not rank as an operator")
	}
	if (Scope{}).AtLeast(RoleUser) {
		t.Error("an empty scope ranks as a user")
	}
}
