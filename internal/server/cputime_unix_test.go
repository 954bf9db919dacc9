//go:build unix

package server

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process has used, user and system. For websockify that
// leaves out the relay, which is a process of its own: compare it between runs of one path.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
