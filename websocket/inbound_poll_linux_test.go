//go:build linux

package websocket

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// TestPollerAnswersOthersWhileOneFloods: one browser keeps its socket full (no frame rate
// limit here), and another's pings are still answered promptly, because a wake reads at most
// maxReadsPerWake chunks of one socket before the others.
func TestPollerAnswersOthersWhileOneFloods(t *testing.T) {
	m := startManager(t, nil, Config{ClientMessageRate: -1, MaxMessageSize: 1 << 20, PongWait: time.Hour})
	base := sessionsServer(t, m)
	flooder := dial(t, base, params("org", "o", "user", "flooder"))
	quiet := dial(t, base, params("org", "o", "user", "quiet"))
	testkit.Eventually(t, 5*time.Second, "2 clients", func() bool { return m.Hub().ClientCount() == 2 })

	var stop atomic.Bool
	var sentSoFar atomic.Int64
	flooded := make(chan int64)
	go func() {
		payload := bytes.Repeat([]byte("x"), 64<<10)
		var sent int64
		for !stop.Load() {
			_ = flooder.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := flooder.WriteMessage(websocket.BinaryMessage, payload); err != nil {
				break
			}
			sent += int64(len(payload))
			sentSoFar.Store(sent)
		}
		flooded <- sent
	}()
	go func() { // the flooder's own frames (pings of the server) are read and dropped
		for {
			if _, _, err := flooder.ReadMessage(); err != nil {
				return
			}
		}
	}()

	pongs := make(chan struct{}, 1)
	quiet.SetPongHandler(func(string) error {
		pongs <- struct{}{}
		return nil
	})
	go func() {
		for {
			if _, _, err := quiet.ReadMessage(); err != nil {
				return
			}
		}
	}()
	testkit.Eventually(t, 10*time.Second, "the flood under way", func() bool { return sentSoFar.Load() >= 4<<20 })
	var slowest time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		if err := quiet.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-pongs:
		case <-time.After(5 * time.Second):
			t.Fatalf("ping %d not answered within 5 s while another client floods", i)
		}
		slowest = max(slowest, time.Since(start))
		time.Sleep(25 * time.Millisecond) // spread over the flood
	}
	stop.Store(true)
	sent := <-flooded
	if sent < 4<<20 {
		t.Fatalf("the flooder sent only %d bytes: the socket was not kept full", sent)
	}
	t.Logf("flooder sent %d MiB; slowest of 20 pongs to the other client %v", sent>>20, slowest)
	if m.Hub().ClientCount() != 2 {
		t.Fatalf("%d clients, want both still connected", m.Hub().ClientCount())
	}
}
