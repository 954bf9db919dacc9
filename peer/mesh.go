package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Defaults of Config's zero fields.
const (
	DefaultDialTimeout      = 3 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultKeepAlive        = 5 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultStreamWindow     = 256 << 10
	// MinSecretLen is the shortest shared secret New accepts.
	MinSecretLen = 32
	// maxPendingHandshakes bounds the inbound connections still proving themselves, so that a
	// flood of unauthenticated connections costs a bounded number of goroutines.
	maxPendingHandshakes = 64
)

// ErrClosed is returned by Dial and Serve once the mesh is closed.
var ErrClosed = errors.New("peer: mesh closed")

// Config configures a Mesh.
type Config struct {
	// Replica is this replica's name, sent in the handshake; other replicas dial it by it.
	Replica string
	// Secret is shared by every replica of the installation, at least MinSecretLen bytes.
	Secret []byte
	// Handler serves the streams other replicas open, one HTTP/1.1 connection each.
	Handler http.Handler
	// Logger receives the mesh's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the mesh's Prometheus collectors; nil registers none.
	Registerer prometheus.Registerer
	// DialTimeout bounds the TCP connect of a new link (DefaultDialTimeout).
	DialTimeout time.Duration
	// HandshakeTimeout bounds TLS and the proofs of a new link (DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// KeepAlive is how often an idle link is pinged (DefaultKeepAlive). A ping unanswered
	// within WriteTimeout closes the link.
	KeepAlive time.Duration
	// WriteTimeout closes a link whose writes stall this long (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// StreamWindow is each stream's flow-control window (DefaultStreamWindow): what one
	// stream may have in flight, whatever the others do.
	StreamWindow uint32
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	return c
}

// Mesh is one replica's links to the others: it accepts links (Serve), dials them on demand
// (Dial), and serves the streams other replicas open with Config.Handler. Safe for concurrent
// use.
type Mesh struct {
	cfg       Config
	log       *slog.Logger
	serverTLS *tls.Config
	yamux     *yamux.Config
	metrics   *metrics
	refusals  *rate.Limiter // logged refusals, one a second

	ctx    context.Context
	cancel context.CancelFunc
	srv    *http.Server
	accept chan net.Conn // streams for srv
	wg     sync.WaitGroup

	pending chan struct{} // inbound handshakes in progress

	mu        sync.Mutex
	links     map[string][]*link
	dials     map[string]*dialCall
	listeners map[net.Listener]struct{}
	closed    bool
}

// link is one authenticated yamux session with another replica.
type link struct {
	replica string
	inbound bool
	sess    *yamux.Session
}

// dialCall is one link being dialled; callers for the same replica wait for it together.
type dialCall struct {
	done chan struct{}
	l    *link
	err  error
}

// New makes a mesh; it serves nothing until Serve and dials nothing until Dial.
func New(cfg Config) (*Mesh, error) {
	cfg = cfg.withDefaults()
	if !validName(cfg.Replica) {
		return nil, fmt.Errorf("peer: invalid replica name %q", cfg.Replica)
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("peer: the shared secret must be at least %d bytes", MinSecretLen)
	}
	if cfg.Handler == nil {
		return nil, errors.New("peer: a handler is required")
	}
	cert, err := ephemeralCertificate()
	if err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg: cfg,
		log: cfg.Logger.With("component", "peer", "replica", cfg.Replica),
		serverTLS: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{alpn},
		},
		yamux: &yamux.Config{
			AcceptBacklog:          256,
			EnableKeepAlive:        true,
			KeepAliveInterval:      cfg.KeepAlive,
			ConnectionWriteTimeout: cfg.WriteTimeout,
			MaxStreamWindowSize:    cfg.StreamWindow,
			StreamOpenTimeout:      cfg.WriteTimeout,
			StreamCloseTimeout:     cfg.WriteTimeout,
			Logger:                 slog.NewLogLogger(cfg.Logger.With("component", "yamux").Handler(), slog.LevelDebug),
		},
		metrics:   newMetrics(cfg.Registerer),
		refusals:  rate.NewLimiter(1, 1),
		accept:    make(chan net.Conn),
		pending:   make(chan struct{}, maxPendingHandshakes),
		links:     make(map[string][]*link),
		dials:     make(map[string]*dialCall),
		listeners: make(map[net.Listener]struct{}),
	}
	if err := yamux.VerifyConfig(m.yamux); err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.srv = &http.Server{
		Handler:           cfg.Handler,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return m.ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if s, ok := c.(*stream); ok {
				return context.WithValue(ctx, replicaKey{}, s.replica)
			}
			return ctx
		},
	}
	m.wg.Go(func() { _ = m.srv.Serve(streamListener{m}) })
	return m, nil
}

type replicaKey struct{}

// ReplicaFrom returns the name of the replica that opened the stream a request came on.
func ReplicaFrom(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(replicaKey{}).(string)
	return name, ok
}

// Serve accepts links from other replicas on ln until the mesh is closed (it then returns
// nil) or ln fails. It closes ln.
func (m *Mesh) Serve(ln net.Listener) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	m.listeners[ln] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.listeners, ln)
		m.mu.Unlock()
		_ = ln.Close()
	}()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("peer: accept: %w", err)
		}
		backoff = 0
		select {
		case m.pending <- struct{}{}:
		default:
			m.metrics.handshakes.WithLabelValues("busy").Inc()
			_ = conn.Close()
			continue
		}
		m.wg.Go(func() {
			defer func() { <-m.pending }()
			m.acceptLink(conn)
		})
	}
}

// acceptLink authenticates one inbound connection and serves it as a link.
func (m *Mesh) acceptLink(raw net.Conn) {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.HandshakeTimeout)
	conn, name, err := m.serverHandshake(ctx, raw)
	cancel()
	if err != nil {
		_ = raw.Close()
		reason := "failed"
		switch {
		case errors.Is(err, errRefusedTLS):
			reason = "refused_tls"
		case errors.Is(err, errRefusedProof):
			reason = "refused_proof"
		case errors.Is(err, errRefusedName):
			reason = "refused_name"
		}
		m.metrics.handshakes.WithLabelValues(reason).Inc()
		if m.refusals.Allow() {
			m.log.Warn("refused a peer link", "remote", raw.RemoteAddr().String(), "reason", reason, "err", err)
		}
		return
	}
	sess, err := yamux.Server(conn, m.yamux)
	if err != nil {
		_ = conn.Close()
		m.log.Error("starting a peer link", "peer", name, "err", err)
		return
	}
	m.metrics.handshakes.WithLabelValues("ok").Inc()
	l := &link{replica: name, inbound: true, sess: sess}
	if !m.add(l) {
		return
	}
	m.log.Info("peer link accepted", "peer", name, "remote", raw.RemoteAddr().String())
	m.serveLink(l)
}

// add registers a live link; false (and the link closed) once the mesh is closed.
func (m *Mesh) add(l *link) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		_ = l.sess.Close()
		return false
	}
	m.links[l.replica] = append(m.links[l.replica], l)
	m.metrics.links.WithLabelValues(direction(l.inbound)).Inc()
	return true
}

// drop forgets a link and closes it; only the first call for a link counts.
func (m *Mesh) drop(l *link) {
	m.mu.Lock()
	ls := m.links[l.replica]
	found := false
	for i, x := range ls {
		if x == l {
			ls = append(ls[:i], ls[i+1:]...)
			found = true
			break
		}
	}
	if len(ls) == 0 {
		delete(m.links, l.replica)
	} else {
		m.links[l.replica] = ls
	}
	m.mu.Unlock()
	_ = l.sess.Close()
	if found {
		m.metrics.links.WithLabelValues(direction(l.inbound)).Dec()
		if m.ctx.Err() == nil {
			m.log.Info("peer link closed", "peer", l.replica)
		}
	}
}

// serveLink hands the streams the other replica opens on l to the HTTP server until l ends,
// then forgets it. Every stream of a link that ends is reset, which ends its relays.
func (m *Mesh) serveLink(l *link) {
	defer m.drop(l)
	for {
		st, err := l.sess.AcceptStream()
		if err != nil {
			return
		}
		c := m.wrap(st, l.replica)
		select {
		case m.accept <- c:
		case <-m.ctx.Done():
			_ = c.Close()
			return
		}
	}
}

// Dial opens a new stream to replica, over the link with it if there is one, else over a new
// link to addr (callers for one replica share one dial). The stream is an ordinary net.Conn:
// speak HTTP over it. ctx bounds the wait for a link, not the stream's life.
func (m *Mesh) Dial(ctx context.Context, replica, addr string) (net.Conn, error) {
	var lastErr error
	for range 2 {
		l, err := m.link(ctx, replica, addr)
		if err != nil {
			return nil, err
		}
		st, err := l.sess.OpenStream()
		if err == nil {
			return m.wrap(st, replica), nil
		}
		lastErr = err
		m.drop(l) // it died under us: one fresh link
	}
	return nil, fmt.Errorf("peer: open a stream to %s: %w", replica, lastErr)
}

// link returns a live link with replica, dialling addr when there is none.
func (m *Mesh) link(ctx context.Context, replica, addr string) (*link, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	for _, l := range m.links[replica] {
		if !l.sess.IsClosed() {
			m.mu.Unlock()
			return l, nil
		}
	}
	call := m.dials[replica]
	if call == nil {
		if replica == m.cfg.Replica {
			m.mu.Unlock()
			return nil, fmt.Errorf("peer: %s is this replica", replica)
		}
		call = &dialCall{done: make(chan struct{})}
		m.dials[replica] = call
		// The dial is the mesh's, not the first caller's: a caller that gives up must not fail
		// the others waiting for the same link.
		m.wg.Go(func() { m.dial(call, replica, addr) })
	}
	m.mu.Unlock()
	select {
	case <-call.done:
		return call.l, call.err
	case <-ctx.Done():
		return nil, fmt.Errorf("peer: waiting for a link to %s: %w", replica, ctx.Err())
	}
}

// dial makes an outbound link and starts serving the streams the other end opens on it.
func (m *Mesh) dial(call *dialCall, replica, addr string) {
	defer func() {
		m.mu.Lock()
		delete(m.dials, replica)
		m.mu.Unlock()
		close(call.done)
	}()
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.DialTimeout+m.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := (&net.Dialer{Timeout: m.cfg.DialTimeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		m.metrics.dials.WithLabelValues("unreachable").Inc()
		call.err = fmt.Errorf("peer: dial %s at %s: %w", replica, addr, err)
		return
	}
	conn, err := m.clientHandshake(ctx, raw, replica)
	if err != nil {
		_ = raw.Close()
		result := "failed"
		switch {
		case errors.Is(err, ErrWrongReplica):
			result = "wrong_replica"
		case errors.Is(err, ErrNotAuthenticated):
			result = "not_authenticated"
		}
		m.metrics.dials.WithLabelValues(result).Inc()
		call.err = fmt.Errorf("peer: link to %s at %s: %w", replica, addr, err)
		return
	}
	sess, err := yamux.Client(conn, m.yamux)
	if err != nil {
		_ = conn.Close()
		call.err = fmt.Errorf("peer: link to %s: %w", replica, err)
		return
	}
	l := &link{replica: replica, sess: sess}
	if !m.add(l) {
		call.err = ErrClosed
		return
	}
	m.metrics.dials.WithLabelValues("ok").Inc()
	m.log.Info("peer link dialled", "peer", replica, "addr", addr)
	call.l = l
	m.wg.Go(func() { m.serveLink(l) })
}

// Close closes the listeners, every link and with them every stream, and waits for the
// mesh's goroutines. Handlers still running on hijacked streams see their connection fail.
func (m *Mesh) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.cancel() // before the listeners close, so Serve knows it is the mesh's end
	var all []*link
	for _, ls := range m.links {
		all = append(all, ls...)
	}
	for ln := range m.listeners {
		_ = ln.Close()
	}
	m.mu.Unlock()
	for _, l := range all {
		_ = l.sess.Close()
	}
	err := m.srv.Close()
	m.wg.Wait()
	return err
}

func direction(inbound bool) string {
	if inbound {
		return "in"
	}
	return "out"
}

// streamListener hands the streams of every link to the mesh's HTTP server.
type streamListener struct{ m *Mesh }

func (l streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.accept:
		return c, nil
	case <-l.m.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (l streamListener) Close() error { return nil }

func (l streamListener) Addr() net.Addr { return meshAddr(l.m.cfg.Replica) }

type meshAddr string

func (a meshAddr) Network() string { return "peer" }
func (a meshAddr) String() string  { return string(a) }

// stream is one yamux stream, knowing its other replica and counted while open.
type stream struct {
	*yamux.Stream
	replica string
	m       *Mesh
	once    sync.Once
}

func (m *Mesh) wrap(st *yamux.Stream, replica string) *stream {
	m.metrics.streams.Inc()
	return &stream{Stream: st, replica: replica, m: m}
}

// Close closes the stream; the other end reads EOF.
func (s *stream) Close() error {
	s.once.Do(func() { s.m.metrics.streams.Dec() })
	return s.Stream.Close()
}

func (s *stream) LocalAddr() net.Addr  { return meshAddr(s.m.cfg.Replica) }
func (s *stream) RemoteAddr() net.Addr { return meshAddr(s.replica) }
