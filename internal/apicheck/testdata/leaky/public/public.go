// Package public leaks secret.Token every way the check must catch (names ending in Leak),
// and holds it every way that is fine (names ending in OK).
package public

import "example.com/leaky/internal/secret"

func FuncLeak() secret.Token { return secret.Token{} }

type FieldLeak struct{ T *secret.Token }

type EmbedLeak struct{ secret.Token }

type MethodsLeak struct{}

func (MethodsLeak) M(map[string][]secret.Token) {}

type InterfaceLeak interface{ M(chan secret.Token) }

var VarLeak func() (int, secret.Token)

type AliasLeak = secret.Token

type GenericLeak[T interface{ ~[]secret.Token }] struct{}

// hidden is unexported, but its exported field reaches an embedder through HiddenLeak.
type hidden struct{ T secret.Token }

func HiddenLeak() hidden { return hidden{} }

type FieldOK struct{ t secret.Token }

func (FieldOK) m(secret.Token) {}

type unusedOK struct{ T secret.Token }

func funcOK() secret.Token { return secret.Token{} }
