package websocket

import (
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

// writeBufferPool lends write buffers for the duration of one write, so an
// idle connection holds no write buffer.
var writeBufferPool = &sync.Pool{}

// NewUpgrader returns the upgrader this package's connections are tuned
// for: a 1 KiB read buffer (browsers send almost nothing) and pooled write
// buffers. checkOrigin may be nil when origins are checked before the
// upgrade, as the server does.
func NewUpgrader(checkOrigin func(r *http.Request) bool) *websocket.Upgrader {
	if checkOrigin == nil {
		checkOrigin = func(*http.Request) bool { return true }
	}
	return &websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		WriteBufferPool: writeBufferPool,
		CheckOrigin:     checkOrigin,
	}
}
