package auth

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{ErrMissingToken, "missing_token"},
		{ErrInvalidToken, "invalid_token"},
		{fmt.Errorf("%w: not valid yet", ErrInvalidToken), "invalid_token"},
		{ErrTokenExpired, "token_expired"},
		{ErrMissingExpiry, "missing_expiry"},
		{ErrMissingOrg, "missing_org"},
		{ErrMissingUser, "missing_user"},
		{ErrInvalidRole, "invalid_role"},
		{errors.New("other"), "unauthorized"},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
