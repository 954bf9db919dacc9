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
	var b strings.Builder
	fmt.Fprintf(&b, "%-32s %14s %14s %8s   (medians of %d runs)\n", "", "server", "baseline", "ratio", len(c.Server))
	for _, m := range []struct {
		name string
		f    func(Report) float64
	}{
		{"delivery ratio %", func(r Report) float64 { return 100 * r.Ratio }},
		{"deliveries per second", func(r Report) float64 { return r.DeliveriesPerS }},
		{"latency p50 ms", func(r Report) float64 { return r.LatencyP50Ms }},
		{"latency p99 ms", func(r Report) float64 { return r.LatencyP99Ms }},
		{"server CPU µs per delivery", func(r Report) float64 { return r.CPUMicrosPerDel }},
		{"dropped clients", func(r Report) float64 { return float64(r.Dropped) }},
		// A process keeps memory it freed, so only a fresh one shows what connections cost.
		{"KiB per idle connection (run 1)", nil},
	} {
		var s, base float64
		if m.f == nil {
			s, base = c.Server[0].KiBPerIdleConn, c.Baseline[0].KiBPerIdleConn
		} else {
			s, base = median(c.Server, m.f), median(c.Baseline, m.f)
		}
		ratio := "-"
		if base != 0 {
			ratio = fmt.Sprintf("%.2f×", s/base)
		}
		fmt.Fprintf(&b, "%-32s %14.2f %14.2f %8s\n", m.name, s, base, ratio)
	}
	return b.String()
}
