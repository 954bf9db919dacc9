package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// ProxyTo returns a TunnelHandler that dials the session's VNC server with dial, accepts the
// tunnel only once the dial succeeded (so a failed dial reaches the control plane as the
// tunnel's error), then copies bytes both ways until either side ends or the tunnel's ctx
// does. For StreamSpace's messages, vnc_ready carries the port of a *net.TCPAddr dialed.
func ProxyTo(dial func(ctx context.Context, sessionID string) (net.Conn, error)) TunnelHandler {
	return func(ctx context.Context, t *Tunnel) error {
		vnc, err := dial(ctx, t.SessionID())
		if err != nil {
			return fmt.Errorf("dial VNC server of session %s: %w", t.SessionID(), err)
		}
		defer vnc.Close()
		if addr, ok := vnc.RemoteAddr().(*net.TCPAddr); ok {
			t.SetTarget("", addr.Port)
		}
		if err := t.Accept(); err != nil {
			return err
		}
		return Splice(ctx, t, vnc)
	}
}

// Splice copies bytes between a tunnel and a connection, both ways, until either side ends or
// ctx does, and closes c. It leaves t to its handler's return, so the SDK tells the control
// plane how the tunnel ended. A clean end on either side is nil.
func Splice(ctx context.Context, t *Tunnel, c net.Conn) error {
	// Ending either copy: c closed stops the copy from it; t's read deadline moved to now
	// stops the copy from the viewer without closing the tunnel.
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = c.Close()
			_ = t.SetReadDeadline(time.Unix(1, 0))
		})
	}
	defer context.AfterFunc(ctx, stop)()
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := io.Copy(c, t)
		stop()
		errc <- err
	})
	wg.Go(func() {
		_, err := io.Copy(t, c)
		stop()
		errc <- err
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("relay tunnel of session %s: %w", t.SessionID(), err)
		}
	}
	return nil
}
