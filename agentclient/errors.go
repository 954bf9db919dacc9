package agentclient

import "errors"

// Sentinel errors, checked with errors.Is: the SDK returns them wrapped with what it was doing.
var (
	// ErrInvalidConfig is returned by New for a Config it cannot run with.
	ErrInvalidConfig = errors.New("invalid config")
	// ErrRejected means an admin rejected the agent (register answered 403). Permanent.
	ErrRejected = errors.New("agent rejected by the control plane")
	// ErrUnauthorized means the control plane refused the API key (401). After an admin
	// approved a pending agent, the bootstrap key is refused this way: the agent must be given
	// the key shown at approval.
	ErrUnauthorized = errors.New("api key refused")
	// ErrShutdown means the control plane sent "shutdown": an operator retired the agent, and
	// it must not reconnect.
	ErrShutdown = errors.New("control plane retired the agent")
	// ErrReplaced means the control plane closed the connection with 4000: another process
	// connected with the same agent id and took over.
	ErrReplaced = errors.New("connection replaced by another process with the same agent id")
	// ErrRunning is returned by Run when the Agent is already running.
	ErrRunning = errors.New("agent is already running")
)

// Internal causes of a connection's end; Run maps them to what it does next.
var (
	errStopping   = errors.New("agent stopping")
	errGoingAway  = errors.New("server going away (1001)")
	errConnClosed = errors.New("connection closed")
)
