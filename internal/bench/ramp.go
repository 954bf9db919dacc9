package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RampConfig is a run that raises the broadcast rate step by step, on the same connections,
// until the server falls behind: fewer than MinRatio of the deliveries within a step (99%), a
// p99 latency above MaxP99 (250ms), or a client dropped. Each step lasts Duration; the rate
// starts at Rate and is multiplied by Factor (1.5) each step, for at most MaxSteps (12).
type RampConfig struct {
	SessionsConfig
	MaxP99   time.Duration
	MinRatio float64
	Factor   float64
	MaxSteps int
}

func (c RampConfig) withDefaults() RampConfig {
	c.SessionsConfig = c.SessionsConfig.withDefaults()
	if c.MaxP99 <= 0 {
		c.MaxP99 = 250 * time.Millisecond
	}
	if c.MinRatio <= 0 {
		c.MinRatio = 0.99
	}
	if c.Factor <= 1 {
		c.Factor = 1.5
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = 12
	}
	return c
}

// RampReport is every step of a ramp, and the last one the server held.
type RampReport struct {
	Clients        int      `json:"clients"`
	Connected      int      `json:"connected"`
	KiBPerIdleConn float64  `json:"kibPerIdleConnection,omitempty"`
	Steps          []Report `json:"steps"`
	// Held is the index in Steps of the fastest step the server held (-1: none).
	Held int `json:"held"`
	// MaxSustainedDeliveriesPerS and MaxSustainedRate are that step's.
	MaxSustainedDeliveriesPerS float64 `json:"maxSustainedDeliveriesPerSecond"`
	MaxSustainedRate           float64 `json:"maxSustainedRate"`
	// StoppedBy says why the ramp ended.
	StoppedBy string `json:"stoppedBy"`
}

// RunRamp connects the clients once and ramps the rate on them.
func RunRamp(ctx context.Context, cfg RampConfig) (RampReport, error) {
	cfg = cfg.withDefaults()
	run, err := connectRun(ctx, cfg.SessionsConfig)
	defer run.close()
	out := RampReport{Clients: cfg.Clients, Connected: run.rep.Connected, KiBPerIdleConn: run.rep.KiBPerIdleConn, Held: -1}
	if err != nil {
		return out, err
	}
	rate := cfg.Rate
	for i := 0; ; i++ {
		rep := run.step(ctx, rate, 0)
		out.Steps = append(out.Steps, rep)
		achieved := rep.PublishRate
		switch {
		case ctx.Err() != nil:
			return out, ctx.Err()
		case rep.Ratio < cfg.MinRatio:
			out.StoppedBy = fmt.Sprintf("delivery ratio %.2f%% below %.0f%%", 100*rep.Ratio, 100*cfg.MinRatio)
		case time.Duration(rep.LatencyP99Ms*float64(time.Millisecond)) > cfg.MaxP99:
			out.StoppedBy = fmt.Sprintf("p99 %.0fms above %v", rep.LatencyP99Ms, cfg.MaxP99)
		case rep.Dropped > 0:
			out.StoppedBy = fmt.Sprintf("%d clients dropped", rep.Dropped)
		case rep.PublishErrors > 0:
			out.StoppedBy = fmt.Sprintf("%d broadcasts refused", rep.PublishErrors)
		default:
			out.Held = i
			out.MaxSustainedDeliveriesPerS, out.MaxSustainedRate = rep.DeliveriesPerS, achieved
			// One tick is allowed for the step's edges: the last may fall on its deadline.
			if want := rate * cfg.Duration.Seconds(); float64(rep.Published)+1 < 0.9*want {
				out.StoppedBy = fmt.Sprintf("the publisher reached %.0f of %.0f broadcasts/s", achieved, rate)
				return out, nil
			}
			if i+1 == cfg.MaxSteps {
				out.StoppedBy = "the last step held"
				return out, nil
			}
			rate *= cfg.Factor
			continue
		}
		return out, nil
	}
}

// Table renders the steps and the result.
func (r RampReport) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "clients connected %d / %d\n", r.Connected, r.Clients)
	fmt.Fprintf(&b, "%10s %12s %10s %10s %10s %8s\n", "rate/s", "deliveries/s", "ratio %", "p50 ms", "p99 ms", "dropped")
	for i, s := range r.Steps {
		mark := ""
		if i == r.Held {
			mark = "  <- held"
		}
		fmt.Fprintf(&b, "%10.0f %12.0f %10.2f %10.2f %10.2f %8d%s\n", s.PublishRate, s.DeliveriesPerS, 100*s.Ratio, s.LatencyP50Ms, s.LatencyP99Ms, s.Dropped, mark)
	}
	fmt.Fprintf(&b, "max sustained deliveries/s %.0f (stopped: %s)\n", r.MaxSustainedDeliveriesPerS, r.StoppedBy)
	return b.String()
}

// RampComparison is ramps against the server and the baseline, alternated.
type RampComparison struct {
	Server   []RampReport `json:"server"`
	Baseline []RampReport `json:"baseline"`
}

// CompareRamp alternates ramps against the server and the baseline hub, runs times each.
func CompareRamp(ctx context.Context, cfg RampConfig, baseURL string, basePID, runs int) (RampComparison, error) {
	baseCfg := cfg
	baseCfg.Server, baseCfg.PID, baseCfg.Token = baseURL, basePID, nil
	server, base, err := alternate(ctx, runs, cfg, baseCfg, func(c RampConfig) string { return c.Server }, RunRamp)
	return RampComparison{Server: server, Baseline: base}, err
}

// Table renders the medians of the maximum sustained deliveries and the ratio.
func (c RampComparison) Table() string {
	if len(c.Server) == 0 || len(c.Baseline) == 0 {
		return "no runs\n"
	}
	med := func(rs []RampReport, f func(RampReport) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %14s %14s %8s   (medians of %d ramps)\n", "", "server", "baseline", "ratio", len(c.Server))
	for _, m := range []struct {
		name string
		f    func(RampReport) float64
	}{
		{"max sustained deliveries/s", func(r RampReport) float64 { return r.MaxSustainedDeliveriesPerS }},
		{"max sustained broadcasts/s", func(r RampReport) float64 { return r.MaxSustainedRate }},
		{"p99 ms at that rate", func(r RampReport) float64 {
			if r.Held < 0 {
				return 0
			}
			return r.Steps[r.Held].LatencyP99Ms
		}},
	} {
		s, base := med(c.Server, m.f), med(c.Baseline, m.f)
		ratio := "-"
		if base != 0 {
			ratio = fmt.Sprintf("%.2f×", s/base)
		}
		fmt.Fprintf(&b, "%-34s %14.0f %14.0f %8s\n", m.name, s, base, ratio)
	}
	for i := range c.Server {
		fmt.Fprintf(&b, "ramp %d stopped: server: %s; baseline: %s\n", i+1, c.Server[i].StoppedBy, c.Baseline[i].StoppedBy)
	}
	return b.String()
}
