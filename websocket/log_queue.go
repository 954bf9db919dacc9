package websocket

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Bounds of one log stream's queue between its source and the browser's writer.
const (
	defaultLogQueueLines = 16 << 10
	defaultLogQueueBytes = 4 << 20
)

// errLogOverflow ends a stream whose browser fell too far behind a source that cannot wait.
var errLogOverflow = errors.New("log stream overflow: the browser is not reading fast enough")

// logRecord is one log line and the time its source gave it (zero when it gave none).
type logRecord struct {
	Line string
	At   time.Time
}

// logQueue carries one log stream from its source to the browser's writer, in order. It is
// bounded in lines and bytes: a source that can wait (a Kubernetes log reader) waits for room,
// so a slow browser slows the API server's stream; one that cannot (an agent's read loop, shared
// with its heartbeats and commands) overflows it, which ends the stream.
type logQueue struct {
	maxLines, maxBytes int

	mu    sync.Mutex
	recs  []logRecord
	bytes int
	heard bool // the source sent something: a line or its end
	ended bool
	err   error

	ready chan struct{} // capacity 1: there is something to take
	room  chan struct{} // capacity 1: lines were taken
}

func newLogQueue(maxLines, maxBytes int) *logQueue {
	return &logQueue{
		maxLines: maxLines, maxBytes: maxBytes,
		ready: make(chan struct{}, 1), room: make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// fits reports whether n more records of size more bytes fit; callers hold mu. An empty queue
// takes anything, so one huge line cannot wedge a stream.
func (q *logQueue) fits(n, size int) bool {
	return len(q.recs) == 0 || (len(q.recs)+n <= q.maxLines && q.bytes+size <= q.maxBytes)
}

// offer appends recs without waiting. When they do not fit, the stream ends with
// errLogOverflow and offer reports false; it also reports false once the stream ended.
func (q *logQueue) offer(recs ...logRecord) bool {
	size := 0
	for _, r := range recs {
		size += len(r.Line)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return false
	}
	q.heard = true
	if !q.fits(len(recs), size) {
		q.endLocked(errLogOverflow)
		return false
	}
	q.recs = append(q.recs, recs...)
	q.bytes += size
	signal(q.ready)
	return true
}

// put appends r, waiting for room until ctx ends or the stream ended.
func (q *logQueue) put(ctx context.Context, r logRecord) error {
	for {
		q.mu.Lock()
		if q.ended {
			q.mu.Unlock()
			return context.Canceled
		}
		q.heard = true
		if q.fits(1, len(r.Line)) {
			q.recs = append(q.recs, r)
			q.bytes += len(r.Line)
			q.mu.Unlock()
			signal(q.ready)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish ends the stream after what is queued; err nil is a normal end. The first end wins.
func (q *logQueue) finish(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.ended {
		q.heard = true
		q.endLocked(err)
	}
}

func (q *logQueue) endLocked(err error) {
	q.ended, q.err = true, err
	signal(q.ready)
	signal(q.room)
}

// take returns what is queued and, once the queue is empty and the stream ended, done with
// the stream's error.
func (q *logQueue) take() (recs []logRecord, done bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	recs, q.recs, q.bytes = q.recs, nil, 0
	if len(recs) > 0 {
		signal(q.room)
	}
	return recs, q.ended && len(recs) == 0, q.err
}

// hasHeard reports whether the source sent anything yet.
func (q *logQueue) hasHeard() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.heard
}
