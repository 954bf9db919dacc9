package models

import "unicode/utf8"

// Bounds of the strings browsers and agents supply that are stored or sent on to others
// (docs/PROTOCOL.md 1.3, Ids and stored text). Free text past its bound is cut; a structural
// field past its bound refuses the request or frame that carries it.
const (
	// MaxUserAgentLen bounds a browser connection's stored User-Agent (cut).
	MaxUserAgentLen = 512
	// MaxClientIPLen bounds a browser connection's stored client address (cut).
	MaxClientIPLen = 64
	// MaxPodNameLen bounds the pod name an agent reports of a session (refused): a Kubernetes
	// object name is at most 253 characters.
	MaxPodNameLen = 253
	// MaxCommandErrorLen bounds the error text an agent reports of a failed command (cut).
	MaxCommandErrorLen = 4096
	// MaxAgentObjectBytes bounds an agent's capacity and metadata objects, as JSON (refused).
	MaxAgentObjectBytes = 16 << 10
)

// TruncateUTF8 returns s cut to at most n bytes, at a character boundary: a multi-byte
// character is never split.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
