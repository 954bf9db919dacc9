package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// Run keeps the agent connected until ctx ends or the control plane ends it for good:
// register (first, and again when connect says the agent is unknown or not approved), connect,
// serve the connection until it ends, then reconnect after a jittered exponential backoff
// (between BackoffMin and a cap doubling up to BackoffMax, reset by a connection that received
// a frame or stayed up a minute; right away, within BackoffMin, after a 1001 close).
//
// Run returns nil when ctx ends: it stops taking commands, gives running handlers up to
// ShutdownTimeout to return with their results sent, closes the socket with 1000 and returns.
// It returns an error wrapping ErrShutdown when the control plane sends "shutdown",
// ErrReplaced when it closes the connection with 4000 (another process took the agent id
// over), and ErrRejected when registration answers 403. Other failures (network, 401, 5xx) are
// logged and retried. Run runs once at a time (ErrRunning).
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return fmt.Errorf("agentclient: run agent: %w", ErrRunning)
	}
	defer a.running.Store(false)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	bound := &shutdownBound{a: a}
	defer bound.release()

	err := a.loop(runCtx, bound)
	cancel()
	if !a.work.wait(nil, bound.C()) {
		a.log.Warn("stopped with command handlers or log streams still running after ShutdownTimeout",
			"running", a.work.running(), "timeout", a.cfg.ShutdownTimeout)
	}
	a.outMu.Lock()
	left := len(a.out.frames)
	a.outMu.Unlock()
	if left > 0 {
		a.log.Warn("stopped with results or status reports not delivered", "frames", left)
	}
	if err == nil {
		a.log.Info("agent stopped")
	}
	return err
}

// loop is Run's register-connect-serve cycle.
func (a *Agent) loop(ctx context.Context, bound *shutdownBound) error {
	bo := newBackoff(a.cfg.BackoffMin, a.cfg.BackoffMax)
	needRegister := !a.registered.Load()
	reregistered := false
	problem := "" // the last failure logged at Warn: repeats go to Debug
	retry := func(what string, err error, wait time.Duration) bool {
		if msg := what + ": " + err.Error(); msg != problem {
			problem = msg
			a.log.Warn(what+"; retrying", "err", err, "retry_in", wait)
		} else {
			a.log.Debug(what+"; retrying", "err", err, "retry_in", wait)
		}
		return sleep(ctx, a.clock, wait)
	}
	for ctx.Err() == nil {
		if needRegister {
			if _, err := a.Register(ctx); err != nil {
				switch {
				case ctx.Err() != nil:
					return nil
				case errors.Is(err, ErrRejected):
					a.log.Error("control plane rejected the agent: stopping", "err", err)
					return err
				case errors.Is(err, ErrUnauthorized):
					err = fmt.Errorf("%w (if an admin approved this agent, run it with the key shown at approval)", err)
				}
				if !retry("registration failed", err, bo.next()) {
					return nil
				}
				continue
			}
			needRegister = false
		}

		ws, ext, status, err := a.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if status == http.StatusForbidden || status == http.StatusUnauthorized || status == http.StatusNotFound {
				// Unknown (the server answers it like a wrong key, 401; older servers 404) or not
				// approved (any more): register again, at once the first time.
				needRegister = true
				if !reregistered {
					reregistered = true
					a.log.Info("connect refused: registering again", "err", err)
					continue
				}
			}
			if !retry("connect failed", err, bo.next()) {
				return nil
			}
			continue
		}
		reregistered, problem = false, ""

		cause, healthy := a.serveConn(ctx, ws, ext, bound)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(cause, ErrShutdown):
			return cause
		case errors.Is(cause, ErrReplaced):
			a.log.Warn("another process connected with this agent id and replaced this one: stopping", "err", cause)
			return cause
		}
		if healthy {
			bo.reset()
		}
		wait := bo.next()
		if errors.Is(cause, errGoingAway) {
			bo.reset()
			wait = bo.quick()
		}
		a.log.Info("disconnected from the control plane; reconnecting", "err", cause, "retry_in", wait)
		if !sleep(ctx, a.clock, wait) {
			return nil
		}
	}
	return nil
}

// dial opens the agent socket: GET /api/v1/agents/connect?agent_id=<id> with the API key.
// With Config.Tunnels it offers tunnel/1 and reports whether the control plane took it up
// (ext). A refusal returns its HTTP status with the error.
func (a *Agent) dial(ctx context.Context) (ws *websocket.Conn, ext bool, status int, err error) {
	u := a.wsURL + "/api/v1/agents/connect?" + url.Values{"agent_id": {a.cfg.AgentID}}.Encode()
	header := http.Header{"X-Agent-API-Key": {a.key()}}
	if a.cfg.Tunnels != nil {
		header.Set(models.AgentFeaturesHeader, models.AgentFeatureTunnel)
	}
	ws, resp, err := a.cfg.Dialer.DialContext(ctx, u, header)
	if err == nil {
		ext = a.cfg.Tunnels != nil && resp != nil && hasFeature(resp.Header.Get(models.AgentFeaturesHeader), models.AgentFeatureTunnel)
		return ws, ext, http.StatusSwitchingProtocols, nil
	}
	if resp == nil {
		return nil, false, 0, fmt.Errorf("agentclient: connect: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, false, resp.StatusCode, fmt.Errorf("agentclient: connect: %w: %s", ErrUnauthorized, httpErrorText(resp, body))
	}
	return nil, false, resp.StatusCode, fmt.Errorf("agentclient: connect: refused with %s", httpErrorText(resp, body))
}

// heartbeat is the payload of the next heartbeat.
func (a *Agent) heartbeat() models.HeartbeatMessage {
	hb := models.HeartbeatMessage{Status: models.AgentStatusOnline, Capacity: a.cfg.Capacity}
	if a.draining.Load() {
		hb.Status = models.AgentStatusDraining
	}
	if f := a.activeSessions.Load(); f != nil {
		hb.ActiveSessions = (*f)()
	}
	return hb
}
