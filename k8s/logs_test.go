package k8s

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/streamspace/streamspace-realtime/k8s/podlog"
)

// logServer starts an API server stand-in whose pod-log endpoint is h, and a
// Client whose typed clientset talks to it over real HTTP.
func logServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{pod}/log", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	typed, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	c := New(nil, typed, Options{})
	t.Cleanup(c.Close)
	return c
}

var logEpoch = time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)

func TestPodLogsStreamsLinesInOrder(t *testing.T) {
	const lines = 10_000
	c := logServer(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.PathValue("ns") != "streamspace-acme" || r.PathValue("pod") != "ss-alice" ||
			q.Get("follow") != "true" || q.Get("timestamps") != "true" || q.Get("tailLines") != "100" {
			t.Errorf("request %s, want ns streamspace-acme, pod ss-alice, follow, timestamps and tailLines=100", r.URL)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		bw := bufio.NewWriter(w)
		for i := range lines {
			ts := logEpoch.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
			fmt.Fprintf(bw, "%s line %d of the log\n", ts, i)
		}
		if err := bw.Flush(); err != nil {
			t.Errorf("writing log: %v", err)
		}
	})

	rc, err := c.PodLogs(t.Context(), "streamspace-acme", "ss-alice", 100)
	if err != nil {
		t.Fatalf("PodLogs: %v", err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	n := 0
	for sc.Scan() {
		ts, msg := ParseLogLine(sc.Text())
		if want := logEpoch.Add(time.Duration(n) * time.Millisecond); !ts.Equal(want) {
			t.Fatalf("line %d: time %v, want %v", n, ts, want)
		}
		if want := fmt.Sprintf("line %d of the log", n); msg != want {
			t.Fatalf("line %d: message %q, want %q", n, msg, want)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading log: %v", err)
	}
	if n != lines {
		t.Fatalf("read %d lines, want %d", n, lines)
	}
}

func TestPodLogsZeroTailReadsWholeLog(t *testing.T) {
	c := logServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("tailLines") {
			t.Errorf("tailLines sent for a whole-log request: %s", r.URL)
		}
		fmt.Fprintln(w, "2026-11-26T10:30:00Z hello")
	})
	rc, err := c.PodLogs(t.Context(), "ns", "pod", 0)
	if err != nil {
		t.Fatalf("PodLogs: %v", err)
	}
	rc.Close()
}

func TestPodLogsNotFound(t *testing.T) {
	c := logServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"pods \"x\" not found"}`)
	})
	rc, err := c.PodLogs(t.Context(), "ns", "x", 10)
	if err == nil {
		rc.Close()
		t.Fatal("PodLogs of a missing pod succeeded")
	}
	if !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("err = %v, want ErrPodNotFound", err)
	}
}

func TestPodLogsServerError(t *testing.T) {
	c := logServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "etcd is having a day", http.StatusInternalServerError)
	})
	rc, err := c.PodLogs(t.Context(), "ns", "x", 10)
	if err == nil {
		rc.Close()
		t.Fatal("PodLogs succeeded against a failing server")
	}
	if errors.Is(err, ErrPodNotFound) {
		t.Fatalf("a 500 was reported as ErrPodNotFound: %v", err)
	}
	if !apierrors.IsInternalError(err) {
		t.Fatalf("err = %v, want the wrapped 500", err)
	}
}

func TestPodLogsCancelEndsStream(t *testing.T) {
	handlerDone := make(chan struct{})
	c := logServer(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(handlerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(w, "%s tick %d\n", logEpoch.Format(time.RFC3339Nano), i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rc, err := c.PodLogs(ctx, "ns", "slow", 0)
	if err != nil {
		t.Fatalf("PodLogs: %v", err)
	}
	defer rc.Close()

	readDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
		}
		readDone <- sc.Err()
	}()
	cancel()

	select {
	case <-readDone:
	case <-time.After(time.Second):
		t.Fatal("reading the stream did not end within 1s of cancelling ctx")
	}
	select {
	case <-handlerDone:
	case <-time.After(time.Second):
		t.Fatal("the server did not see its request end within 1s of cancelling ctx")
	}
}

// TestParseLogLine checks that the k8s name stays podlog.ParseLine (whose cases are podlog's).
func TestParseLogLine(t *testing.T) {
	line := "2026-11-26T10:30:00Z hi"
	ts, msg := ParseLogLine(line)
	wantTS, wantMsg := podlog.ParseLine(line)
	if !ts.Equal(logEpoch) || !ts.Equal(wantTS) || msg != "hi" || msg != wantMsg {
		t.Errorf("ParseLogLine(%q) = %v, %q; want %v, %q", line, ts, msg, logEpoch, "hi")
	}
}
