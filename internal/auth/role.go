package auth

// Role is the caller's role within its organization (PROTOCOL.md 2.1).
type Role string

// The three roles a token may carry. An absent role means RoleUser.
const (
	RoleUser     Role = "user"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// Valid reports whether r is one of the three roles. Matching is exact and
// case-sensitive: a token saying "Admin" is refused rather than guessed at.
func (r Role) Valid() bool {
	switch r {
	case RoleUser, RoleOperator, RoleAdmin:
		return true
	}
	return false
}

// CanSeeWholeOrg reports whether r sees every session of its organization
// and may use the cluster and logs endpoints; a user sees only its own.
func (r Role) CanSeeWholeOrg() bool {
	return r == RoleOperator || r == RoleAdmin
}
