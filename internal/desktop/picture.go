package desktop

import (
	"image"
	"image/color"
	"image/draw"
	"strconv"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Title is drawn on the desktop and is its RFB name.
const Title = "StreamSpace Realtime — built-in desktop"

// MarkerSize is the side of the square drawn where a button press lands.
const MarkerSize = 9

// maxMarkers bounds the markers remembered; the oldest go first.
const maxMarkers = 1024

// The test pattern's colour bars, left to right, and the colours around them.
var (
	Bars = []color.RGBA{
		{255, 255, 255, 255}, {255, 255, 0, 255}, {0, 255, 255, 255}, {0, 255, 0, 255},
		{255, 0, 255, 255}, {255, 0, 0, 255}, {0, 0, 255, 255}, {0, 0, 0, 255},
	}
	Background   = color.RGBA{24, 24, 32, 255}
	TextColour   = color.RGBA{230, 230, 230, 255}
	MarkerColour = color.RGBA{255, 20, 147, 255}
)

// layout places the picture's parts for one framebuffer size.
type layout struct {
	size   image.Rectangle
	bars   image.Rectangle // the colour bars
	scale  int             // text is basicfont's 7x13 glyphs scaled by this
	title  image.Point     // top-left corners of the text lines
	clock  image.Point
	clicks image.Point
}

func newLayout(w, h int) layout {
	l := layout{size: image.Rect(0, 0, w, h), bars: image.Rect(0, 0, w, h*3/5), scale: 2}
	if h < 480 || w < 640 {
		l.scale = 1
	}
	line := 20 * l.scale
	l.title = image.Pt(8*l.scale, l.bars.Max.Y+8*l.scale)
	l.clock = l.title.Add(image.Pt(0, line))
	l.clicks = l.clock.Add(image.Pt(0, line))
	return l
}

// textRect is where a line of n characters starting at p is drawn.
func (l layout) textRect(p image.Point, n int) image.Rectangle {
	return image.Rect(p.X, p.Y, p.X+7*l.scale*n, p.Y+13*l.scale)
}

// clockRect is where the clock's "HH:MM:SS" is drawn.
func (l layout) clockRect() image.Rectangle { return l.textRect(l.clock, 8) }

// render draws the whole picture for one moment.
func (l layout) render(now time.Time, clicks int, markers []image.Point) *image.RGBA {
	img := image.NewRGBA(l.size)
	draw.Draw(img, img.Rect, image.NewUniform(Background), image.Point{}, draw.Src)
	bw := l.bars.Dx() / len(Bars)
	for i, c := range Bars {
		r := image.Rect(i*bw, 0, (i+1)*bw, l.bars.Max.Y)
		if i == len(Bars)-1 {
			r.Max.X = l.bars.Max.X
		}
		draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
	}
	// basicfont has ASCII only: the title's dash is drawn as a hyphen.
	l.text(img, l.title, strings.ReplaceAll(Title, "—", "-"))
	l.text(img, l.clock, now.Format("15:04:05"))
	l.text(img, l.clicks, "clicks: "+strconv.Itoa(clicks))
	for _, p := range markers {
		r := image.Rect(p.X-MarkerSize/2, p.Y-MarkerSize/2, p.X+MarkerSize/2+1, p.Y+MarkerSize/2+1).Intersect(img.Rect)
		draw.Draw(img, r, image.NewUniform(MarkerColour), image.Point{}, draw.Src)
	}
	return img
}

// text draws s with its top-left corner at p, scaled up by l.scale with square pixels.
func (l layout) text(dst *image.RGBA, p image.Point, s string) {
	face := basicfont.Face7x13
	small := image.NewAlpha(image.Rect(0, 0, face.Advance*len(s), face.Height))
	d := font.Drawer{Dst: small, Src: image.Opaque, Face: face, Dot: fixed.P(0, face.Ascent)}
	d.DrawString(s)
	for y := 0; y < small.Rect.Dy(); y++ {
		for x := 0; x < small.Rect.Dx(); x++ {
			if small.AlphaAt(x, y).A < 128 {
				continue
			}
			r := image.Rect(p.X+x*l.scale, p.Y+y*l.scale, p.X+(x+1)*l.scale, p.Y+(y+1)*l.scale).Intersect(dst.Rect)
			draw.Draw(dst, r, image.NewUniform(TextColour), image.Point{}, draw.Src)
		}
	}
}

// changedTiles returns the parts of area where a differs from b, as rows of tiles merged
// horizontally: what an incremental update sends. A nil b differs everywhere.
func changedTiles(a, b *image.RGBA, area image.Rectangle) []image.Rectangle {
	const tile = 16
	if b == nil {
		return []image.Rectangle{area}
	}
	var out []image.Rectangle
	for y := area.Min.Y; y < area.Max.Y; y += tile {
		var run image.Rectangle
		for x := area.Min.X; x < area.Max.X; x += tile {
			t := image.Rect(x, y, x+tile, y+tile).Intersect(area)
			if !differs(a, b, t) {
				continue
			}
			if !run.Empty() && run.Max.X == t.Min.X {
				run.Max.X = t.Max.X
				continue
			}
			if !run.Empty() {
				out = append(out, run)
			}
			run = t
		}
		if !run.Empty() {
			out = append(out, run)
		}
	}
	return out
}

func differs(a, b *image.RGBA, r image.Rectangle) bool {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		ra := a.Pix[a.PixOffset(r.Min.X, y):a.PixOffset(r.Max.X, y)]
		rb := b.Pix[b.PixOffset(r.Min.X, y):b.PixOffset(r.Max.X, y)]
		if string(ra) != string(rb) {
			return true
		}
	}
	return false
}
