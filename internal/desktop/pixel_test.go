package desktop

import (
	"image"
	"image/color"
	"testing"
)

// TestRawPaddingIsOpaque: in 32 bpp the byte no colour uses is sent as 0xff, for both the
// server's own format and noVNC's (red in the low byte). noVNC 1.3 takes that byte for the
// pixel's alpha in Raw rectangles, and drew nothing while it was 0.
func TestRawPaddingIsOpaque(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 2, 1))
	img.SetRGBA(0, 0, color.RGBA{R: 10, G: 20, B: 30, A: 255})
	img.SetRGBA(1, 0, color.RGBA{R: 200, G: 100, B: 50, A: 255})
	novnc := pixelFormat{bpp: 32, depth: 24, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255,
		redShift: 0, greenShift: 8, blueShift: 16}
	for name, tc := range map[string]struct {
		pf   pixelFormat
		want []byte
	}{
		"server format": {defaultFormat, []byte{30, 20, 10, 0xff, 50, 100, 200, 0xff}},
		"noVNC format":  {novnc, []byte{10, 20, 30, 0xff, 200, 100, 50, 0xff}},
	} {
		got := tc.pf.appendRaw(nil, img, img.Bounds())
		if string(got) != string(tc.want) {
			t.Errorf("%s: raw bytes %v, want %v", name, got, tc.want)
		}
	}
}
