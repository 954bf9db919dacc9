package server

import (
	"net/http"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// access is what an endpoint asks of its caller. authorize is the one check of it, and the
// role order it applies is auth.Role's (user < operator < admin, the service token above all).
type access struct {
	// min is the lowest role a token may hold; "" admits the service token alone.
	min auth.Role
	// upgrade marks a browser's WebSocket upgrade: its Origin is checked first, its token may
	// come in the "token" query parameter (browsers cannot set headers there), and the service
	// token is no credential.
	upgrade bool
	// code and message answer a token whose role is below min (403).
	code, message string
}

// The access of the endpoints.
var (
	// serviceOnly: the publish API, for the services of the control plane.
	serviceOnly = access{}
	// operatorAPI and adminAPI: the staff APIs, for the service token or a staff token.
	operatorAPI = access{min: auth.RoleOperator, code: "forbidden", message: "role operator required"}
	adminAPI    = access{min: auth.RoleAdmin, code: "forbidden", message: "role admin required"}
	// orgAdminAPI: an organization's endpoints; the handler checks the organization.
	orgAdminAPI = access{min: auth.RoleAdmin, code: "forbidden", message: "only the organization's admins may broadcast to it"}
	// browserSocket: the sessions socket, for any member of an organization.
	browserSocket = access{min: auth.RoleUser, upgrade: true, code: "forbidden_role", message: "sessions are for members of an organization"}
)

// staffSocket is the access of a browser socket reserved to operators and admins; what names
// what is reserved in the refusal.
func staffSocket(what string) access {
	return access{min: auth.RoleOperator, upgrade: true, code: "forbidden_role", message: what + " are for operators and admins"}
}

// authorize checks the caller against need and answers the refusal itself: 403
// forbidden_origin for an upgrade from an origin not allowed, 401 for missing or invalid
// credentials, need's 403 for a role below need.min. The scope is who the request acts for.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, need access) (auth.Scope, bool) {
	var token string
	if need.upgrade {
		if !s.origins.Allowed(r) {
			s.fail(w, r, http.StatusForbidden, "forbidden_origin", "origin not allowed")
			return auth.Scope{}, false
		}
		t, err := auth.TokenFromRequest(r)
		if err != nil {
			s.fail(w, r, http.StatusUnauthorized, auth.ErrorCode(err), err.Error())
			return auth.Scope{}, false
		}
		token = t
	} else {
		if auth.ServiceTokenValid(r, s.cfg.ServiceToken) {
			return auth.ServiceScope(), true
		}
		if need.min == "" {
			s.fail(w, r, http.StatusUnauthorized, "unauthorized", "service token required")
			return auth.Scope{}, false
		}
		t, ok := auth.BearerToken(r)
		if !ok {
			s.fail(w, r, http.StatusUnauthorized, "unauthorized", "service token or "+string(need.min)+" token required")
			return auth.Scope{}, false
		}
		token = t
	}
	id, err := s.verifier.Verify(token)
	if err != nil {
		s.fail(w, r, http.StatusUnauthorized, auth.ErrorCode(err), err.Error())
		return auth.Scope{}, false
	}
	scope := auth.Scope{Identity: id}
	if !scope.AtLeast(need.min) {
		s.fail(w, r, http.StatusForbidden, need.code, need.message)
		return auth.Scope{}, false
	}
	return scope, true
}
