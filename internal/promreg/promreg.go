// Package promreg registers Prometheus collectors so that several instances of one component
// in a process (two hubs, two replicas in a test) share the collectors registered first
// instead of failing.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it, or the collector of the same description
// already registered. On any other registration error c is returned unregistered: metrics are
// never a reason to stop serving.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
