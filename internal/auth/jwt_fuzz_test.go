package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify checks that Verify never panics and accepts only what PROTOCOL.md 2.1 allows: an
// HS256 token signed with the secret, unexpired, with an org, a user and a valid role. With
// sign set, the input is taken as "header.claims" and signed with the secret, so the fuzzer
// reaches the claim checks behind the signature; without it, the input is the whole token.
// Whatever is accepted is checked here by hand, not through the jwt library, and verifies again
// to the same Identity; a refusal is one of the package's fixed texts. The corpus is in
// testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	minted := func(id Identity, ttl time.Duration) string {
		tok, err := Mint(testSecret, id, ttl, testNow)
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	good := minted(Identity{UserID: "u1", OrgID: "o1", Role: RoleAdmin, Username: "alice", K8sNamespace: "ns1"}, time.Hour)
	parts := strings.Split(good, ".")
	unsigned := func(header, claims string) string { return b64(header) + "." + b64(claims) }
	hs := `{"alg":"HS256","typ":"JWT"}`
	exp := `,"exp":` + strconv.FormatInt(testNow.Add(time.Hour).Unix(), 10)
	for _, seed := range []struct {
		token string
		sign  bool
	}{
		{good, false},
		{minted(Identity{UserID: "u2", OrgID: "o2"}, time.Second), false},
		{minted(Identity{UserID: "u3", OrgID: "o3", Role: RoleOperator}, time.Nanosecond), false},
		{parts[0] + "." + parts[1] + ".", false},                                    // signature stripped
		{parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + "A", false}, // signature altered
		{b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".", false},           // alg none
		{b64(`{"alg":"HS512","typ":"JWT"}`) + "." + parts[1] + "." + parts[2], false},
		{b64(`{"alg":"RS256","typ":"JWT"}`) + "." + parts[1] + "." + parts[2], false},
		{good + "." + parts[2], false},
		{"", false}, {"a.b.c", false}, {"....", false}, {"Bearer " + good, false},
		{parts[0] + "." + parts[1], true},
		{unsigned(hs, `{"user_id":"u","org_id":"o"`+exp+`}`), true},
		{unsigned(hs, `{"sub":"u","org_id":"o","role":"operator"`+exp+`}`), true},
		{unsigned(hs, `{"user_id":"u","org_id":"o"}`), true},                                    // no exp
		{unsigned(hs, `{"user_id":"u","org_id":"o","exp":1}`), true},                            // expired
		{unsigned(hs, `{"user_id":"u","org_id":"o","exp":"9999999999"}`), true},                 // exp a string
		{unsigned(hs, `{"user_id":"u","org_id":"o","exp":99999999999999999999999}`), true},      // exp out of range
		{unsigned(hs, `{"user_id":"u","org_id":" "`+exp+`}`), true},                             // blank org
		{unsigned(hs, `{"user_id":"u","org_id":"o","role":"Admin"`+exp+`}`), true},              // role case
		{unsigned(hs, `{"user_id":"u","org_id":"o","nbf":9999999999`+exp+`}`), true},            // not valid yet
		{unsigned(`{"alg":"none"}`, `{"user_id":"u","org_id":"o"`+exp+`}`), true},               // alg none, signed
		{unsigned(`{"alg":"HS384"}`, `{"user_id":"u","org_id":"o"`+exp+`}`), true},              // wrong alg, signed
		{unsigned(`{"alg":"HS256","alg":"none"}`, `{"user_id":"u","org_id":"o"`+exp+`}`), true}, // duplicate alg
		{unsigned(hs, `[]`), true},
	} {
		f.Add(seed.token, seed.sign)
	}
	v, err := NewVerifier(testSecret, fixedClock(testNow))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input string, sign bool) {
		token := input
		if sign {
			token = input + "." + signature(input)
		}
		id, err := v.Verify(token)
		if err != nil {
			// A fixed text cannot echo the token; matching them all also avoids taking a token
			// that happens to spell "expired" for an echo.
			if ErrorCode(err) == "unauthorized" || !refusalTexts[err.Error()] {
				t.Fatalf("refusal %q is not one of the package's fixed texts", err)
			}
			return
		}
		checkAccepted(t, token, id)
		again, err := v.Verify(token)
		if err != nil || again != id {
			t.Fatalf("accepted token verified again as %+v, %v; first %+v", again, err, id)
		}
	})
}

// refusalTexts are every text Verify may refuse with: the sentinels, two with a fixed detail.
var refusalTexts = func() map[string]bool {
	m := map[string]bool{
		ErrInvalidToken.Error() + ": too long":      true,
		ErrInvalidToken.Error() + ": not valid yet": true,
	}
	for _, err := range []error{ErrMissingToken, ErrInvalidToken, ErrTokenExpired, ErrMissingExpiry, ErrMissingOrg, ErrMissingUser, ErrInvalidRole} {
		m[err.Error()] = true
	}
	return m
}()

// checkAccepted verifies by hand what Verify accepted: three segments, an HS256 header, the
// secret's HMAC, an exp in the future (within the leeway), and an Identity with an org, a user
// and a valid role.
func checkAccepted(t *testing.T, token string, id Identity) {
	t.Helper()
	segs := strings.Split(token, ".")
	if len(segs) != 3 {
		t.Fatalf("accepted a token of %d segments", len(segs))
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(decodeSegment(t, segs[0]), &header); err != nil || header.Alg != jwt.SigningMethodHS256.Alg() {
		t.Fatalf("accepted a token whose header says alg %q (%v)", header.Alg, err)
	}
	if !hmac.Equal(decodeSegment(t, segs[2]), hmacOf(segs[0]+"."+segs[1])) {
		t.Fatal("accepted a token not signed with the secret")
	}
	if id.ExpiresAt.Before(testNow.Add(-DefaultLeeway)) {
		t.Fatalf("accepted a token that expired at %v", id.ExpiresAt)
	}
	if strings.TrimSpace(id.OrgID) == "" || strings.TrimSpace(id.UserID) == "" || !id.Role.Valid() {
		t.Fatalf("accepted an incomplete identity %+v", id)
	}
}

// decodeSegment decodes a segment as the accepted token must have it: base64url, padding
// tolerated.
func decodeSegment(t *testing.T, seg string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		t.Fatalf("accepted a token with a segment that is not base64url: %v", err)
	}
	return b
}

func hmacOf(signingInput string) []byte {
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(signingInput))
	return m.Sum(nil)
}

func signature(signingInput string) string {
	return base64.RawURLEncoding.EncodeToString(hmacOf(signingInput))
}
