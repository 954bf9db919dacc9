// Package apicheck holds the test that keeps internal types out of the module's public API:
// an embedder cannot name a type of an internal package, so no exported identifier of a public
// package may mention one.
package apicheck
