package k8s

import (
	"context"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/streamspace/streamspace-realtime/k8s/podlog"
)

// PodLogs opens the follow stream of a pod's log with a timestamp on each
// line (see ParseLogLine), starting tailLines lines back; 0 or less means the
// whole log. The caller closes the stream; cancelling ctx also ends it. A pod
// that does not exist yields ErrPodNotFound.
func (c *Client) PodLogs(ctx context.Context, namespace, pod string, tailLines int64) (io.ReadCloser, error) {
	opts := &corev1.PodLogOptions{Follow: true, Timestamps: true}
	if tailLines > 0 {
		opts.TailLines = &tailLines
	}
	rc, err := c.typed.CoreV1().Pods(namespace).GetLogs(pod, opts).Stream(ctx)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("k8s: streaming logs of pod %s/%s: %w", namespace, pod, ErrPodNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("k8s: streaming logs of pod %s/%s: %w", namespace, pod, err)
	}
	return rc, nil
}

// ParseLogLine splits a line of a log streamed with timestamps into its time and message:
// podlog.ParseLine, which holds it so that readers of pod logs (package websocket) need not
// link client-go. The name stays for this package's callers.
func ParseLogLine(line string) (time.Time, string) { return podlog.ParseLine(line) }
