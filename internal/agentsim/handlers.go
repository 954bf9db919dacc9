package agentsim

import (
	"context"
	"fmt"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/models"
)

// start creates a session: pending, then running one step later.
func (s *Sim) start(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
	id, err := sessionID(cmd)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if old, ok := s.sessions[id]; ok {
		snap := *old
		s.mu.Unlock()
		if snap.state == models.SessionStatePending {
			return nil, fmt.Errorf("session %s is already starting", id)
		}
		// Already there (the control plane asked again): report where it is.
		if err := s.report(ctx, snap); err != nil {
			return nil, err
		}
		return result(snap), nil
	}
	s.nextIP = s.nextIP%254 + 1
	ss := &session{id: id, pod: "sim-" + id, ip: fmt.Sprintf("10.0.0.%d", s.nextIP), state: models.SessionStatePending}
	s.sessions[id] = ss
	snap := *ss
	s.mu.Unlock()

	if err := s.report(ctx, snap); err != nil {
		s.forget(ss)
		return nil, err
	}
	if err := s.wait(ctx); err != nil {
		s.forget(ss)
		return nil, err
	}
	snap, err = s.transition(ss, models.SessionStateRunning)
	if err != nil {
		return nil, err
	}
	if err := s.report(ctx, snap); err != nil {
		return nil, err
	}
	s.streaming(snap.id, snap.state)
	return result(snap), nil
}

func (s *Sim) stop(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
	return s.move(ctx, cmd, models.SessionStateStopped)
}

func (s *Sim) hibernate(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
	return s.move(ctx, cmd, models.SessionStateHibernated)
}

func (s *Sim) wake(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
	return s.move(ctx, cmd, models.SessionStateRunning)
}

// move takes an existing session to state one step later; a stopped session is forgotten.
func (s *Sim) move(ctx context.Context, cmd agentclient.Command, state string) (map[string]any, error) {
	id, err := sessionID(cmd)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ss, ok := s.sessions[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("unknown session %s", id)
	}
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	snap, err := s.transition(ss, state)
	if err != nil {
		return nil, err
	}
	if state == models.SessionStateStopped {
		s.forget(ss)
	}
	if err := s.report(ctx, snap); err != nil {
		return nil, err
	}
	s.streaming(snap.id, snap.state)
	return result(snap), nil
}

// transition sets the state of ss, if it is still in the table.
func (s *Sim) transition(ss *session, state string) (session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] != ss {
		return session{}, fmt.Errorf("session %s was stopped meanwhile", ss.id)
	}
	ss.state = state
	return *ss, nil
}

// forget removes ss from the table, unless another session took its id since.
func (s *Sim) forget(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
}

// logs emits the last TailLines simulated lines of a session's pod (100 when unset), then,
// with Follow, one line per second until the stream is stopped.
func (s *Sim) logs(ctx context.Context, req models.LogsRequest, emit func(string, time.Time) error) error {
	s.mu.Lock()
	ss, ok := s.sessions[req.SessionID]
	if !ok {
		for _, cand := range s.sessions {
			if cand.pod == req.Pod {
				ss, ok = cand, true
				break
			}
		}
	}
	var pod string
	if ok {
		pod = ss.pod
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("unknown session %s", req.SessionID)
	}
	tail := req.TailLines
	if tail <= 0 {
		tail = 100
	}
	line := func(n int) error {
		now := s.clock.Now().UTC()
		return emit(fmt.Sprintf("%s sim %s: line %d", now.Format(time.RFC3339), pod, n), now)
	}
	for n := 1; n <= tail; n++ {
		if err := line(n); err != nil {
			return err
		}
	}
	if !req.Follow {
		return nil
	}
	tick := s.clock.NewTicker(time.Second)
	defer tick.Stop()
	for n := tail + 1; ; n++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.Chan():
			if err := line(n); err != nil {
				return err
			}
		}
	}
}
