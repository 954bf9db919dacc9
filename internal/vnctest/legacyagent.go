package vnctest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// legacyReadChunk is how much StreamSpace's k8s-agent reads from a VNC server per vnc_data.
const legacyReadChunk = 32 << 10

// maxKeptFrames bounds the frames of one type a LegacyAgent keeps for tests to look at.
const maxKeptFrames = 256

// LegacyAgentConfig configures a LegacyAgent.
type LegacyAgentConfig struct {
	// ServerURL is the control plane's base URL (http, https, ws or wss).
	ServerURL string
	AgentID   string
	APIKey    string
	// VNCAddr gives the VNC server address of a session, dialled when its tunnel opens.
	VNCAddr func(sessionID string) string
	// Heartbeat is the interval between heartbeat frames; 0 means 10 s. One is sent at once.
	Heartbeat time.Duration
	Logger    *slog.Logger
}

// LegacyAgent is a fake StreamSpace k8s-agent: it speaks exactly StreamSpace's agent messages
// (no X-Agent-Features), acknowledges and completes every command, and keeps one tunnel per
// session, opened when start_session completes, relayed as base64 vnc_data and never reopened
// after vnc_close.
type LegacyAgent struct {
	cfg    LegacyAgentConfig
	ws     *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
	wmu    sync.Mutex // one writer on ws

	mu       sync.Mutex
	tunnels  map[string]net.Conn
	received map[string][]models.AgentMessage
	counts   map[string]int
	opened   int
	err      error
}

// DialLegacyAgent connects to cfg.ServerURL's agent socket and starts the agent; Close stops it.
func DialLegacyAgent(ctx context.Context, cfg LegacyAgentConfig) (*LegacyAgent, error) {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(cfg.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("parsing server URL: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/agents/connect"
	u.RawQuery = url.Values{"agent_id": {cfg.AgentID}}.Encode()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, u.String(), http.Header{"X-Agent-API-Key": {cfg.APIKey}})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("connecting agent %s: %w (HTTP %d)", cfg.AgentID, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("connecting agent %s: %w", cfg.AgentID, err)
	}
	ws.SetReadLimit(4 << 20)
	actx, cancel := context.WithCancel(context.Background())
	a := &LegacyAgent{
		cfg: cfg, ws: ws, ctx: actx, cancel: cancel, done: make(chan struct{}),
		tunnels: map[string]net.Conn{}, received: map[string][]models.AgentMessage{}, counts: map[string]int{},
	}
	// The first heartbeat goes before anything is read, so it precedes every answer.
	if err := a.heartbeat(); err != nil {
		cancel()
		_ = ws.Close()
		return nil, fmt.Errorf("agent %s: first heartbeat: %w", cfg.AgentID, err)
	}
	a.wg.Add(2)
	go a.readLoop()
	go a.heartbeatLoop()
	return a, nil
}

// Close stops the agent: its socket, its tunnels and its goroutines.
func (a *LegacyAgent) Close() {
	a.cancel()
	a.wmu.Lock()
	_ = a.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	a.wmu.Unlock()
	_ = a.ws.Close()
	a.mu.Lock()
	for id, c := range a.tunnels {
		_ = c.Close()
		delete(a.tunnels, id)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// Done is closed when the agent's socket has ended.
func (a *LegacyAgent) Done() <-chan struct{} { return a.done }

// Err is why the socket ended (nil while it is open, or after Close).
func (a *LegacyAgent) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Received counts the frames of type typ the server sent.
func (a *LegacyAgent) Received(typ string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[typ]
}

// Frames returns the last frames (up to 256) of type typ the server sent, oldest first.
func (a *LegacyAgent) Frames(typ string) []models.AgentMessage {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]models.AgentMessage(nil), a.received[typ]...)
}

// TunnelsOpen counts the tunnels open now; TunnelsOpened counts every tunnel ever opened.
func (a *LegacyAgent) TunnelsOpen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.tunnels)
}

// TunnelsOpened counts every tunnel the agent has opened.
func (a *LegacyAgent) TunnelsOpened() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.opened
}

// HasTunnel reports whether the session's tunnel is open.
func (a *LegacyAgent) HasTunnel(sessionID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tunnels[sessionID] != nil
}

// SendRaw writes frame as a text frame as it is, for tests of hostile agents.
func (a *LegacyAgent) SendRaw(frame []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_ = a.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := a.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return fmt.Errorf("writing frame: %w", err)
	}
	return nil
}

// Send writes one frame of StreamSpace's envelope.
func (a *LegacyAgent) Send(typ string, payload any) error {
	p, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encoding %s payload: %w", typ, err)
	}
	frame, err := json.Marshal(models.AgentMessage{Type: typ, Timestamp: time.Now(), Payload: p})
	if err != nil {
		return fmt.Errorf("encoding %s frame: %w", typ, err)
	}
	return a.SendRaw(frame)
}

// OpenTunnel opens the session's tunnel as start_session does: dials its VNC server, announces
// vnc_ready and relays. A session whose tunnel is open keeps it.
func (a *LegacyAgent) OpenTunnel(sessionID string) error {
	if a.cfg.VNCAddr == nil {
		return errors.New("no VNCAddr configured")
	}
	if a.HasTunnel(sessionID) {
		return nil
	}
	addr := a.cfg.VNCAddr(sessionID)
	var d net.Dialer
	dctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dialing VNC server %s for session %s: %w", addr, sessionID, err)
	}
	port := 0
	if _, p, err := net.SplitHostPort(addr); err == nil {
		port, _ = strconv.Atoi(p)
	}
	a.mu.Lock()
	if a.ctx.Err() != nil {
		a.mu.Unlock()
		conn.Close()
		return fmt.Errorf("agent closed: %w", a.ctx.Err())
	}
	a.tunnels[sessionID] = conn
	a.opened++
	a.wg.Add(1)
	a.mu.Unlock()
	// vnc_ready before any vnc_data, so the server knows the tunnel when its bytes arrive.
	err = a.Send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: sessionID, VNCPort: port, PodName: "session-" + sessionID})
	go a.relay(sessionID, conn)
	return err
}

// relay reads the VNC server and sends its bytes as vnc_data until the tunnel ends.
func (a *LegacyAgent) relay(sessionID string, conn net.Conn) {
	defer a.wg.Done()
	buf := make([]byte, legacyReadChunk)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			data := base64.StdEncoding.EncodeToString(buf[:n])
			if serr := a.Send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: sessionID, Data: data}); serr != nil {
				a.closeTunnel(sessionID, conn)
				return
			}
		}
		if err != nil {
			closedHere := a.closeTunnel(sessionID, conn)
			if closedHere && !errors.Is(err, io.EOF) && a.ctx.Err() == nil {
				_ = a.Send(models.MessageTypeVNCError, models.VNCErrorMessage{SessionID: sessionID, Error: err.Error()})
			}
			return
		}
	}
}

// closeTunnel forgets and closes conn if it is still the session's tunnel, reporting whether
// it was (false when vnc_close or Close ended it first).
func (a *LegacyAgent) closeTunnel(sessionID string, conn net.Conn) bool {
	a.mu.Lock()
	mine := a.tunnels[sessionID] == conn
	if mine {
		delete(a.tunnels, sessionID)
	}
	a.mu.Unlock()
	_ = conn.Close()
	return mine
}

func (a *LegacyAgent) heartbeatLoop() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		if err := a.heartbeat(); err != nil {
			return
		}
	}
}

func (a *LegacyAgent) heartbeat() error {
	return a.Send(models.MessageTypeHeartbeat, models.HeartbeatMessage{Status: "online", ActiveSessions: a.TunnelsOpen(),
		Capacity: map[string]any{"maxCpu": 4000, "maxMemory": 8192, "maxSessions": 10}})
}

func (a *LegacyAgent) readLoop() {
	defer a.wg.Done()
	defer close(a.done)
	for {
		_, data, err := a.ws.ReadMessage()
		if err != nil {
			a.mu.Lock()
			if a.ctx.Err() == nil {
				a.err = err
			}
			a.mu.Unlock()
			a.cancel()
			return
		}
		var m models.AgentMessage
		if err := json.Unmarshal(data, &m); err != nil {
			a.cfg.Logger.Warn("legacy agent: undecodable frame", "err", err)
			continue
		}
		a.record(m)
		if err := a.handle(m); err != nil {
			a.cfg.Logger.Warn("legacy agent: handling frame failed", "type", m.Type, "err", err)
		}
	}
}

func (a *LegacyAgent) record(m models.AgentMessage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[m.Type]++
	kept := append(a.received[m.Type], m)
	if len(kept) > maxKeptFrames {
		kept = kept[len(kept)-maxKeptFrames:]
	}
	a.received[m.Type] = kept
}

func (a *LegacyAgent) handle(m models.AgentMessage) error {
	switch m.Type {
	case models.MessageTypeCommand:
		var c models.CommandMessage
		if err := json.Unmarshal(m.Payload, &c); err != nil {
			return fmt.Errorf("decoding command: %w", err)
		}
		if err := a.Send(models.MessageTypeAck, models.AckMessage{CommandID: c.CommandID}); err != nil {
			return err
		}
		if err := a.Send(models.MessageTypeComplete, models.CompleteMessage{CommandID: c.CommandID}); err != nil {
			return err
		}
		if c.Action == models.ActionStartSession {
			id, _ := c.Payload["sessionId"].(string)
			if id == "" {
				return errors.New("start_session without a sessionId")
			}
			return a.OpenTunnel(id)
		}
	case models.MessageTypePing:
		return a.Send(models.MessageTypePong, models.PongMessage{Timestamp: time.Now()})
	case models.MessageTypeVNCData:
		var d models.VNCDataMessage
		if err := json.Unmarshal(m.Payload, &d); err != nil {
			return fmt.Errorf("decoding vnc_data: %w", err)
		}
		b, err := base64.StdEncoding.DecodeString(d.Data)
		if err != nil {
			return fmt.Errorf("decoding vnc_data for session %s: %w", d.SessionID, err)
		}
		a.mu.Lock()
		conn := a.tunnels[d.SessionID]
		a.mu.Unlock()
		if conn == nil {
			return fmt.Errorf("vnc_data for session %s without a tunnel", d.SessionID)
		}
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(b); err != nil {
			a.closeTunnel(d.SessionID, conn)
			return fmt.Errorf("writing to the VNC server of session %s: %w", d.SessionID, err)
		}
	case models.MessageTypeVNCClose:
		var c models.VNCCloseMessage
		if err := json.Unmarshal(m.Payload, &c); err != nil {
			return fmt.Errorf("decoding vnc_close: %w", err)
		}
		a.mu.Lock()
		conn := a.tunnels[c.SessionID]
		a.mu.Unlock()
		if conn != nil {
			a.closeTunnel(c.SessionID, conn)
		}
	}
	return nil
}
