// Package novnc finds the noVNC directory the dashboard's viewer loads its RFB client from, and
// serves it at /novnc/ as websockify's --web does. noVNC is never part of this repository: it
// comes from a configured directory, from Debian's package, or (for `serve --dev` only) from
// the pinned npm release, downloaded once into the user's cache and checked against its
// published integrity digest.
package novnc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// The pinned npm release fetched for `serve --dev` when no noVNC is installed.
const (
	Version    = "1.7.0"
	TarballURL = "https://registry.npmjs.org/@novnc/novnc/-/novnc-1.7.0.tgz"
	// Integrity is the release's npm integrity string (SRI: sha512, base64).
	Integrity = "sha512-ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA=="
)

// DebianDir is where Debian's novnc package installs it.
const DebianDir = "/usr/share/novnc"

// Prefix is the path the directory is served under.
const Prefix = "/novnc/"

// ErrNotFound means no noVNC directory was found and none may be downloaded.
var ErrNotFound = errors.New("novnc: no noVNC found: install Debian's novnc package (scripts/tools.sh), set --novnc-dir, or run serve --dev to download it")

// Valid reports whether dir holds noVNC: its core/rfb.js, the module the dashboard imports.
func Valid(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "core", "rfb.js"))
	return err == nil && fi.Mode().IsRegular()
}

// Options says where Resolve looks.
type Options struct {
	// Dir is the configured directory (--novnc-dir); when set it is the only candidate.
	Dir string
	// System is the system's directory; empty means DebianDir.
	System string
	// Download allows fetching the pinned release into CacheDir (serve --dev).
	Download bool
	// CacheDir is where a download goes; empty means os.UserCacheDir()/streamspace-realtime.
	CacheDir string
	// Fetch overrides what is downloaded (tests); zero means the pinned release.
	Fetch Source
	// Client makes the download's request; nil means http.DefaultClient.
	Client *http.Client
	Logger *slog.Logger
}

// Source is a tarball to download and the integrity string it must match.
type Source struct {
	URL, Integrity string
}

// Resolve returns the noVNC directory to serve: Dir when set (an error when it holds no
// noVNC), else the system's, else with Download the cached release, downloading it first when
// absent. ErrNotFound when there is none.
func Resolve(ctx context.Context, o Options) (string, error) {
	if o.Dir != "" {
		if !Valid(o.Dir) {
			return "", fmt.Errorf("novnc: %s has no core/rfb.js: it is not a noVNC directory", o.Dir)
		}
		return o.Dir, nil
	}
	system := o.System
	if system == "" {
		system = DebianDir
	}
	if Valid(system) {
		return system, nil
	}
	if !o.Download {
		return "", ErrNotFound
	}
	cache := o.CacheDir
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("novnc: no cache directory to download into: %w", err)
		}
		cache = filepath.Join(base, "streamspace-realtime")
	}
	src := o.Fetch
	if src.URL == "" {
		src = Source{URL: TarballURL, Integrity: Integrity}
	}
	dest := filepath.Join(cache, "novnc-"+Version)
	if Valid(dest) {
		return dest, nil
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	if err := Download(ctx, client, src, dest, log); err != nil {
		return "", err
	}
	return dest, nil
}

// Handler serves dir below Prefix, as files only: no directory listings.
func Handler(dir string) http.Handler {
	files := http.FileServer(noListing{http.Dir(dir)})
	return http.StripPrefix(strings.TrimSuffix(Prefix, "/"), files)
}

// noListing hides directories without an index.html from http.FileServer.
type noListing struct{ fs http.FileSystem }

func (n noListing) Open(name string) (http.File, error) {
	f, err := n.fs.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if fi.IsDir() {
		index, err := n.fs.Open(strings.TrimSuffix(name, "/") + "/index.html")
		if err != nil {
			_ = f.Close()
			return nil, os.ErrNotExist
		}
		_ = index.Close()
	}
	return f, nil
}
