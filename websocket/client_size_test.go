package websocket

import (
	"testing"
	"unsafe"
)

// An idle browser costs its Client: keep it in the runtime's 512-byte size class
// (docs/PERFORMANCE.md, idle memory).
func TestClientFitsItsSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(Client{}); size > 512 {
		t.Fatalf("Client is %d bytes, over the 512-byte size class", size)
	}
}
