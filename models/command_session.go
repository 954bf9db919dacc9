package models

import "errors"

// Errors of SettleCommandSession, to tell the caller which part of a command is wrong.
var (
	// ErrSessionIDNotString: the payload's "sessionId" is present but not a string.
	ErrSessionIDNotString = errors.New("payload sessionId must be a string")
	// ErrSessionMismatch: the command and its payload name two different sessions.
	ErrSessionMismatch = errors.New("payload sessionId differs from sessionId")
	// ErrInvalidSessionID: the session id is not an id (see ValidID).
	ErrInvalidSessionID = errors.New("sessionId must be 1-256 bytes of UTF-8 text without control characters")
)

// SettleCommandSession settles the one session a command acts on, from its SessionID and its
// payload's "sessionId", which agents read: either may be given alone and fills the other.
// When both are given and differ, the command is refused with ErrSessionMismatch unless
// allowTwo is set (the trusted service token, whose payload goes to the agent as it is):
// anyone else would name one session to be authorized and have the agent act on another.
// A nil payload becomes an empty one.
func SettleCommandSession(cmd *AgentCommand, allowTwo bool) error {
	if cmd.Payload == nil {
		cmd.Payload = map[string]any{}
	}
	inPayload := ""
	if v, present := cmd.Payload["sessionId"]; present && v != nil {
		s, ok := v.(string)
		if !ok {
			return ErrSessionIDNotString
		}
		inPayload = s
	}
	session := cmd.GetSessionID()
	switch {
	case session == "":
		session = inPayload
	case inPayload != "" && inPayload != session && !allowTwo:
		return ErrSessionMismatch
	}
	cmd.SessionID = OptionalString(session)
	if session == "" {
		return nil
	}
	if !ValidID(session) {
		return ErrInvalidSessionID
	}
	if inPayload == "" {
		cmd.Payload["sessionId"] = session
	}
	return nil
}
