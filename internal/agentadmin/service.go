// Package agentadmin is the administration of agents behind the HTTP API: registration and
// admission of agents, approval and rejection, the agent list, and the commands staff send to
// agents, with the rules of who may do what to which organization's agents and sessions.
//
// It knows nothing of HTTP. Every refusal is an *Error wrapping one of the Err kinds below,
// with a message safe to show the caller; any other error is a failure of storage.
package agentadmin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// Hub is what the service asks of the agent hub (websocket.AgentHub): to queue commands, to
// disconnect a rejected agent, and where agents are connected.
type Hub interface {
	SubmitCommand(ctx context.Context, cmd models.AgentCommand, session *models.Session) (models.AgentCommand, error)
	DisconnectAgent(agentID string, code int, reason string, shutdown bool) bool
	AgentLocations(ctx context.Context, agentIDs []string) (map[string]string, error)
}

// Namespaces tells an organization's Kubernetes namespace (websocket.Manager).
type Namespaces interface {
	NamespaceForOrg(ctx context.Context, orgID string) string
}

// Config is the part of the server's configuration agent administration follows.
type Config struct {
	// DefaultOrg owns the sessions the service token starts without naming an organization.
	DefaultOrg string
	// BootstrapKey lets a new agent register itself; empty: no agent may.
	BootstrapKey string
	// AutoApprove approves agents that register with the bootstrap key at once.
	AutoApprove bool
	// Logger receives the administration's events; nil means slog.Default().
	Logger *slog.Logger
}

// Service administers agents. It is safe for concurrent use.
type Service struct {
	db         *db.Database
	hub        Hub
	namespaces Namespaces
	cfg        Config
	log        *slog.Logger
}

// New returns the administration of the agents stored in database.
func New(database *db.Database, hub Hub, namespaces Namespaces, cfg Config) *Service {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{db: database, hub: hub, namespaces: namespaces, cfg: cfg, log: log}
}

// RejectedReason is the shutdown reason and close text an agent gets when it is rejected.
const RejectedReason = "agent rejected by an operator"

// The kinds of refusal, checked with errors.Is. The HTTP layer maps each to its status and
// error code.
var (
	ErrUnknownAgent     = errors.New("unknown agent")
	ErrUnknownCommand   = errors.New("unknown command")
	ErrAgentExists      = errors.New("agent exists")
	ErrAlreadyApproved  = errors.New("agent already approved")
	ErrNotApproved      = errors.New("agent not approved")
	ErrAgentRejected    = errors.New("agent rejected")
	ErrInvalidAgentKey  = errors.New("invalid agent key")
	ErrSharedAgent      = errors.New("shared agents are the service token's")
	ErrForbiddenOrg     = errors.New("organization not the caller's")
	ErrForbiddenSession = errors.New("session not the caller's")
	ErrSessionExists    = errors.New("session exists")
	ErrInvalidAction    = errors.New("invalid action")
	ErrInvalidSessionID = errors.New("invalid session id")
	ErrSessionMismatch  = errors.New("two sessions named")
	ErrInvalidPayload   = errors.New("invalid payload")
	ErrMissingUser      = errors.New("missing session owner")
)

// Error is a refusal: Kind is one of the Err kinds, Message tells the caller why.
type Error struct {
	Kind    error
	Message string
}

func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Kind }

// refuse returns a refusal of kind with message.
func refuse(kind error, message string) error { return &Error{Kind: kind, Message: message} }

// serves reports whether an agent of agentOrg is visible to the scope: services see all, an
// organization sees its own agents and shared ones (no org).
func serves(scope auth.Scope, agentOrg string) bool {
	return scope.Service || agentOrg == "" || agentOrg == scope.OrgID
}

// owns reports whether the scope may change an agent of agentOrg: services any, an
// organization's admins only their own (shared agents belong to the operators of the install).
func owns(scope auth.Scope, agentOrg string) bool {
	return scope.Service || (agentOrg != "" && agentOrg == scope.OrgID)
}

// staffAgent loads the agent agentID for the scope; change asks for the right to change it,
// not only to see it. An agent of another organization does not exist for the caller.
func (s *Service) staffAgent(ctx context.Context, scope auth.Scope, agentID string, change bool) (models.Agent, error) {
	unknown := refuse(ErrUnknownAgent, "no agent with this id")
	if !models.ValidID(agentID) {
		return models.Agent{}, unknown // no agent has an id that is not one
	}
	agent, err := s.db.GetAgent(ctx, agentID)
	switch {
	case errors.Is(err, db.ErrNotFound):
		return agent, unknown
	case err != nil:
		return agent, fmt.Errorf("read agent %q: %w", agentID, err)
	case !serves(scope, agent.OrgID):
		return agent, unknown
	case change && !owns(scope, agent.OrgID):
		return agent, refuse(ErrSharedAgent, "shared agents are managed with the service token")
	}
	return agent, nil
}
