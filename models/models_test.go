package models

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCommandStatusFinal(t *testing.T) {
	for status, want := range map[string]bool{
		CommandStatusPending: false, CommandStatusSent: false, CommandStatusAck: false,
		CommandStatusCompleted: true, CommandStatusFailed: true, CommandStatusExpired: true,
	} {
		if got := CommandStatusFinal(status); got != want {
			t.Errorf("CommandStatusFinal(%q) = %v, want %v", status, got, want)
		}
	}
}

func TestAgentJSONHidesKeyAndOmitsMissingHeartbeat(t *testing.T) {
	b, err := json.Marshal(Agent{ID: "k8s-1", APIKeyHash: "deadbeef", Status: AgentStatusOnline})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Contains(s, "deadbeef") {
		t.Errorf("API key hash serialized: %s", s)
	}
	if strings.Contains(s, "lastHeartbeat") {
		t.Errorf("nil LastHeartbeat serialized: %s", s)
	}
	if !strings.Contains(s, `"agentId":"k8s-1"`) {
		t.Errorf("agent id missing: %s", s)
	}
}

func TestAgentCommandJSON(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)
	b, err := json.Marshal(AgentCommand{CommandID: "c1", AgentID: "a1", Action: "start_session",
		Payload: map[string]interface{}{"sessionId": "s1"}, Status: CommandStatusSent, Attempts: 1,
		CreatedAt: at, SentAt: &at})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"commandId":"c1","agentId":"a1","action":"start_session","payload":{"sessionId":"s1"},` +
		`"status":"sent","attempts":1,"createdAt":"2026-11-26T10:30:00Z","sentAt":"2026-11-26T10:30:00Z"}`
	if string(b) != want {
		t.Errorf("AgentCommand JSON =\n %s\nwant\n %s", b, want)
	}
}

func TestIdleTimeout(t *testing.T) {
	if d := (Session{IdleTimeoutSeconds: 90}).IdleTimeout(); d != 90*time.Second {
		t.Errorf("IdleTimeout = %v", d)
	}
	if d := (Session{}).IdleTimeout(); d != 0 {
		t.Errorf("zero IdleTimeout = %v", d)
	}
}
