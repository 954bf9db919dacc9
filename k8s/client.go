// Package k8s is the Kubernetes view of StreamSpace: Session custom
// resources (stream.space/v1alpha1) and pod logs. It is the only package of
// the project that may import client-go.
package k8s

// Client reads sessions and pod logs from a Kubernetes cluster for the
// websocket Manager. A nil *Client means the database is the session source
// and agents relay logs; that is the embedded default, and the only source
// this build serves: the Kubernetes source arrives with the Manager's
// session-list and log-streaming work.
type Client struct{}
