package baseline

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Floor is the yardstick below the baseline: a server that writes each broadcast once to each
// connection from the publishing request, with no queue, no goroutine hand-off and no joining.
// It is not a server anyone should run (one slow client stalls every broadcast); it measures
// what one write per delivery costs on the machine, the floor of a server that may not join
// messages into one frame.
type Floor struct {
	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
}

// FloorHandler serves the same paths as Hub.Handler.
func (f *Floor) FloorHandler() http.Handler {
	f.conns = make(map[*websocket.Conn]struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", serveLiveHeap)
	mux.HandleFunc("GET /api/v1/ws/sessions", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[conn] = struct{}{}
		f.mu.Unlock()
		go func() { // reads until the peer goes, then forgets the connection
			for {
				if _, _, err := conn.NextReader(); err != nil {
					break
				}
			}
			f.mu.Lock()
			delete(f.conns, conn)
			f.mu.Unlock()
			_ = conn.Close()
		}()
	})
	mux.HandleFunc("POST /api/v1/orgs/{org}/broadcast", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		msg := bytes.TrimSpace(body)
		f.mu.Lock() // one broadcast at a time: each connection has one writer
		defer f.mu.Unlock()
		for conn := range f.conns {
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = conn.WriteMessage(websocket.TextMessage, msg)
		}
		w.WriteHeader(http.StatusAccepted)
	})
	return mux
}

// ServeFloor runs the floor server on ln until ctx ends.
func ServeFloor(ctx context.Context, ln net.Listener) error {
	f := &Floor{}
	return serveUntil(ctx, ln, f.FloorHandler())
}
