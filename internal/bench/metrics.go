package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/bench/baseline"
)

// errNoGauge is a /metrics page without the gauge asked for.
var errNoGauge = errors.New("no such gauge")

// liveHeapKiB reads the live heap of the target at base from its /metrics, in KiB: the heap
// its last GC marked, 0 before its first GC (a small process may not have collected yet when
// it is idle). ok is false when /metrics cannot be read or lacks the gauge, so that a target
// without it is measured all the same.
func liveHeapKiB(ctx context.Context, base *url.URL) (kib int64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.JoinPath("/metrics").String(), nil)
	if err != nil {
		return 0, false
	}
	req.Close = true // no idle connection left behind on the measured server
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	v, err := gaugeValue(io.LimitReader(resp.Body, 16<<20), baseline.LiveHeapGauge)
	if err != nil {
		return 0, false
	}
	return int64(v) / 1024, true
}

// gaugeValue finds the unlabelled sample of the gauge name in a page of the Prometheus text
// format ("name value [timestamp]").
func gaugeValue(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if fields[0] != name {
			continue
		}
		if len(fields) < 2 || len(fields) > 3 {
			return 0, fmt.Errorf("metrics: %s: malformed sample %q", name, line)
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return 0, fmt.Errorf("metrics: %s: malformed value %q", name, fields[1])
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("metrics: reading the page: %w", err)
	}
	return 0, fmt.Errorf("metrics: %s: %w", name, errNoGauge)
}
