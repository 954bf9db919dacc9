package agentclient

import (
	"sync"
	"time"
)

// work counts the goroutines an Agent runs beside its connection (command handlers and log
// streams), so that Run can wait for them within a bound. Unlike sync.WaitGroup it may be
// waited on and added to at the same time. Safe for concurrent use.
type work struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while n is 0
}

// Go runs f in a new goroutine counted until f returns.
func (w *work) Go(f func()) {
	w.add()
	go func() {
		defer w.done()
		f()
	}()
}

// add counts a goroutine about to start; its done must follow. Counting before the goroutine
// exists lets a wait that begins in between see it.
func (w *work) add() {
	w.mu.Lock()
	if w.n == 0 {
		w.idle = make(chan struct{})
	}
	w.n++
	w.mu.Unlock()
}

func (w *work) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n--
	if w.n == 0 {
		close(w.idle)
		w.idle = nil
	}
}

// running reports how many goroutines are counted.
func (w *work) running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// wait blocks until no goroutine is counted, stop is closed or timeout fires; it reports
// whether none is left.
func (w *work) wait(stop <-chan struct{}, timeout <-chan time.Time) bool {
	for {
		w.mu.Lock()
		idle := w.idle
		w.mu.Unlock()
		if idle == nil {
			return true
		}
		select {
		case <-idle:
		case <-stop:
			return w.running() == 0
		case <-timeout:
			return w.running() == 0
		}
	}
}
