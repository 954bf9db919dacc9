package server

import (
	"context"
	"fmt"
	"net"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/peer"
)

// peerLink is the direct link to the other replicas: a peer.Mesh.
type peerLink interface {
	Dial(ctx context.Context, replica, addr string) (net.Conn, error)
	Close() error
}

// peerLocator finds where another replica's peer link listens: the cluster directory.
type peerLocator = cluster.PeerLocator

// listenPeers opens the listener of the peer link. When the advertised address was left to
// its default with the port to the system (port 0, as tests do), it takes the port listened on.
func listenPeers(cfg *Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("STREAMSPACE_PEER_ADDR: %w", err)
	}
	if host, port, err := net.SplitHostPort(cfg.PeerAdvertiseAddr); err == nil && port == "0" {
		_, bound, _ := net.SplitHostPort(ln.Addr().String())
		cfg.PeerAdvertiseAddr = net.JoinHostPort(host, bound)
	}
	return ln, nil
}

// startPeers starts the peer link on ln, serving the peer routes to the other replicas, whose
// addresses it finds in peers. It takes ln, also on failure.
func (s *Server) startPeers(ln net.Listener, peers peerLocator) error {
	mesh, err := peer.New(peer.Config{
		Replica:    s.cfg.Replica,
		Secret:     []byte(s.cfg.PeerSecret),
		Handler:    s.peerHandler(),
		Logger:     s.log,
		Registerer: s.registry,
	})
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("peer link: %w", err)
	}
	s.mesh, s.peers = mesh, peers
	s.peerServing.Add(1)
	go func() {
		defer s.peerServing.Done()
		if err := mesh.Serve(ln); err != nil {
			s.log.Error("the peer listener failed; other replicas cannot relay viewers here", "addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("peer link listening", "addr", ln.Addr().String(), "advertised", s.cfg.PeerAdvertiseAddr)
	return nil
}

// peerReplica is the name of the replica that opened the stream a request came on.
func peerReplica(ctx context.Context) (string, bool) { return peer.ReplicaFrom(ctx) }
