package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"strings"
)

// A bar chart written with the standard library only: image/png and a 3x5
// pixel font for the few characters the labels use, scaled up.

type barGroup struct {
	title  string
	points []scalePoint
}

// glyphs are 3 columns by 5 rows; '#' is ink.
var glyphs = map[rune][5]string{
	'0': {"###", "#.#", "#.#", "#.#", "###"}, '1': {".#.", "##.", ".#.", ".#.", "###"},
	'2': {"###", "..#", "###", "#..", "###"}, '3': {"###", "..#", "###", "..#", "###"},
	'4': {"#.#", "#.#", "###", "..#", "..#"}, '5': {"###", "#..", "###", "..#", "###"},
	'6': {"###", "#..", "###", "#.#", "###"}, '7': {"###", "..#", ".#.", ".#.", ".#."},
	'8': {"###", "#.#", "###", "#.#", "###"}, '9': {"###", "#.#", "###", "..#", "###"},
	'A': {".#.", "#.#", "###", "#.#", "#.#"}, 'B': {"##.", "#.#", "##.", "#.#", "##."},
	'C': {"###", "#..", "#..", "#..", "###"}, 'E': {"###", "#..", "##.", "#..", "###"},
	'G': {"###", "#..", "#.#", "#.#", "###"}, 'I': {"###", ".#.", ".#.", ".#.", "###"},
	'L': {"#..", "#..", "#..", "#..", "###"}, 'M': {"#.#", "###", "###", "#.#", "#.#"},
	'N': {"##.", "#.#", "#.#", "#.#", "#.#"}, 'O': {"###", "#.#", "#.#", "#.#", "###"},
	'P': {"###", "#.#", "###", "#..", "#.."}, 'R': {"##.", "#.#", "##.", "#.#", "#.#"},
	'S': {"###", "#..", "###", "..#", "###"}, 'T': {"###", ".#.", ".#.", ".#.", ".#."},
	'U': {"#.#", "#.#", "#.#", "#.#", "###"}, 'V': {"#.#", "#.#", "#.#", "#.#", ".#."},
	'Y': {"#.#", "#.#", ".#.", ".#.", ".#."}, '/': {"..#", "..#", ".#.", "#..", "#.."},
	'-': {"...", "...", "###", "...", "..."}, '(': {".#.", "#..", "#..", "#..", ".#."},
	')': {".#.", "..#", "..#", "..#", ".#."}, '.': {"...", "...", "...", "...", ".#."},
	'X': {"#.#", "#.#", ".#.", "#.#", "#.#"}, ':': {"...", ".#.", "...", ".#.", "..."},
	' ': {"...", "...", "...", "...", "..."},
}

// text draws s at (x, y) with pixels of size px.
func text(img *image.RGBA, x, y, px int, s string, c color.Color) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if !ok {
			g = glyphs[' ']
		}
		for row := range 5 {
			for col := range 3 {
				if g[row][col] == '#' {
					fill(img, x+col*px, y+row*px, px, px, c)
				}
			}
		}
		x += 4 * px
	}
}

func fill(img *image.RGBA, x, y, w, h int, c color.Color) {
	for i := x; i < x+w; i++ {
		for j := y; j < y+h; j++ {
			img.Set(i, j, c)
		}
	}
}

// writeBarChart draws one panel per group, side by side, each bar labelled
// with its value and configuration, and writes the PNG to name.
func writeBarChart(name string, groups []barGroup) error {
	const panelW, h, px = 460, 340, 3
	img := image.NewRGBA(image.Rect(0, 0, panelW*len(groups), h))
	fill(img, 0, 0, panelW*len(groups), h, color.White)
	ink := color.RGBA{40, 40, 40, 255}
	bar := color.RGBA{70, 110, 180, 255}
	for gi, g := range groups {
		x0 := gi * panelW
		text(img, x0+10, 10, 2, g.title, ink)
		var top float64
		for _, p := range g.points {
			top = max(top, p.rate)
		}
		base, height := h-40, h-100
		fill(img, x0+20, base, panelW-40, 2, ink)
		slot := (panelW - 40) / max(1, len(g.points))
		for i, p := range g.points {
			bh := 0
			if top > 0 {
				bh = int(p.rate / top * float64(height))
			}
			bx := x0 + 20 + i*slot + slot/5
			fill(img, bx, base-bh, slot*3/5, bh, bar)
			text(img, bx, base-bh-20, px, fmt.Sprintf("%.0f", p.rate), ink)
			text(img, bx, base+10, px, p.label, ink)
		}
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
