package websocket

import (
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

// writeBufferPool lends write buffers for the duration of one write, so an
// idle connection holds no write buffer.
var writeBufferPool = &sync.Pool{}

// NewUpgrader returns the upgrader browser connections are tuned for: the
// smallest read buffer gorilla allows (browsers send almost nothing, and
// sessions and metrics sockets on plain TCP are read without it) and pooled
// write buffers. Agents, which send much more, want a larger ReadBufferSize.
// checkOrigin may be nil when origins are checked before the upgrade, as the
// server does.
func NewUpgrader(checkOrigin func(r *http.Request) bool) *websocket.Upgrader {
	if checkOrigin == nil {
		checkOrigin = func(*http.Request) bool { return true }
	}
	return &websocket.Upgrader{
		ReadBufferSize:  maxControlPayload,
		WriteBufferSize: 4096,
		WriteBufferPool: writeBufferPool,
		CheckOrigin:     checkOrigin,
	}
}
