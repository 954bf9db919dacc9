//go:build !unix

package server

import "time"

// processCPU is not measured here: the benchmarks that report it report 0.
func processCPU() time.Duration { return 0 }
