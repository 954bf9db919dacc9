// Package baseline is the yardstick of the bench tool: a hub built as gorilla/websocket's chat
// example builds it (one hub goroutine with register, unregister and broadcast channels, a
// 256-slot send channel per client, read and write pumps, and queued messages joined into one
// frame with newlines), behind the same publish endpoint as the server. It lives beside the
// load generator, never in the product's code paths, so every bench run can measure a ratio
// against it on the same machine at the same moment.
package baseline

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/gorilla/websocket"
)

// The chat example's constants.
const (
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = pongWait * 9 / 10
	maxMessageSize = 512
	sendSlots      = 256
)

var newline = []byte{'\n'}

// Hub keeps the connected clients and fans broadcasts out to them from one goroutine.
type Hub struct {
	clients    map[*client]bool
	broadcast  chan []byte
	register   chan *client
	unregister chan *client
	done       chan struct{} // closed when Run returns, so pumps never wait on a hub that left
}

// NewHub returns a hub; Run serves it.
func NewHub() *Hub {
	return &Hub{
		clients:    make(map[*client]bool),
		broadcast:  make(chan []byte),
		register:   make(chan *client),
		unregister: make(chan *client),
		done:       make(chan struct{}),
	}
}

// Run is the hub's loop, until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	defer close(h.done)
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case msg := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- msg:
				default:
					close(c.send)
					delete(h.clients, c)
				}
			}
		case <-ctx.Done():
			for c := range h.clients {
				close(c.send)
				delete(h.clients, c)
			}
			return
		}
	}
}

type client struct {
	hub  *Hub
	conn *websocket.Conn
	send chan []byte
}

func (c *client) readPump() {
	defer func() {
		select {
		case c.hub.unregister <- c:
		case <-c.hub.done:
		}
		_ = c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { return c.conn.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		_ = c.conn.Close()
	}()
	for {
		select {
		case msg, ok := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				_ = c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			_, _ = w.Write(msg)
			// The example's trade: whatever else is queued rides in the same frame.
			for range len(c.send) {
				_, _ = w.Write(newline)
				_, _ = w.Write(<-c.send)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, CheckOrigin: func(*http.Request) bool { return true }}

// Handler serves the sessions socket path (any caller; the baseline has no tenancy), the
// organization broadcast endpoint the bench tool publishes to (any body, any caller) and the
// live heap at GET /metrics.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", serveLiveHeap)
	mux.HandleFunc("GET /api/v1/ws/sessions", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{hub: h, conn: conn, send: make(chan []byte, sendSlots)}
		select {
		case h.register <- c:
		case <-h.done:
			_ = conn.Close()
			return
		}
		go c.writePump()
		go c.readPump()
	})
	mux.HandleFunc("POST /api/v1/orgs/{org}/broadcast", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case h.broadcast <- bytes.TrimSpace(body):
			w.WriteHeader(http.StatusAccepted)
		case <-h.done:
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		}
	})
	return mux
}

// Serve runs a hub on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener) error {
	h := NewHub()
	go h.Run(ctx)
	return serveUntil(ctx, ln, h.Handler())
}

// serveUntil serves handler on ln until ctx ends, then shuts the server down. It collects
// once first: the runtime reports no live heap before its first GC, which a yardstick that
// allocates little at start may not have reached when bench reads its idle figure.
func serveUntil(ctx context.Context, ln net.Listener, handler http.Handler) error {
	runtime.GC()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
