package novnc

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Bounds of a download: noVNC's release is about 1 MiB packed and a few unpacked.
const (
	maxTarball   = 32 << 20
	maxUnpacked  = 128 << 20
	maxFile      = 32 << 20
	maxFiles     = 10000
	tarballRoot  = "package/" // npm tarballs hold everything below package/
	integrityAlg = "sha512-"
)

// Download fetches src, checks it against src.Integrity before unpacking anything, and unpacks
// it into dest (which must not exist), dropping npm's package/ prefix. Only regular files and
// directories are unpacked, every name must stay inside dest, and sizes are bounded. On any
// failure nothing is left behind: the tarball and the partial tree are removed.
func Download(ctx context.Context, client *http.Client, src Source, dest string, log *slog.Logger) error {
	want, ok := strings.CutPrefix(src.Integrity, integrityAlg)
	if !ok {
		return fmt.Errorf("novnc: integrity %q is not sha512", src.Integrity)
	}
	wantSum, err := base64.StdEncoding.DecodeString(want)
	if err != nil || len(wantSum) != sha512.Size {
		return fmt.Errorf("novnc: integrity %q is not a sha512 digest", src.Integrity)
	}
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("novnc: cache directory: %w", err)
	}
	log.Info("downloading noVNC", "url", src.URL, "into", dest)
	tgz, err := os.CreateTemp(parent, ".novnc-*.tgz")
	if err != nil {
		return fmt.Errorf("novnc: temporary file: %w", err)
	}
	defer func() { _ = tgz.Close(); _ = os.Remove(tgz.Name()) }()
	n, err := fetch(ctx, client, src.URL, tgz, wantSum)
	if err != nil {
		return err
	}
	log.Info("noVNC downloaded and verified", "bytes", n)
	if _, err := tgz.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("novnc: rewind tarball: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".novnc-unpack-*")
	if err != nil {
		return fmt.Errorf("novnc: temporary directory: %w", err)
	}
	files, err := unpack(tgz, tmp)
	if err == nil && !Valid(tmp) {
		err = errors.New("novnc: the tarball has no core/rfb.js")
	}
	if err == nil {
		err = os.Rename(tmp, dest)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("novnc: unpack %s: %w", src.URL, err)
	}
	log.Info("noVNC ready", "dir", dest, "files", files)
	return nil
}

// fetch writes url's body to w, at most maxTarball bytes, and checks its sha512.
func fetch(ctx context.Context, client *http.Client, url string, w io.Writer, wantSum []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("novnc: download request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("novnc: download %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("novnc: download %s: %s", url, resp.Status)
	}
	h := sha512.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(resp.Body, maxTarball+1))
	if err != nil {
		return n, fmt.Errorf("novnc: download %s: %w", url, err)
	}
	if n > maxTarball {
		return n, fmt.Errorf("novnc: download %s: larger than %d bytes", url, maxTarball)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), wantSum) != 1 {
		return n, fmt.Errorf("novnc: download %s: sha512 does not match the pinned integrity; refused", url)
	}
	return n, nil
}

// unpack extracts the gzipped tar r into dir, returning how many files it wrote.
func unpack(r io.Reader, dir string) (int, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return 0, fmt.Errorf("gzip: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var files int
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("tar: %w", err)
		}
		rel, err := entryPath(hdr.Name)
		if err != nil {
			return files, err
		}
		if rel == "" {
			continue // package/ itself
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return files, err
			}
		case tar.TypeReg:
			if hdr.Size < 0 || hdr.Size > maxFile {
				return files, fmt.Errorf("%s: %d bytes is over the bound of one file", hdr.Name, hdr.Size)
			}
			if total += hdr.Size; total > maxUnpacked {
				return files, fmt.Errorf("more than %d bytes unpacked", maxUnpacked)
			}
			if files++; files > maxFiles {
				return files, fmt.Errorf("more than %d files", maxFiles)
			}
			if err := writeFile(target, io.LimitReader(tr, hdr.Size)); err != nil {
				return files, err
			}
		default:
			return files, fmt.Errorf("%s: only files and directories may be unpacked (type %q)", hdr.Name, hdr.Typeflag)
		}
	}
}

// entryPath is a tar entry's path below package/, or an error when it would leave the
// directory or is not below package/.
func entryPath(name string) (string, error) {
	if strings.Contains(name, "\\") || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%q: not a relative slash path", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%q: leaves the directory", name)
		}
	}
	clean := path.Clean(name)
	if clean == strings.TrimSuffix(tarballRoot, "/") {
		return "", nil
	}
	rel, ok := strings.CutPrefix(clean, tarballRoot)
	if !ok || rel == "" || !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", fmt.Errorf("%q: not below %s", name, tarballRoot)
	}
	return rel, nil
}

func writeFile(target string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
