package auth

import (
	"net/http"
	"strings"
)

// BearerToken returns the credential of an "Authorization: Bearer <token>"
// header. The scheme is matched case-insensitively (RFC 7235).
func BearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// TokenFromRequest returns the browser's JWT: the Bearer header first, else
// the "token" query parameter, which exists because browsers cannot set
// headers on a WebSocket upgrade. The URL therefore holds a credential and
// must never be logged. ErrMissingToken when neither is present.
func TokenFromRequest(r *http.Request) (string, error) {
	if token, ok := BearerToken(r); ok {
		return token, nil
	}
	if r.URL != nil {
		if token := strings.TrimSpace(r.URL.Query().Get("token")); token != "" {
			return token, nil
		}
	}
	return "", ErrMissingToken
}
