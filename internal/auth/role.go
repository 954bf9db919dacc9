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
	return r.rank() > 0
}

// rank is the one order of the roles, user < operator < admin; 0 for anything else, which
// is below every role. Every access decision compares ranks through AtLeast.
func (r Role) rank() int {
	switch r {
	case RoleUser:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// AtLeast reports whether r is a role and ranks at or above min (user < operator < admin).
func (r Role) AtLeast(min Role) bool {
	return r.Valid() && r.rank() >= min.rank()
}

// CanSeeWholeOrg reports whether r sees every session of its organization
// and may use the cluster and logs endpoints; a user sees only its own.
func (r Role) CanSeeWholeOrg() bool {
	return r.AtLeast(RoleOperator)
}

// Scope is who an authorized request acts for: the service token, which stands above every
// role and for every organization, or the holder of a verified token, in one organization
// with one role.
type Scope struct {
	// Service is set for the service token; Identity is then zero (no organization).
	Service bool
	Identity
}

// ServiceScope is the scope of the service token.
func ServiceScope() Scope { return Scope{Service: true} }

// AtLeast reports whether the scope may do what min may: the service token always.
func (s Scope) AtLeast(min Role) bool {
	return s.Service || s.Role.AtLeast(min)
}
