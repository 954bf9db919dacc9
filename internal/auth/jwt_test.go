package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef") // exactly MinSecretLen
	testNow    = time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)
)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newTestVerifier(t *testing.T) *Verifier {
	t.Helper()
	v, err := NewVerifier(testSecret, fixedClock(testNow))
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// validClaims is a complete, valid claim set; tests derive variants with
// with().
func validClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"user_id":       "u1",
		"org_id":        "o1",
		"k8s_namespace": "ns1",
		"role":          "operator",
		"username":      "alice",
		"exp":           testNow.Add(time.Hour).Unix(),
	}
}

// with returns a copy of c with kv applied; a nil value deletes the key.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

func hs256(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	return sign(t, jwt.SigningMethodHS256, testSecret, claims)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valid := hs256(t, validClaims())
	validParts := strings.Split(valid, ".")
	payload := b64JSON(t, validClaims())
	unsafeNone := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims())
	expiredBadSig := hs256(t, with(validClaims(), "exp", testNow.Add(-time.Hour).Unix()))
	expiredBadSig = expiredBadSig[:strings.LastIndex(expiredBadSig, ".")+1] + validParts[2]

	wantID := Identity{
		UserID: "u1", OrgID: "o1", K8sNamespace: "ns1", Username: "alice",
		Role: RoleOperator, ExpiresAt: testNow.Add(time.Hour),
	}
	withID := func(f func(*Identity)) Identity { id := wantID; f(&id); return id }

	tests := []struct {
		name    string
		token   string
		want    Identity
		wantErr error
	}{
		{name: "valid", token: valid, want: wantID},

		// Algorithms: only HS256 with our secret.
		{name: "alg none hand-crafted", token: b64(`{"alg":"none","typ":"JWT"}`) + "." + payload + ".", wantErr: ErrInvalidToken},
		{name: "alg none with signature", token: b64(`{"alg":"none","typ":"JWT"}`) + "." + payload + "." + validParts[2], wantErr: ErrInvalidToken},
		{name: "alg None", token: b64(`{"alg":"None","typ":"JWT"}`) + "." + payload + ".", wantErr: ErrInvalidToken},
		{name: "alg NONE", token: b64(`{"alg":"NONE","typ":"JWT"}`) + "." + payload + ".", wantErr: ErrInvalidToken},
		{name: "alg empty", token: b64(`{"alg":"","typ":"JWT"}`) + "." + payload + ".", wantErr: ErrInvalidToken},
		{name: "alg absent", token: b64(`{"typ":"JWT"}`) + "." + payload + ".", wantErr: ErrInvalidToken},
		{name: "alg none library-signed", token: unsafeNone, wantErr: ErrInvalidToken},
		{name: "HS384 same secret", token: sign(t, jwt.SigningMethodHS384, testSecret, validClaims()), wantErr: ErrInvalidToken},
		{name: "HS512 same secret", token: sign(t, jwt.SigningMethodHS512, testSecret, validClaims()), wantErr: ErrInvalidToken},
		{name: "RS256", token: sign(t, jwt.SigningMethodRS256, rsaKey, validClaims()), wantErr: ErrInvalidToken},
		{name: "ES256", token: sign(t, jwt.SigningMethodES256, ecKey, validClaims()), wantErr: ErrInvalidToken},
		{name: "HS256 other secret", token: sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes-long!"), validClaims()), wantErr: ErrInvalidToken},
		{name: "tampered payload", token: validParts[0] + "." + b64JSON(t, with(validClaims(), "role", "admin")) + "." + validParts[2], wantErr: ErrInvalidToken},
		{name: "signature stripped", token: validParts[0] + "." + validParts[1] + ".", wantErr: ErrInvalidToken},
		{name: "expired with bad signature", token: expiredBadSig, wantErr: ErrInvalidToken},

		// Time.
		{name: "expired", token: hs256(t, with(validClaims(), "exp", testNow.Add(-time.Hour).Unix())), wantErr: ErrTokenExpired},
		{name: "expired beyond leeway", token: hs256(t, with(validClaims(), "exp", testNow.Add(-6*time.Second).Unix())), wantErr: ErrTokenExpired},
		{name: "expired within leeway", token: hs256(t, with(validClaims(), "exp", testNow.Add(-3*time.Second).Unix())),
			want: withID(func(id *Identity) { id.ExpiresAt = testNow.Add(-3 * time.Second) })},
		{name: "not valid yet", token: hs256(t, with(validClaims(), "nbf", testNow.Add(time.Hour).Unix())), wantErr: ErrInvalidToken},
		{name: "nbf within leeway", token: hs256(t, with(validClaims(), "nbf", testNow.Add(3*time.Second).Unix())), want: wantID},
		{name: "nbf past", token: hs256(t, with(validClaims(), "nbf", testNow.Add(-time.Minute).Unix())), want: wantID},
		{name: "missing exp", token: hs256(t, with(validClaims(), "exp", nil)), wantErr: ErrMissingExpiry},
		{name: "exp as string", token: hs256(t, with(validClaims(), "exp", "tomorrow")), wantErr: ErrInvalidToken},

		// Claims.
		{name: "missing org", token: hs256(t, with(validClaims(), "org_id", nil)), wantErr: ErrMissingOrg},
		{name: "empty org", token: hs256(t, with(validClaims(), "org_id", "")), wantErr: ErrMissingOrg},
		{name: "blank org", token: hs256(t, with(validClaims(), "org_id", "  ")), wantErr: ErrMissingOrg},
		{name: "numeric org", token: hs256(t, with(validClaims(), "org_id", 5)), wantErr: ErrInvalidToken},
		{name: "missing user", token: hs256(t, with(validClaims(), "user_id", nil)), wantErr: ErrMissingUser},
		{name: "empty user and sub", token: hs256(t, with(validClaims(), "user_id", "", "sub", "")), wantErr: ErrMissingUser},
		{name: "sub only", token: hs256(t, with(validClaims(), "user_id", nil, "sub", "s1")),
			want: withID(func(id *Identity) { id.UserID = "s1" })},
		{name: "user_id wins over sub", token: hs256(t, with(validClaims(), "sub", "s1")), want: wantID},
		{name: "empty user_id falls back to sub", token: hs256(t, with(validClaims(), "user_id", "", "sub", "s1")),
			want: withID(func(id *Identity) { id.UserID = "s1" })},
		{name: "role absent defaults to user", token: hs256(t, with(validClaims(), "role", nil)),
			want: withID(func(id *Identity) { id.Role = RoleUser })},
		{name: "role empty defaults to user", token: hs256(t, with(validClaims(), "role", "")),
			want: withID(func(id *Identity) { id.Role = RoleUser })},
		{name: "role admin", token: hs256(t, with(validClaims(), "role", "admin")),
			want: withID(func(id *Identity) { id.Role = RoleAdmin })},
		{name: "role wrong case", token: hs256(t, with(validClaims(), "role", "Admin")), wantErr: ErrInvalidRole},
		{name: "role unknown", token: hs256(t, with(validClaims(), "role", "superuser")), wantErr: ErrInvalidRole},
		{name: "role numeric", token: hs256(t, with(validClaims(), "role", 1)), wantErr: ErrInvalidToken},
		{name: "namespace absent", token: hs256(t, with(validClaims(), "k8s_namespace", nil)),
			want: withID(func(id *Identity) { id.K8sNamespace = "" })},

		// Garbage.
		{name: "empty", token: "", wantErr: ErrMissingToken},
		{name: "one segment", token: "garbage", wantErr: ErrInvalidToken},
		{name: "two segments", token: "a.b", wantErr: ErrInvalidToken},
		{name: "three junk segments", token: "a.b.c", wantErr: ErrInvalidToken},
		{name: "four segments", token: valid + ".x", wantErr: ErrInvalidToken},
		{name: "dots only", token: "..", wantErr: ErrInvalidToken},
		{name: "header not JSON", token: b64("not json") + "." + payload + "." + validParts[2], wantErr: ErrInvalidToken},
		{name: "payload not JSON", token: validParts[0] + "." + b64("not json") + "." + validParts[2], wantErr: ErrInvalidToken},
		{name: "payload array", token: validParts[0] + "." + b64("[1,2]") + "." + validParts[2], wantErr: ErrInvalidToken},
		{name: "non-ascii", token: "ñ.ü.ß", wantErr: ErrInvalidToken},
		{name: "leading space", token: " " + valid, wantErr: ErrInvalidToken},
		{name: "bearer prefix left in", token: "Bearer " + valid, wantErr: ErrInvalidToken},
		{name: "too long", token: valid + strings.Repeat("A", maxTokenLen), wantErr: ErrInvalidToken},
	}

	v := newTestVerifier(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(tt.token)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
				}
				if got != (Identity{}) {
					t.Errorf("Verify returned identity %+v with error", got)
				}
				assertNoEcho(t, err, tt.token)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got != tt.want {
				t.Errorf("Verify = %+v\nwant     %+v", got, tt.want)
			}
		})
	}
}

// assertNoEcho fails if err's text contains the token or any long piece of
// it: error texts go back to clients and into logs.
func assertNoEcho(t *testing.T, err error, token string) {
	t.Helper()
	msg := err.Error()
	for _, part := range append(strings.Split(token, "."), token) {
		if len(part) >= 4 && strings.Contains(msg, part) {
			t.Errorf("error %q echoes token material %q", msg, part)
		}
	}
}

func TestVerifyErrorTexts(t *testing.T) {
	t.Parallel()
	// The texts are part of the client contract; keep them fixed.
	for _, err := range []error{ErrMissingToken, ErrInvalidToken, ErrTokenExpired, ErrMissingExpiry, ErrMissingOrg, ErrMissingUser, ErrInvalidRole} {
		if strings.ContainsAny(err.Error(), "{}\"") {
			t.Errorf("error text %q looks like it carries data", err)
		}
	}
}

func TestNewVerifier(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secret  []byte
		opts    Options
		wantErr error
	}{
		{name: "nil secret", secret: nil, wantErr: ErrWeakSecret},
		{name: "31 bytes", secret: testSecret[:31], wantErr: ErrWeakSecret},
		{name: "32 bytes", secret: testSecret},
		{name: "custom leeway", secret: testSecret, opts: Options{Leeway: time.Minute}},
		{name: "negative leeway", secret: testSecret, opts: Options{Leeway: -time.Second}, wantErr: errAny},
	}
	for _, tt := range tests {
		v, err := NewVerifierWithOptions(tt.secret, tt.opts)
		switch {
		case tt.wantErr == errAny && err == nil,
			tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr),
			tt.wantErr == nil && err != nil:
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.wantErr)
		case err == nil && v == nil:
			t.Errorf("%s: nil verifier without error", tt.name)
		}
	}
}

var errAny = errors.New("any error")

func TestVerifierLeewayOption(t *testing.T) {
	t.Parallel()
	v, err := NewVerifierWithOptions(testSecret, Options{Now: fixedClock(testNow), Leeway: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tok := hs256(t, with(validClaims(), "exp", testNow.Add(-30*time.Second).Unix()))
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("30s past exp with 1m leeway: %v", err)
	}
	tok = hs256(t, with(validClaims(), "exp", testNow.Add(-2*time.Minute).Unix()))
	if _, err := v.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("2m past exp with 1m leeway: err = %v, want ErrTokenExpired", err)
	}
}

func TestVerifierUsesInjectedClock(t *testing.T) {
	t.Parallel()
	now := testNow
	var mu sync.Mutex
	v, err := NewVerifier(testSecret, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	if err != nil {
		t.Fatal(err)
	}
	tok := hs256(t, validClaims()) // exp = testNow + 1h
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	mu.Lock()
	now = testNow.Add(2 * time.Hour)
	mu.Unlock()
	if _, err := v.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("after expiry: err = %v, want ErrTokenExpired", err)
	}
}

func TestVerifierCopiesSecret(t *testing.T) {
	t.Parallel()
	secret := append([]byte(nil), testSecret...)
	v, err := NewVerifier(secret, fixedClock(testNow))
	if err != nil {
		t.Fatal(err)
	}
	for i := range secret {
		secret[i] = 'x'
	}
	if _, err := v.Verify(hs256(t, validClaims())); err != nil {
		t.Errorf("verifier affected by caller mutating the secret: %v", err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	v := newTestVerifier(t)
	good := hs256(t, validClaims())
	bad := hs256(t, with(validClaims(), "org_id", nil))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(good); err != nil {
					t.Errorf("goroutine %d: %v", i, err)
					return
				}
				if _, err := v.Verify(bad); !errors.Is(err, ErrMissingOrg) {
					t.Errorf("goroutine %d: err = %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestMint(t *testing.T) {
	t.Parallel()
	v := newTestVerifier(t)
	base := Identity{UserID: "u1", OrgID: "o1", K8sNamespace: "ns1", Username: "alice", Role: RoleAdmin}
	tests := []struct {
		name    string
		secret  []byte
		id      Identity
		ttl     time.Duration
		want    Identity
		wantErr error
	}{
		{name: "round trip", secret: testSecret, id: base, ttl: time.Hour,
			want: Identity{UserID: "u1", OrgID: "o1", K8sNamespace: "ns1", Username: "alice", Role: RoleAdmin, ExpiresAt: testNow.Add(time.Hour)}},
		{name: "role defaults to user", secret: testSecret, id: Identity{UserID: "u1", OrgID: "o1"}, ttl: time.Minute,
			want: Identity{UserID: "u1", OrgID: "o1", Role: RoleUser, ExpiresAt: testNow.Add(time.Minute)}},
		{name: "ExpiresAt ignored", secret: testSecret, id: Identity{UserID: "u1", OrgID: "o1", ExpiresAt: testNow.Add(-time.Hour)}, ttl: time.Minute,
			want: Identity{UserID: "u1", OrgID: "o1", Role: RoleUser, ExpiresAt: testNow.Add(time.Minute)}},
		{name: "weak secret", secret: testSecret[:16], id: base, ttl: time.Hour, wantErr: ErrWeakSecret},
		{name: "zero ttl", secret: testSecret, id: base, ttl: 0, wantErr: errAny},
		{name: "negative ttl", secret: testSecret, id: base, ttl: -time.Hour, wantErr: errAny},
		{name: "no org", secret: testSecret, id: Identity{UserID: "u1"}, ttl: time.Hour, wantErr: ErrMissingOrg},
		{name: "no user", secret: testSecret, id: Identity{OrgID: "o1"}, ttl: time.Hour, wantErr: ErrMissingUser},
		{name: "bad role", secret: testSecret, id: Identity{UserID: "u1", OrgID: "o1", Role: "root"}, ttl: time.Hour, wantErr: ErrInvalidRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := Mint(tt.secret, tt.id, tt.ttl, testNow)
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("Mint err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			got, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify minted token: %v", err)
			}
			if got != tt.want {
				t.Errorf("Verify(Mint) = %+v\nwant          %+v", got, tt.want)
			}
		})
	}
}

func TestMintIsHS256WithUserIDAndSub(t *testing.T) {
	t.Parallel()
	tok, err := Mint(testSecret, Identity{UserID: "u1", OrgID: "o1"}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, claims)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Method != jwt.SigningMethodHS256 {
		t.Errorf("alg = %s, want HS256", parsed.Method.Alg())
	}
	if claims["user_id"] != "u1" || claims["sub"] != "u1" || claims["role"] != "user" {
		t.Errorf("claims = %v", claims)
	}
}

func TestMintDefaultClock(t *testing.T) {
	t.Parallel()
	tok, err := Mint(testSecret, Identity{UserID: "u1", OrgID: "o1"}, time.Minute, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("token minted and verified on the real clock: %v", err)
	}
}
