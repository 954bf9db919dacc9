package websocket

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/models"
)

// FuzzDecodeAgentFrame feeds whatever an agent might send through the envelope decoder and every
// payload decoder. Nothing may panic; a refusal is a malformed frameError with a reason for the
// agent; what is accepted keeps the rules of PROTOCOL.md 3.2 and 3.4: required ids present, at
// most 256 bytes and without control characters, a heartbeat status of online or draining, a
// status state lower-cased.
// The corpus is in testdata/fuzz/FuzzDecodeAgentFrame.
func FuzzDecodeAgentFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"heartbeat","timestamp":"2026-11-26T10:30:00Z","payload":{"status":"online","activeSessions":1}}`,
		`{"type":"heartbeat","payload":{"status":"draining","capacity":{"maxSessions":4}}}`,
		`{"type":"ack","payload":{"commandId":"c1"}}`,
		`{"type":"complete","payload":{"commandId":"c1","result":[1,2]}}`,
		`{"type":"complete","payload":{"commandId":"c1","result":{"podName":"p"}}}`,
		`{"type":"complete","payload":{"commandId":"c1","result":null}}`,
		`{"type":"failed","payload":{"commandId":"c1","error":"boom"}}`,
		`{"type":"status","payload":{"sessionId":"s","state":"Running","platformMetadata":{"podName":"p"}}}`,
		`{"type":"status","payload":{"sessionId":"s","state":"  "}}`,
		`{"type":"ack","payload":{"commandId":"` + strings.Repeat("x", maxIDLen+1) + `"}}`,
		`{"type":"pong","timestamp":"2026-11-26T10:30:00.123456789+02:00"}`,
		`{"type":"ack","payload":{"commandId":"c\u0000"}}`,
		`{"type":"status","payload":{"sessionId":"s","state":"up\u0000","platformMetadata":{"podName":"p\u0000"}}}`,
		`{"type":5}`, `[]`, `null`, `{"type":"x","timestamp":12}`, `{"type":"x","payload":"y"}`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeAgentFrame(data)
		if err != nil {
			checkRefusal(t, "envelope", err)
			return
		}
		if fr.Type == "" {
			t.Fatal("accepted a frame without a type")
		}
		if !fr.Timestamp.IsZero() && fr.Timestamp.Location().String() != "UTC" {
			t.Fatalf("timestamp kept its zone: %v", fr.Timestamp)
		}
		if len(fr.Payload) > 0 && fr.Payload[0] != '{' {
			t.Fatalf("accepted a payload that is not an object: %s", fr.Payload)
		}
		// The hub picks the decoder by type; each must also cope with any payload the envelope
		// accepts, so all of them run on every accepted frame.
		var anyPayload map[string]any
		if err := decodePayload(fr, &anyPayload); err != nil {
			t.Fatalf("an object payload did not decode into a map: %v", err)
		}
		if hb, err := decodeHeartbeat(fr); err != nil {
			checkRefusal(t, "heartbeat", err)
		} else if hb.Status != models.AgentStatusOnline && hb.Status != models.AgentStatusDraining {
			t.Fatalf("heartbeat accepted with status %q", hb.Status)
		}
		if m, err := decodeAck(fr); err != nil {
			checkRefusal(t, "ack", err)
		} else {
			checkID(t, "ack commandId", m.CommandID)
		}
		if m, err := decodeFailed(fr); err != nil {
			checkRefusal(t, "failed", err)
		} else {
			checkID(t, "failed commandId", m.CommandID)
		}
		if m, err := decodeComplete(fr); err != nil {
			checkRefusal(t, "complete", err)
		} else {
			checkID(t, "complete commandId", m.CommandID)
			checkResult(t, fr, m)
		}
		if m, err := decodeStatus(fr); err != nil {
			checkRefusal(t, "status", err)
		} else {
			checkID(t, "status sessionId", m.SessionID)
			if m.State == "" || len(m.State) > maxStateLen || m.State != strings.TrimSpace(m.State) || m.State != strings.ToLower(m.State) || !models.ValidName(m.State) {
				t.Fatalf("status accepted with state %q", m.State)
			}
		}
	})
}

// checkRefusal: every refusal of a frame's content counts as malformed and tells the agent why.
func checkRefusal(t *testing.T, what string, err *frameError) {
	t.Helper()
	if err.msg == "" || !err.malformed || err.retry {
		t.Fatalf("%s refusal without a reason or counted wrong: %+v", what, err)
	}
}

func checkID(t *testing.T, what, id string) {
	t.Helper()
	if id == "" || len(id) > maxIDLen || !models.ValidID(id) {
		t.Fatalf("%s accepted: %q", what, id)
	}
}

// checkResult: an object result is kept as it is, null or none is no result, and any other value
// is wrapped as {"value": v}.
func checkResult(t *testing.T, fr agentFrame, m models.CompleteMessage) {
	t.Helper()
	var p struct {
		Result json.RawMessage `json:"result"`
	}
	if len(fr.Payload) > 0 {
		if err := json.Unmarshal(fr.Payload, &p); err != nil {
			t.Fatalf("complete accepted a payload that does not decode: %v", err)
		}
	}
	switch {
	case len(p.Result) == 0 || string(p.Result) == "null":
		if m.Result != nil {
			t.Fatalf("no result stored as %v", m.Result)
		}
	case p.Result[0] == '{':
		if m.Result == nil {
			t.Fatal("object result lost")
		}
	default:
		if _, ok := m.Result["value"]; !ok || len(m.Result) != 1 {
			t.Fatalf("result %s stored as %v, want it under \"value\"", p.Result, m.Result)
		}
	}
}
