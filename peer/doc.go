// Package peer links the replicas of one installation to each other directly, so that a
// viewer on one replica reaches a desktop whose agent holds its socket on another without the
// desktop's bytes passing through Redis (which would carry every pixel twice and be the one
// resource every tenant shares).
//
// Between two replicas there is one link, whichever of them dialled it, and every stream
// between them goes over it. A link is TCP with TLS 1.3 for confidentiality; each end proves
// that it knows the installation's shared secret with an HMAC over the TLS session's exported
// keying material, so the proof is bound to that one TLS session and a man in the middle,
// holding two sessions with different keying material, can neither relay nor replay it. The
// certificates are ephemeral and unverified: the proofs, not a PKI, authenticate a peer. Over
// the link hashicorp/yamux multiplexes streams, each with its own flow-control window, so a
// stream whose reader stalls stops only its own sender; keepalive pings and a write timeout
// close a link that stops answering, which ends its streams and only them.
//
// Each stream is one HTTP/1.1 connection: the replica that opens it (Mesh.Dial) speaks HTTP
// over it (a WebSocket upgrade, typically), and the other serves it with Config.Handler, with
// the opener's replica name in the request's context (ReplicaFrom).
package peer
