package models

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIDLen bounds every id that arrives from outside (session, command, agent and pod ids in
// URLs, query parameters, bodies and agent frames); real ones are far shorter.
const MaxIDLen = 256

// ValidID reports whether s can be an id: 1 to MaxIDLen bytes of valid UTF-8 with no control
// character (NUL included). Ids are checked with it where they arrive, so one that can name
// nothing is refused there rather than reaching the database, which PostgreSQL answers with an
// encoding error.
func ValidID(s string) bool {
	return s != "" && len(s) <= MaxIDLen && ValidName(s)
}

// ValidName reports whether s is valid UTF-8 with no control character, whatever its length:
// the rule for names that are stored (a pod's name), whose length is bounded elsewhere.
func ValidName(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return strings.IndexFunc(s, unicode.IsControl) < 0
}

// ValidText reports whether s can be stored as text: valid UTF-8 with no NUL (tabs and line
// breaks are text).
func ValidText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// SanitizeText makes s storable as text: invalid UTF-8 becomes U+FFFD and NUL is dropped. For
// descriptive strings that are recorded but never refused, such as a browser's User-Agent.
func SanitizeText(s string) string {
	if ValidText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
