package auth_test

import (
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

func Example() {
	secret := []byte("dev-secret-dev-secret-dev-secret") // at least 32 bytes
	now := time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)

	token, err := auth.Mint(secret, auth.Identity{UserID: "u1", OrgID: "o1", Role: auth.RoleOperator}, time.Hour, now)
	if err != nil {
		panic(err)
	}
	v, err := auth.NewVerifier(secret, func() time.Time { return now })
	if err != nil {
		panic(err)
	}

	// A browser's WebSocket upgrade carries the token in the query string.
	r := httptest.NewRequest("GET", "/api/v1/ws/sessions?token="+token, nil)
	raw, err := auth.TokenFromRequest(r)
	if err != nil {
		panic(err)
	}
	id, err := v.Verify(raw)
	if err != nil {
		fmt.Println(auth.ErrorCode(err), err)
		return
	}
	fmt.Println(id.UserID, id.OrgID, id.Role, id.Role.CanSeeWholeOrg(), id.ExpiresAt.Format(time.RFC3339))
	// Output: u1 o1 operator true 2026-11-26T11:30:00Z
}
