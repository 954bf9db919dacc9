// Package auth decides who is calling the realtime server: browsers carry a
// JWT, services and admins a shared service token, and WebSocket upgrades are
// checked against an Origin policy. Agent API keys are not handled here.
//
// What a reviewer must know:
//
//   - Only HS256 is accepted. The parser is pinned with jwt.WithValidMethods
//     and the key function checks the method again, so "alg":"none", HS384,
//     RS256 and any other algorithm are ErrInvalidToken, never a fallback.
//   - An Identity is built only from claims whose signature, exp and nbf have
//     been verified; nothing reads claims from an unverified token.
//   - Tokens are accepted in the "token" query parameter because browsers
//     cannot set headers on a WebSocket upgrade. Query strings therefore carry
//     credentials and must never be logged. Service tokens are header-only.
//   - Every error this package returns is a fixed text safe to send to a
//     client: none echoes the token or the parser's detail.
//
// All exported types are immutable after construction and safe for
// concurrent use.
package auth
