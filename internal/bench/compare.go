package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Comparison is a side-by-side measurement: runs against the server and the baseline,
// alternated so that both see the same machine, and the medians of each figure.
type Comparison struct {
	Server   []Report `json:"server"`
	Baseline []Report `json:"baseline"`
}

// Compare alternates runs of cfg against the server and against base (the baseline hub's
// URL and PID), runs times each.
func Compare(ctx context.Context, cfg SessionsConfig, baseURL string, basePID, runs int) (Comparison, error) {
	baseCfg := cfg
	baseCfg.Server, baseCfg.PID, baseCfg.Token = baseURL, basePID, nil
	server, base, err := alternate(ctx, runs, cfg, baseCfg, func(c SessionsConfig) string { return c.Server }, RunSessions)
	return Comparison{Server: server, Baseline: base}, err
}

// alternate runs run against the server's configuration and the baseline's in turn, runs
// times each, so that both see the same machine; it stops at the first error.
func alternate[C, R any](ctx context.Context, runs int, server, base C, target func(C) string,
	run func(context.Context, C) (R, error)) (fromServer, fromBase []R, err error) {
	for i := range runs {
		for _, side := range []struct {
			cfg  C
			into *[]R
		}{{server, &fromServer}, {base, &fromBase}} {
			rep, err := run(ctx, side.cfg)
			if err != nil {
				return fromServer, fromBase, fmt.Errorf("run %d against %s: %w", i+1, target(side.cfg), err)
			}
			*side.into = append(*side.into, rep)
		}
	}
	return fromServer, fromBase, nil
}

func median(reports []Report, f func(Report) float64) float64 {
	v := make([]float64, len(reports))
	for i, r := range reports {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

// Table renders the medians and the server/baseline ratios.
func (c Comparison) Table() string {
	if len(c.Server) == 0 || len(c.Baseline) == 0 {
		return "no runs\n"
	}
	hasRSS := func(r Report) bool { return r.ServerRSSIdleKB > 0 }
	hasLiveHeap := func(r Report) bool { return r.LiveHeapConnKB > 0 }
	var b strings.Builder
	fmt.Fprintf(&b, "%-38s %14s %14s %8s   (medians of %d runs)\n", "", "server", "baseline", "ratio", len(c.Server))
	for _, m := range []struct {
		name string
		f    func(Report) float64
		// first takes run 1's figure, not the median: a process keeps memory it freed, and a
		// live heap is its last GC's, which may predate the previous run's disconnections, so
		// only a fresh process shows what connections cost.
		first bool
		// has, when set, leaves the row out unless one side measured the figure (it needs --pid,
		// or a live heap on the target's /metrics).
		has func(Report) bool
	}{
		{name: "delivery ratio %", f: func(r Report) float64 { return 100 * r.Ratio }},
		{name: "deliveries per second", f: func(r Report) float64 { return r.DeliveriesPerS }},
		{name: "latency p50 ms", f: func(r Report) float64 { return r.LatencyP50Ms }},
		{name: "latency p99 ms", f: func(r Report) float64 { return r.LatencyP99Ms }},
		{name: "server CPU µs per delivery", f: func(r Report) float64 { return r.CPUMicrosPerDel }},
		{name: "dropped clients", f: func(r Report) float64 { return float64(r.Dropped) }},
		{name: "server RSS before any connection, KiB", f: func(r Report) float64 { return float64(r.ServerRSSIdleKB) }, first: true, has: hasRSS},
		{name: "KiB per idle connection (run 1)", f: func(r Report) float64 { return r.KiBPerIdleConn }, first: true},
		{name: "live heap before any connection, KiB", f: func(r Report) float64 { return float64(r.LiveHeapIdleKB) }, first: true, has: hasLiveHeap},
		{name: "live heap KiB per connection (run 1)", f: func(r Report) float64 { return r.LiveHeapKiBPerConn }, first: true, has: hasLiveHeap},
	} {
		var s, base float64
		if m.first {
			s, base = m.f(c.Server[0]), m.f(c.Baseline[0])
		} else {
			s, base = median(c.Server, m.f), median(c.Baseline, m.f)
		}
		if m.has != nil && !m.has(c.Server[0]) && !m.has(c.Baseline[0]) {
			continue
		}
		ratio := "-"
		if base != 0 && s != 0 { // 0: not measured (or, for an idle live heap, no GC yet)
			ratio = fmt.Sprintf("%.2f×", s/base)
		}
		fmt.Fprintf(&b, "%-38s %14.2f %14.2f %8s\n", m.name, s, base, ratio)
	}
	return b.String()
}
