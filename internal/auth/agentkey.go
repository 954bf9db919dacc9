package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// AgentKeyHeader carries an agent's API key (StreamSpace's header name).
const AgentKeyHeader = "X-Agent-API-Key"

// agentKeyBytes is the entropy of an agent API key: 32 random bytes, 64 hex digits.
const agentKeyBytes = 32

// agentKeyHashPrefix names the hash scheme stored in agents.api_key_hash, so a later scheme
// can be told apart from this one.
const agentKeyHashPrefix = "sha256:"

// NewAgentKey returns a fresh agent API key: 32 bytes from crypto/rand in hex.
func NewAgentKey() string {
	b := make([]byte, agentKeyBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// HashAgentKey returns what is stored for key: "sha256:" and the hex SHA-256 of a domain tag
// and the key. A fast hash is right here, unlike for passwords: the key has 256 bits of
// entropy, so the hash cannot be searched, and a cheap check gives an attacker nothing to
// multiply (a per-request bcrypt would turn every bad key into a CPU cost for the server).
func HashAgentKey(key string) string {
	sum := sha256.Sum256([]byte("streamspace-agent-key\x00" + key))
	return agentKeyHashPrefix + hex.EncodeToString(sum[:])
}

// AgentKeyMatches reports whether key hashes to storedHash, in constant time. An empty key or
// an empty hash never matches, so an agent without a key of its own cannot be entered with an
// empty header.
func AgentKeyMatches(key, storedHash string) bool {
	if key == "" || storedHash == "" {
		return false
	}
	got := HashAgentKey(key)
	return subtle.ConstantTimeCompare([]byte(got), []byte(storedHash)) == 1
}

// BootstrapKeyMatches reports whether key is the configured bootstrap key, in constant time;
// false when no bootstrap key is configured.
func BootstrapKeyMatches(key, bootstrap string) bool {
	if key == "" || bootstrap == "" {
		return false
	}
	return secretEqual(key, bootstrap)
}

// AgentKeyFromRequest returns the key of the X-Agent-API-Key header, else of an
// "Authorization: Bearer" header; "" when there is none.
func AgentKeyFromRequest(r *http.Request) string {
	if k := strings.TrimSpace(r.Header.Get(AgentKeyHeader)); k != "" {
		return k
	}
	k, _ := BearerToken(r)
	return k
}
