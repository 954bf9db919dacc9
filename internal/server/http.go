// The generic helpers of every handler: JSON answers and errors, request bodies read within
// their limits, the peer's address, and closing a socket never handed to a hub.

package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	gorilla "github.com/gorilla/websocket"
)

// errorBody is the JSON of every HTTP error (PROTOCOL.md 1).
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// fail answers with a JSON error and logs the refusal once. The log names
// the path only: query strings may carry tokens and are never logged.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	s.metrics.refusals.WithLabelValues(code).Inc()
	level := s.log.Info
	if status >= 500 {
		level = s.log.Error
	}
	level("request refused", "method", r.Method, "path", r.URL.Path, "status", status, "error", code, "message", message, "remote", r.RemoteAddr)
	writeJSON(w, status, errorBody{Error: code, Message: message})
}

// writeJSON answers status with v as JSON, never cached: answers carry per-caller data.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// unavailable answers 503 for a failure of storage, logged once with its cause.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.Error(what+" failed", "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "unavailable", Message: "storage unavailable; retry"})
	s.metrics.refusals.WithLabelValues("unavailable").Inc()
}

// readBody reads at most MaxBodyBytes, answering 413 past it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	return s.readBodyUpTo(w, r, s.cfg.MaxBodyBytes, "body")
}

// readBodyUpTo reads at most limit bytes, answering 413 past it; what names the body there.
func (s *Server) readBodyUpTo(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, bool) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.fail(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("%s exceeds %d bytes", what, tooBig.Limit))
		return nil, false
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, "invalid_body", "could not read body")
		return nil, false
	}
	return raw, true
}

// decodeBody reads and decodes a JSON body into v.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	raw, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		s.fail(w, r, http.StatusBadRequest, "invalid_json", "body is not valid JSON of the expected shape: "+jsonProblem(err))
		return false
	}
	return true
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q has the wrong type", typeErr.Field)
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return fmt.Sprintf("syntax error at byte %d", syntaxErr.Offset)
	}
	return "malformed"
}

// clientIP is the peer's address as the connection sees it. Forwarded headers are not
// trusted: a load balancer's would be, but which one is in front is not configured.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// closeSocket closes an upgraded connection that was never handed to a hub.
func closeSocket(conn *gorilla.Conn, wait time.Duration, code int, reason string) {
	_ = conn.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(code, reason), time.Now().Add(wait))
	_ = conn.Close()
}
