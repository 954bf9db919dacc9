package auth

import (
	"net/http/httptest"
	"testing"
)

func TestServiceTokenValid(t *testing.T) {
	t.Parallel()
	const configured = "s3rvice-token-0123456789abcdef"
	tests := []struct {
		name       string
		configured string
		target     string
		auth       string
		want       bool
	}{
		{name: "match", configured: configured, auth: "Bearer " + configured, want: true},
		{name: "scheme case-insensitive", configured: configured, auth: "bearer " + configured, want: true},
		{name: "wrong token same length", configured: configured, auth: "Bearer " + "x" + configured[1:]},
		{name: "last byte differs", configured: configured, auth: "Bearer " + configured[:len(configured)-1] + "X"},
		{name: "prefix", configured: configured, auth: "Bearer " + configured[:10]},
		{name: "longer", configured: configured, auth: "Bearer " + configured + "x"},
		{name: "case differs", configured: "abc", auth: "Bearer ABC"},
		{name: "no header", configured: configured},
		{name: "empty bearer", configured: configured, auth: "Bearer "},
		{name: "wrong scheme", configured: configured, auth: "Basic " + configured},
		{name: "no scheme", configured: configured, auth: configured},
		{name: "query is not accepted", configured: configured, target: "/?token=" + configured},
		{name: "unconfigured refuses empty", configured: "", auth: "Bearer "},
		{name: "unconfigured refuses anything", configured: "", auth: "Bearer x"},
		{name: "unconfigured refuses no header", configured: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			target := tt.target
			if target == "" {
				target = "/"
			}
			r := httptest.NewRequest("POST", target, nil)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if got := ServiceTokenValid(r, tt.configured); got != tt.want {
				t.Errorf("ServiceTokenValid = %v, want %v", got, tt.want)
			}
		})
	}
}

// secretEqual must not short-cut on length: that is why it hashes first.
// Timing cannot be asserted reliably, so check the behaviour that the
// hashing guarantees: any pair of different inputs, of any lengths, is
// unequal, and equal inputs are equal.
func TestSecretEqual(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"a", "a", true},
		{"token", "token", true},
		{"", "a", false},
		{"a", "", false},
		{"token", "tokeN", false},
		{"token", "token\x00", false},
		{"token", "toke", false},
	}
	for _, tt := range tests {
		if got := secretEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("secretEqual(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func BenchmarkServiceTokenValid(b *testing.B) {
	const configured = "s3rvice-token-0123456789abcdef"
	for _, bc := range []struct{ name, presented string }{
		{"match", configured},
		{"mismatch_first_byte", "x" + configured[1:]},
		{"mismatch_length", "x"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest("POST", "/", nil)
			r.Header.Set("Authorization", "Bearer "+bc.presented)
			for b.Loop() {
				ServiceTokenValid(r, configured)
			}
		})
	}
}
