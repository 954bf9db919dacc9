package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
)

// ServiceTokenValid reports whether r carries "Authorization: Bearer
// <serviceToken>". It is false when serviceToken is empty, so an unset
// token never opens the service endpoints. Only the header counts: a
// long-lived service token must not travel in URLs that end up in logs.
func ServiceTokenValid(r *http.Request, serviceToken string) bool {
	if serviceToken == "" {
		return false
	}
	got, ok := BearerToken(r)
	if !ok {
		return false
	}
	return secretEqual(got, serviceToken)
}

// secretEqual compares two secrets in constant time. Both are hashed first
// because subtle.ConstantTimeCompare returns early on a length mismatch,
// which would leak the secret's length.
func secretEqual(a, b string) bool {
	ha := sha256.Sum256([]byte(a))
	hb := sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
