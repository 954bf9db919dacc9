package auth

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestTokenFromRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		target  string
		auth    []string
		want    string
		wantErr error
	}{
		{name: "header", target: "/ws", auth: []string{"Bearer hdr"}, want: "hdr"},
		{name: "query", target: "/ws?token=qry", want: "qry"},
		{name: "header wins over query", target: "/ws?token=qry", auth: []string{"Bearer hdr"}, want: "hdr"},
		{name: "scheme case-insensitive", target: "/ws", auth: []string{"bearer hdr"}, want: "hdr"},
		{name: "scheme upper case", target: "/ws", auth: []string{"BEARER hdr"}, want: "hdr"},
		{name: "extra spaces trimmed", target: "/ws", auth: []string{"Bearer   hdr  "}, want: "hdr"},
		{name: "basic auth falls back to query", target: "/ws?token=qry", auth: []string{"Basic dXNlcjpwYXNz"}, want: "qry"},
		{name: "empty bearer falls back to query", target: "/ws?token=qry", auth: []string{"Bearer "}, want: "qry"},
		{name: "scheme without token", target: "/ws", auth: []string{"Bearer"}, wantErr: ErrMissingToken},
		{name: "token without scheme", target: "/ws", auth: []string{"hdr"}, wantErr: ErrMissingToken},
		{name: "first header counts", target: "/ws", auth: []string{"Bearer one", "Bearer two"}, want: "one"},
		{name: "first query value counts", target: "/ws?token=a&token=b", want: "a"},
		{name: "query escaped", target: "/ws?token=a%2Eb%2Ec", want: "a.b.c"},
		{name: "empty query", target: "/ws?token=", wantErr: ErrMissingToken},
		{name: "other query parameter", target: "/ws?access_token=x", wantErr: ErrMissingToken},
		{name: "neither", target: "/ws", wantErr: ErrMissingToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", tt.target, nil)
			for _, a := range tt.auth {
				r.Header.Add("Authorization", a)
			}
			got, err := TokenFromRequest(r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("token = %q, want %q", got, tt.want)
			}
		})
	}
}
