package peer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
)

// Errors of a link's handshake.
var (
	// ErrWrongReplica: the address answered with another replica's name (a stale address).
	ErrWrongReplica = errors.New("peer: the address belongs to another replica")
	// ErrNotAuthenticated: the other end did not prove it knows the shared secret.
	ErrNotAuthenticated = errors.New("peer: the other end did not prove the shared secret")
)

const (
	alpn          = "streamspace-peer/1"
	exporterLabel = "EXPORTER-streamspace-peer-link"
	maxNameLen    = 253
)

// ephemeralCertificate makes the self-signed certificate a mesh presents for its whole life.
// Nothing verifies it: TLS here gives confidentiality, the proofs give authentication.
func ephemeralCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "streamspace-peer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// proof is what one end sends: its name and the MAC binding the secret, its role, the TLS
// session and that name together.
func proof(secret, ekm []byte, role, name string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(alpn + " " + role + "\x00"))
	mac.Write(ekm)
	mac.Write([]byte(name))
	return mac.Sum(nil)
}

// writeHello sends [len][name][mac].
func writeHello(w io.Writer, name string, mac []byte) error {
	buf := make([]byte, 0, 1+len(name)+len(mac))
	buf = append(buf, byte(len(name)))
	buf = append(buf, name...)
	buf = append(buf, mac...)
	_, err := w.Write(buf)
	return err
}

// readHello reads [len][name][mac].
func readHello(r io.Reader) (name string, mac []byte, err error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", nil, err
	}
	if n[0] == 0 {
		return "", nil, errors.New("peer: empty replica name")
	}
	buf := make([]byte, int(n[0])+sha256.Size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", nil, err
	}
	return string(buf[:n[0]]), buf[n[0]:], nil
}

// verify checks the other end's proof in constant time.
func verify(secret, ekm []byte, role, name string, mac []byte) bool {
	return hmac.Equal(mac, proof(secret, ekm, role, name))
}

// clientHandshake authenticates an outbound link: TLS, our proof, then the other end's, which
// must come from replica want.
func (m *Mesh) clientHandshake(ctx context.Context, raw net.Conn, want string) (*tls.Conn, error) {
	conn := tls.Client(raw, &tls.Config{
		// The certificate is ephemeral and unverified on purpose: both ends authenticate with
		// the proofs below, bound to this session's keying material.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		ServerName:         "streamspace-peer",
	})
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("peer: tls handshake: %w", err)
	}
	ekm, err := exportedKey(conn)
	if err != nil {
		return nil, err
	}
	if err := writeHello(conn, m.cfg.Replica, proof(m.cfg.Secret, ekm, "client", m.cfg.Replica)); err != nil {
		return nil, fmt.Errorf("peer: send proof: %w", err)
	}
	name, mac, err := readHello(conn)
	if err != nil {
		// A server that did not accept our proof closes without sending its own.
		return nil, fmt.Errorf("%w (no proof received: %v; is the peer secret the same on every replica?)", ErrNotAuthenticated, err)
	}
	if !verify(m.cfg.Secret, ekm, "server", name, mac) {
		return nil, ErrNotAuthenticated
	}
	if name != want {
		return nil, fmt.Errorf("%w: dialled %s, answered by %s", ErrWrongReplica, want, name)
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, nil
}

// serverHandshake authenticates an inbound link and returns the other replica's name. The
// server sends its proof only once the client proved the secret: an unauthenticated caller
// learns nothing.
func (m *Mesh) serverHandshake(ctx context.Context, raw net.Conn) (*tls.Conn, string, error) {
	conn := tls.Server(raw, m.serverTLS)
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, "", fmt.Errorf("%w: tls handshake: %v", errRefusedTLS, err)
	}
	ekm, err := exportedKey(conn)
	if err != nil {
		return nil, "", err
	}
	name, mac, err := readHello(conn)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", errRefusedProof, err)
	}
	if !validName(name) || !verify(m.cfg.Secret, ekm, "client", name, mac) {
		return nil, "", errRefusedProof
	}
	if name == m.cfg.Replica {
		return nil, "", fmt.Errorf("%w: the peer uses this replica's own name %q", errRefusedName, name)
	}
	if err := writeHello(conn, m.cfg.Replica, proof(m.cfg.Secret, ekm, "server", m.cfg.Replica)); err != nil {
		return nil, "", fmt.Errorf("peer: send proof: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, name, nil
}

var (
	errRefusedTLS   = errors.New("peer: refused: not a TLS 1.3 peer link")
	errRefusedProof = errors.New("peer: refused: no valid proof of the shared secret")
	errRefusedName  = errors.New("peer: refused: bad replica name")
)

func exportedKey(conn *tls.Conn) ([]byte, error) {
	st := conn.ConnectionState()
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != alpn {
		return nil, fmt.Errorf("%w: version %x, protocol %q", errRefusedTLS, st.Version, st.NegotiatedProtocol)
	}
	ekm, err := st.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("peer: export keying material: %w", err)
	}
	return ekm, nil
}

func validName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
