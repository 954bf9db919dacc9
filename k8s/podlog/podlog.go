// Package podlog is what a reader of pod logs needs without a Kubernetes client: the error for
// a pod that does not exist and the parsing of a timestamped log line. It imports nothing of
// client-go, so package websocket (and every program that embeds it) can stream the logs a
// source hands it without linking and initializing client-go; package k8s, which talks to the
// cluster, uses the same two.
package podlog

import (
	"errors"
	"strings"
	"time"
)

// ErrPodNotFound means the pod whose logs were asked for does not exist, or not for the
// caller. It is one error for every layer (k8s.ErrPodNotFound and websocket.ErrPodNotFound are
// this value), so a caller checks one sentinel whichever layer found the pod missing.
var ErrPodNotFound = errors.New("pod not found")

// ParseLine splits a line of a log streamed with timestamps
// ("2026-11-26T10:30:00.123456789Z message") into its time and message. A
// line without a valid RFC 3339 prefix returns the zero time and the whole
// line, so output that was not stamped still reaches the reader.
func ParseLine(line string) (time.Time, string) {
	stamp, msg, found := strings.Cut(line, " ")
	t, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return time.Time{}, line
	}
	if !found {
		msg = ""
	}
	return t, msg
}
