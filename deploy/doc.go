// Package deploy holds the deployment files of the server, Kubernetes manifests in
// deploy/kubernetes (the Dockerfile is at the repository root), and the test that checks them:
// neither Docker nor a cluster is at hand where the tests run, so the test decodes every
// manifest strictly into its Kubernetes type, checks what the server relies on (probes, the
// replica name, settings the server knows, secrets the example Secret defines, shutdown within
// the grace period), and builds the binary the way the Dockerfile does.
package deploy
