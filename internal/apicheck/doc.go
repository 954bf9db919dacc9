// Package apicheck holds the tests of what the module hands its users as a whole. One keeps
// internal types out of the module's public API: an embedder cannot name a type of an internal
// package, so no exported identifier of a public package may mention one. The other keeps
// Kubernetes' packages out of the default build of the command and of package websocket: they
// are linked only with -tags kubernetes, as their initialization costs every process that
// links them.
package apicheck
