package websocket

import (
	"bytes"
	"errors"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/rfb"
)

// viewerFilter reads a viewer's RFB stream where the server must (PROTOCOL.md 6.4): a
// view-only viewer's input is dropped, and a StreamSpace tunnel's update requests are paced
// and its ContinuousUpdates pseudo-encoding stripped. Other viewers' bytes pass as they are.
type viewerFilter struct {
	t      *Tunnel
	stream *rfb.ClientStream // nil: passthrough
}

func newViewerFilter(t *Tunnel) *viewerFilter {
	f := &viewerFilter{t: t}
	if t.req.ViewOnly || t.proto == protoStreamSpace {
		f.stream = rfb.NewClientStream(rfb.Options{
			ViewOnly:               t.req.ViewOnly,
			StripContinuousUpdates: t.proto == protoStreamSpace,
		})
	}
	return f
}

// serverBytes shows the parser what the VNC server sent, for the handshake.
func (f *viewerFilter) serverBytes(p []byte) {
	if f.stream != nil {
		f.stream.ServerBytes(p)
	}
}

// write passes the viewer's bytes toward the agent; an unreadable stream ends the viewer with
// 1008 and the reason of PROTOCOL.md 6.1.
func (f *viewerFilter) write(p []byte) {
	t := f.t
	if f.stream == nil {
		_ = t.sendToAgent(p)
		return
	}
	err := f.stream.Write(p, f.emit)
	if err == nil || errors.Is(err, errTunnelEnded) {
		return
	}
	reason := "unsupported RFB message"
	switch {
	case errors.Is(err, rfb.ErrInvalidHandshake):
		reason = "invalid RFB handshake"
	case errors.Is(err, rfb.ErrUnsupportedSecurity):
		reason = "unsupported security type for a view-only viewer"
	}
	t.hub.metrics.vnc.refused.WithLabelValues("rfb").Inc()
	t.finish(websocket.ClosePolicyViolation, reason)
}

func (f *viewerFilter) emit(m rfb.Message) error {
	t := f.t
	if t.req.ViewOnly && m.Kind.Input() {
		t.hub.metrics.vnc.inputDropped.WithLabelValues(m.Kind.String()).Inc()
		return nil
	}
	if m.Kind == rfb.KindUpdateRequest && t.proto == protoStreamSpace {
		s := t.set
		s.mu.Lock()
		if t.viewerBytes > t.hub.cfg.VNC.PaceBacklog {
			// Keep one: the newest, unless a non-incremental one is held.
			if t.held == nil || !t.heldFull || !m.Incremental {
				t.held, t.heldFull = bytes.Clone(m.Bytes), !m.Incremental
			}
			s.mu.Unlock()
			return nil
		}
		t.held = nil // superseded by this newer request
		s.mu.Unlock()
	}
	return t.sendToAgent(m.Bytes)
}
