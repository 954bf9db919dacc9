package models

import (
	"errors"
	"testing"
)

func TestSettleCommandSession(t *testing.T) {
	cases := []struct {
		name        string
		sessionID   string
		payload     map[string]any
		allowTwo    bool
		want        string
		wantPayload any
		err         error
	}{
		{name: "neither", payload: nil, want: "", wantPayload: nil},
		{name: "top level fills the payload", sessionID: "s1", want: "s1", wantPayload: "s1"},
		{name: "payload fills the top level", payload: map[string]any{"sessionId": "s2"}, want: "s2", wantPayload: "s2"},
		{name: "both agree", sessionID: "s1", payload: map[string]any{"sessionId": "s1"}, want: "s1", wantPayload: "s1"},
		{name: "two sessions refused", sessionID: "s1", payload: map[string]any{"sessionId": "s2"}, err: ErrSessionMismatch},
		{name: "two sessions for the service token", sessionID: "s1", payload: map[string]any{"sessionId": "s2"}, allowTwo: true, want: "s1", wantPayload: "s2"},
		{name: "not a string", payload: map[string]any{"sessionId": 7}, err: ErrSessionIDNotString},
		{name: "null is absent", sessionID: "s1", payload: map[string]any{"sessionId": nil}, want: "s1", wantPayload: "s1"},
		{name: "control characters", sessionID: "s\x00", err: ErrInvalidSessionID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := AgentCommand{SessionID: OptionalString(tc.sessionID), Payload: tc.payload}
			err := SettleCommandSession(&cmd, tc.allowTwo)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if cmd.GetSessionID() != tc.want || cmd.Payload["sessionId"] != tc.wantPayload {
				t.Fatalf("settled %q with payload %v, want %q and %v", cmd.GetSessionID(), cmd.Payload["sessionId"], tc.want, tc.wantPayload)
			}
		})
	}
}
