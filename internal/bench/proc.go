package bench

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on Linux).
const clockTicks = 100

// rssKiB reads a process's resident set from /proc (0 when it cannot).
func rssKiB(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// processCPU is the user plus system CPU time a process has used (0 when it cannot be read).
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields that matter follow its closing parenthesis.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// memorySampler follows a process's resident set (or several processes') and keeps the peak.
type memorySampler struct {
	pid  int
	pids []int // or several processes together, when pid is 0
	mu   sync.Mutex
	peak int64
}

func (m *memorySampler) sample() int64 {
	var v int64
	switch {
	case m.pid > 0:
		v = rssKiB(m.pid)
	case len(m.pids) > 0:
		v = pidsRSS(m.pids)
	default:
		return 0
	}
	m.mu.Lock()
	m.peak = max(m.peak, v)
	m.mu.Unlock()
	return v
}

// settled samples every 250ms until the last second's samples lie within 1% of each other
// (the server has finished with the connections' handshakes and its collector has caught up),
// or within returns, and gives the last sample.
func (m *memorySampler) settled(within time.Duration) int64 {
	var window []int64
	deadline := time.Now().Add(within)
	for {
		window = append(window, m.sample())
		if n := len(window); n >= 5 {
			window = window[n-5:]
			lo, hi := slices.Min(window), slices.Max(window)
			if float64(hi-lo) <= 0.01*float64(hi) {
				return window[4]
			}
		}
		if time.Now().After(deadline) {
			return window[len(window)-1]
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// run samples every interval until the returned func is called; that func returns the peak.
func (m *memorySampler) run(interval time.Duration) (stop func() int64) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				m.sample()
			case <-quit:
				return
			}
		}
	}()
	return func() int64 {
		close(quit)
		<-done
		m.sample()
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.peak
	}
}

// treeCPU is the user plus system CPU time of pid and every process descending from it (a
// relay that forks a process per connection spends its time in the children), read from
// /proc; 0 when it cannot be read. Children that already exited are not counted: read it while
// they run.
func treeCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return processCPU(pid)
	}
	children := make(map[int][]int)
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(data[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if parent, err := strconv.Atoi(fields[1]); err == nil {
			children[parent] = append(children[parent], child)
		}
	}
	var total time.Duration
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		total += processCPU(queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return total
}

// pidsCPU is the CPU time of several processes together.
func pidsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, p := range pids {
		total += processCPU(p)
	}
	return total
}

// pidsRSS is the resident set of several processes together, in KiB.
func pidsRSS(pids []int) int64 {
	var total int64
	for _, p := range pids {
		total += rssKiB(p)
	}
	return total
}
