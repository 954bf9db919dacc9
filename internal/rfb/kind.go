// Package rfb reads the client side of an RFB (VNC) stream, RFC 6143 and the community
// extensions noVNC and TigerVNC use, so that a relay can forward a viewer's bytes unit by unit:
// it drops a view-only viewer's input, forces its ClientInit to shared and holds back update
// requests to pace a tunnel (PROTOCOL.md 6.4). It never decodes the picture; the server's side
// is looked at only during the handshake.
package rfb

import "errors"

// Kind says what a unit of the client stream is.
type Kind uint8

// The kinds of client stream units.
const (
	KindHandshake Kind = iota // protocol version, security and ClientInit bytes
	KindOpaque                // bytes after a handshake the stream cannot read past (passthrough)
	KindSetPixelFormat
	KindSetEncodings
	KindUpdateRequest // FramebufferUpdateRequest
	KindKey
	KindPointer
	KindClipboard // ClientCutText, either form
	KindContinuousUpdates
	KindFence
	KindSetDesktopSize
	KindXvp
	KindQEMU
)

var kindNames = [...]string{
	KindHandshake:         "handshake",
	KindOpaque:            "opaque",
	KindSetPixelFormat:    "set_pixel_format",
	KindSetEncodings:      "set_encodings",
	KindUpdateRequest:     "update_request",
	KindKey:               "key",
	KindPointer:           "pointer",
	KindClipboard:         "clipboard",
	KindContinuousUpdates: "continuous_updates",
	KindFence:             "fence",
	KindSetDesktopSize:    "set_desktop_size",
	KindXvp:               "xvp",
	KindQEMU:              "qemu",
}

// String names the kind as metric labels do.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Input reports whether the unit acts on the desktop, which a view-only viewer may not do.
func (k Kind) Input() bool {
	switch k {
	case KindKey, KindPointer, KindClipboard, KindSetDesktopSize, KindXvp, KindQEMU:
		return true
	}
	return false
}

// Errors of a client stream; the errors returned wrap one of them with detail.
var (
	ErrUnsupportedMessage  = errors.New("unsupported RFB message")
	ErrInvalidHandshake    = errors.New("invalid RFB handshake")
	ErrUnsupportedSecurity = errors.New("unsupported security type for a view-only viewer")
	ErrTooLong             = errors.New("RFB message too long")
)

// Options shape how a ClientStream reads and rewrites the viewer's bytes.
type Options struct {
	ViewOnly               bool // security must be None (1) or VNC authentication (2), else ErrUnsupportedSecurity; ClientInit's shared flag is forced to 1
	StripContinuousUpdates bool // remove pseudo-encoding -313 from SetEncodings (the message is rewritten, its count adjusted)
	MaxClipboard           int  // ClientCutText longer than this is ErrTooLong; 0 means 1 MiB
}

// Message is one unit of the client stream.
type Message struct {
	Kind        Kind
	Incremental bool   // for KindUpdateRequest
	Bytes       []byte // the unit's bytes as to forward; valid only during the emit call
}

// Client message types (RFC 6143 7.5 and the community registry).
const (
	msgSetPixelFormat    = 0
	msgSetEncodings      = 2
	msgUpdateRequest     = 3
	msgKey               = 4
	msgPointer           = 5
	msgCutText           = 6
	msgContinuousUpdates = 150
	msgFence             = 248
	msgXvp               = 250
	msgSetDesktopSize    = 251
	msgQEMU              = 255
)

// Bounds on the variable-length messages, so one unit never holds much memory.
const (
	// DefaultMaxClipboard is Options.MaxClipboard's zero value.
	DefaultMaxClipboard = 1 << 20
	// MaxEncodings bounds SetEncodings' count.
	MaxEncodings = 1024
	// MaxScreens bounds SetDesktopSize's screen count.
	MaxScreens = 64
	// MaxFencePayload is ClientFence's largest payload (the extension's own limit).
	MaxFencePayload = 64
	// EncodingContinuousUpdates is the pseudo-encoding that lets the server send unasked.
	EncodingContinuousUpdates = -313
)
