package auth

import "errors"

// Sentinel errors, checked with errors.Is. Their texts are safe to return to
// a client; ErrorCode maps them to the "error" field of PROTOCOL.md 1.
var (
	ErrMissingToken  = errors.New("missing token")
	ErrInvalidToken  = errors.New("invalid token")
	ErrTokenExpired  = errors.New("token expired")
	ErrMissingExpiry = errors.New("token has no exp claim")
	ErrMissingOrg    = errors.New("token has no org_id claim")
	ErrMissingUser   = errors.New("token has no user_id or sub claim")
	ErrInvalidRole   = errors.New("token role must be user, operator or admin")

	// ErrWeakSecret is a configuration error: the JWT secret is shorter than
	// MinSecretLen bytes.
	ErrWeakSecret = errors.New("jwt secret must be at least 32 bytes")
	// ErrInvalidOrigin is a configuration error: an allow-list entry is not
	// scheme://host[:port] or "*".
	ErrInvalidOrigin = errors.New("invalid allowed origin")
)

// ErrorCode returns the machine-readable code for an error of this package,
// so every handler answers the same code for the same failure. Unknown errors
// map to "unauthorized".
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrMissingToken):
		return "missing_token"
	case errors.Is(err, ErrTokenExpired):
		return "token_expired"
	case errors.Is(err, ErrMissingExpiry):
		return "missing_expiry"
	case errors.Is(err, ErrMissingOrg):
		return "missing_org"
	case errors.Is(err, ErrMissingUser):
		return "missing_user"
	case errors.Is(err, ErrInvalidRole):
		return "invalid_role"
	case errors.Is(err, ErrInvalidToken):
		return "invalid_token"
	default:
		return "unauthorized"
	}
}
