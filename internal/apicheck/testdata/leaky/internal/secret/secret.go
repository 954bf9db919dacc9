// Package secret is an internal package whose types the public package leaks.
package secret

// Token is the leaked type.
type Token struct{ Value string }
