package server

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// peerSecretInfo binds a secret derived from the JWT secret to the peer link: the same JWT
// secret never yields the same key for another use.
const peerSecretInfo = "streamspace-realtime peer link v1"

// minPeerSecret is the shortest peer secret accepted, as for the JWT secret.
const minPeerSecret = 32

// completePeer checks the peer link's settings and fills in the defaults of PROTOCOL.md 5: the
// advertised address and the secret.
func (c *Config) completePeer() error {
	var errs []error
	_, port, err := splitHostPort(c.PeerAddr, true)
	if err != nil {
		errs = append(errs, fmt.Errorf("STREAMSPACE_PEER_ADDR %q: %w", c.PeerAddr, err))
	}
	switch {
	case c.PeerAdvertiseAddr != "":
		host, p, err := splitHostPort(c.PeerAdvertiseAddr, false)
		if err == nil && (host == "" || p == "0") {
			err = errors.New("want a host and a port other replicas can dial")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("STREAMSPACE_PEER_ADVERTISE_ADDR %q: %w", c.PeerAdvertiseAddr, err))
		}
	case err == nil:
		c.PeerAdvertiseAddr = net.JoinHostPort(advertiseHost(c.podIP, c.PeerAddr), port)
	}
	switch {
	case c.PeerSecret != "" && len(c.PeerSecret) < minPeerSecret:
		errs = append(errs, fmt.Errorf("STREAMSPACE_PEER_SECRET must be at least %d bytes (or unset: derived from the JWT secret)", minPeerSecret))
	case c.PeerSecret == "" && len(c.JWTSecret) >= minPeerSecret:
		key, err := hkdf.Key(sha256.New, []byte(c.JWTSecret), nil, peerSecretInfo, 32)
		if err != nil {
			errs = append(errs, fmt.Errorf("deriving the peer secret: %w", err))
			break
		}
		c.PeerSecret = hex.EncodeToString(key)
	}
	return errors.Join(errs...)
}

// splitHostPort splits host:port with a numeric port (0 allowed only where listening).
func splitHostPort(addr string, listen bool) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", errors.New("want host:port")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !listen) {
		return "", "", errors.New("want a port number 1-65535")
	}
	return host, port, nil
}

// advertiseHost is the host other replicas dial when none is configured: the pod's address,
// else the host the listener names, else this host's first non-loopback unicast address of an
// interface that is up, else loopback.
func advertiseHost(podIP, listenAddr string) string {
	if podIP != "" {
		return podIP
	}
	if host, _, err := net.SplitHostPort(listenAddr); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			return host
		}
	}
	if ip := firstUnicastIP(); ip != nil {
		return ip.String()
	}
	return "127.0.0.1"
}

// firstUnicastIP is the first global or private unicast, non-loopback address of an interface
// that is up, IPv4 first.
func firstUnicastIP() net.IP {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var v6 net.IP
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if ip4 := ipn.IP.To4(); ip4 != nil {
				return ip4
			}
			if v6 == nil {
				v6 = ipn.IP
			}
		}
	}
	return v6
}
