package desktop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"math/bits"
	"slices"
)

// pixelFormat is RFB's PIXEL_FORMAT; the desktop serves true colour only.
type pixelFormat struct {
	bpp, depth                      uint8
	bigEndian, trueColour           bool
	redMax, greenMax, blueMax       uint16
	redShift, greenShift, blueShift uint8
}

// defaultFormat is what ServerInit announces: 32 bpp, depth 24, little-endian, red in bits
// 16-23, the format noVNC asks for anyway.
var defaultFormat = pixelFormat{bpp: 32, depth: 24, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255,
	redShift: 16, greenShift: 8, blueShift: 0}

// errColourMap refuses a viewer that asks for a palette: the desktop sends true colour only.
var errColourMap = errors.New("colour-map pixel formats are not supported; ask for true colour")

func parsePixelFormat(b []byte) (pixelFormat, error) {
	pf := pixelFormat{
		bpp: b[0], depth: b[1], bigEndian: b[2] != 0, trueColour: b[3] != 0,
		redMax: binary.BigEndian.Uint16(b[4:]), greenMax: binary.BigEndian.Uint16(b[6:]), blueMax: binary.BigEndian.Uint16(b[8:]),
		redShift: b[10], greenShift: b[11], blueShift: b[12],
	}
	if !pf.trueColour {
		return pf, errColourMap
	}
	switch pf.bpp {
	case 8, 16, 32:
	default:
		return pf, fmt.Errorf("unsupported pixel format: %d bits per pixel (8, 16 or 32)", pf.bpp)
	}
	for _, c := range []struct {
		max   uint16
		shift uint8
	}{{pf.redMax, pf.redShift}, {pf.greenMax, pf.greenShift}, {pf.blueMax, pf.blueShift}} {
		width := bits.Len16(c.max)
		if c.max == 0 || c.max&(c.max+1) != 0 || int(c.shift)+width > int(pf.bpp) {
			return pf, fmt.Errorf("unsupported pixel format: channel max %d at shift %d in %d bits", c.max, c.shift, pf.bpp)
		}
	}
	return pf, nil
}

func (pf pixelFormat) encode(b []byte) {
	b[0], b[1] = pf.bpp, pf.depth
	if pf.bigEndian {
		b[2] = 1
	}
	if pf.trueColour {
		b[3] = 1
	}
	binary.BigEndian.PutUint16(b[4:], pf.redMax)
	binary.BigEndian.PutUint16(b[6:], pf.greenMax)
	binary.BigEndian.PutUint16(b[8:], pf.blueMax)
	b[10], b[11], b[12] = pf.redShift, pf.greenShift, pf.blueShift
}

// appendRaw appends the pixels of r in img, in pf, as Raw encoding lays them out.
func (pf pixelFormat) appendRaw(dst []byte, img *image.RGBA, r image.Rectangle) []byte {
	dst = slices.Grow(dst, r.Dx()*r.Dy()*int(pf.bpp/8))
	// The bits no colour uses are set, not left 0: noVNC 1.3 (Debian 12's) takes a 32 bpp Raw
	// pixel's padding byte for its alpha, so zero padding draws nothing at all. RFB viewers
	// ignore those bits.
	padding := ^(uint32(pf.redMax)<<pf.redShift | uint32(pf.greenMax)<<pf.greenShift | uint32(pf.blueMax)<<pf.blueShift)
	if pf == defaultFormat { // the server's own format: bytes B, G, R, padding straight from the picture
		for y := r.Min.Y; y < r.Max.Y; y++ {
			row := img.Pix[img.PixOffset(r.Min.X, y):img.PixOffset(r.Max.X, y)]
			n := len(dst)
			dst = dst[:n+len(row)]
			for i := 0; i < len(row); i += 4 {
				dst[n+i], dst[n+i+1], dst[n+i+2], dst[n+i+3] = row[i+2], row[i+1], row[i], 0xff
			}
		}
		return dst
	}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		row := img.Pix[img.PixOffset(r.Min.X, y):img.PixOffset(r.Max.X, y)]
		for i := 0; i < len(row); i += 4 {
			v := uint32(row[i])*uint32(pf.redMax)/255<<pf.redShift |
				uint32(row[i+1])*uint32(pf.greenMax)/255<<pf.greenShift |
				uint32(row[i+2])*uint32(pf.blueMax)/255<<pf.blueShift
			switch pf.bpp {
			case 8:
				dst = append(dst, byte(v))
			case 16:
				if pf.bigEndian {
					dst = binary.BigEndian.AppendUint16(dst, uint16(v))
				} else {
					dst = binary.LittleEndian.AppendUint16(dst, uint16(v))
				}
			default:
				v |= padding
				if pf.bigEndian {
					dst = binary.BigEndian.AppendUint32(dst, v)
				} else {
					dst = binary.LittleEndian.AppendUint32(dst, v)
				}
			}
		}
	}
	return dst
}
