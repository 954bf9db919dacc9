package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// MinSecretLen is the shortest HS256 secret accepted: 256 bits, the
	// size of the hash, so the key is not the weak link.
	MinSecretLen = 32
	// DefaultLeeway absorbs clock skew between the token issuer and this
	// server when checking exp and nbf.
	DefaultLeeway = 5 * time.Second
	// maxTokenLen bounds the work spent on a token before rejecting it;
	// real tokens are a few hundred bytes.
	maxTokenLen = 8 << 10
)

// Identity is what a verified browser token says. It is built only from
// verified claims, so holding one means the signature, exp and nbf passed.
type Identity struct {
	UserID       string
	OrgID        string
	K8sNamespace string // may be empty: the server then resolves the org's namespace
	Username     string
	Role         Role // never empty: an absent role claim becomes RoleUser
	ExpiresAt    time.Time
}

// Claims is the JWT claim set of PROTOCOL.md 2.1. user_id wins over sub;
// one of them, org_id and exp are required.
type Claims struct {
	UserID       string `json:"user_id,omitempty"`
	OrgID        string `json:"org_id,omitempty"`
	K8sNamespace string `json:"k8s_namespace,omitempty"`
	Role         Role   `json:"role,omitempty"`
	Username     string `json:"username,omitempty"`
	jwt.RegisteredClaims
}

// identity turns claims into an Identity. Call it only on verified claims.
func (c *Claims) identity() (Identity, error) {
	if c.ExpiresAt == nil {
		return Identity{}, ErrMissingExpiry
	}
	if strings.TrimSpace(c.OrgID) == "" {
		return Identity{}, ErrMissingOrg
	}
	user := c.UserID
	if strings.TrimSpace(user) == "" {
		user = c.Subject
	}
	if strings.TrimSpace(user) == "" {
		return Identity{}, ErrMissingUser
	}
	role := c.Role
	if role == "" {
		role = RoleUser
	}
	if !role.Valid() {
		return Identity{}, ErrInvalidRole
	}
	return Identity{
		UserID:       user,
		OrgID:        c.OrgID,
		K8sNamespace: c.K8sNamespace,
		Username:     c.Username,
		Role:         role,
		ExpiresAt:    c.ExpiresAt.UTC(),
	}, nil
}

// Options tunes a Verifier. The zero value is the production default.
type Options struct {
	// Now is the clock; nil means time.Now. Tests inject a fixed one.
	Now func() time.Time
	// Leeway is the clock skew tolerated on exp and nbf. Zero means
	// DefaultLeeway; negative is an error.
	Leeway time.Duration
}

// Verifier checks browser JWTs. It is immutable after construction and safe
// for concurrent use by many goroutines.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for secret with the default leeway. now is
// the clock (nil means time.Now).
func NewVerifier(secret []byte, now func() time.Time) (*Verifier, error) {
	return NewVerifierWithOptions(secret, Options{Now: now})
}

// NewVerifierWithOptions is NewVerifier with every knob exposed.
func NewVerifierWithOptions(secret []byte, opts Options) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrWeakSecret
	}
	if opts.Leeway < 0 {
		return nil, fmt.Errorf("auth: negative leeway %v", opts.Leeway)
	}
	if opts.Leeway == 0 {
		opts.Leeway = DefaultLeeway
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{
		// Copied so a caller reusing its buffer cannot change the key.
		secret: append([]byte(nil), secret...),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(opts.Leeway),
			jwt.WithTimeFunc(opts.Now),
		),
	}, nil
}

// Verify checks token and returns the Identity it carries. Errors are the
// sentinels of errors.go, possibly wrapped with a fixed detail; none echoes
// the token.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrMissingToken
	}
	if len(token) > maxTokenLen {
		return Identity{}, fmt.Errorf("%w: too long", ErrInvalidToken)
	}
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, v.key)
	if err != nil {
		return Identity{}, mapParseError(err)
	}
	return claims.identity()
}

// key hands the secret to the parser only for HS256; WithValidMethods
// already ensures that, and this check keeps it true if options change.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if t.Method != jwt.SigningMethodHS256 {
		return nil, ErrInvalidToken
	}
	return v.secret, nil
}

// mapParseError reduces a jwt/v5 error to our sentinels. The library's text
// is dropped because it may quote decoder output derived from the token.
// Signature failures are checked first: nothing about the claims of a token
// with a bad signature is reported.
func mapParseError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed),
		errors.Is(err, jwt.ErrTokenUnverifiable),
		errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrInvalidToken
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return ErrMissingExpiry // exp is the only claim the parser requires
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("%w: not valid yet", ErrInvalidToken)
	default:
		return ErrInvalidToken
	}
}

// Mint signs an HS256 token for id, valid for ttl from now (zero now means
// time.Now). id.ExpiresAt is ignored. It is meant for the token subcommand,
// dev mode and tests; production tokens come from the StreamSpace API.
func Mint(secret []byte, id Identity, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) < MinSecretLen {
		return "", ErrWeakSecret
	}
	if ttl <= 0 {
		return "", fmt.Errorf("auth: token ttl must be positive, got %v", ttl)
	}
	if now.IsZero() {
		now = time.Now()
	}
	if id.Role == "" {
		id.Role = RoleUser
	}
	claims := Claims{
		UserID:       id.UserID,
		OrgID:        id.OrgID,
		K8sNamespace: id.K8sNamespace,
		Role:         id.Role,
		Username:     id.Username,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   id.UserID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	// Refuse to mint what Verify would refuse.
	if _, err := claims.identity(); err != nil {
		return "", err
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
