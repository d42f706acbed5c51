"""Raster drawing for taalasc's PNG pictures: text, boxes, legends, axes and colour bars.

Why not a plotting library: ``overview.png`` and the die maps are compile outputs that
``verify`` rebuilds and compares byte for byte, on whatever machine it runs. A rasteriser
with anti-aliased text (matplotlib, FreeType) changes pixels between its releases and its
font files; integer drawing into a numpy array with a bitmap font (taalasc/font6x13.py, the
X11 misc-fixed 6x13, public domain) and zlib gives the same bytes everywhere, and costs no
dependency and no import time on every compile.

Coordinates are pixels, x to the right and y down from the top-left corner; every function
clips to the image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from taalasc import font6x13

Colour = tuple[int, int, int]
WHITE: Colour = (255, 255, 255)
INK: Colour = (25, 25, 25)
MUTED: Colour = (95, 95, 95)     # secondary text: subtitles, units, tick labels
RULE: Colour = (215, 215, 215)   # grid lines
CHAR_W, CHAR_H = font6x13.WIDTH, font6x13.HEIGHT
LINE_H = CHAR_H + 3              # text line pitch


@lru_cache(maxsize=2)
def _glyphs(bold: bool) -> dict[str, np.ndarray]:
    table = font6x13.BOLD if bold else font6x13.REGULAR
    bits = np.arange(7, 1, -1)  # the 6 high bits of each row byte, left to right
    return {ch: (np.frombuffer(bytes.fromhex(rows), np.uint8)[:, None] >> bits & 1).astype(bool)
            for ch, rows in table.items()}


def text_width(text: str, scale: int = 1) -> int:
    return len(text) * CHAR_W * scale


def text_mask(text: str, scale: int = 1, bold: bool = False) -> np.ndarray:
    """The ink of ``text`` as a bool array [13·scale, 6·len·scale]; unknown characters are
    drawn as '?'."""
    glyphs = _glyphs(bold)
    if not text:
        return np.zeros((CHAR_H * scale, 0), bool)
    mask = np.hstack([glyphs.get(ch, glyphs["?"]) for ch in text])
    return mask.repeat(scale, 0).repeat(scale, 1) if scale > 1 else mask


def draw_text(img: np.ndarray, x: int, y: int, text: str, color: Colour = INK, scale: int = 1,
              bold: bool = False) -> int:
    """Draw ``text`` with its top-left corner at (x, y); returns the x just after it."""
    mask = text_mask(text, scale, bold)
    h, w = mask.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = color
    return x + w


def fit_text(text: str, width_px: int) -> str:
    """``text`` cut to ``width_px`` with an ellipsis when it is wider."""
    room = width_px // CHAR_W
    return text if len(text) <= room else text[:max(room - 1, 0)] + "…" if room > 0 else ""


def wrap(text: str, width_px: int) -> list[str]:
    """Words of ``text`` in lines at most ``width_px`` wide (a longer word is cut)."""
    room = max(1, width_px // CHAR_W)
    lines: list[str] = []
    line = ""
    for word in text.split():
        while len(word) > room:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:room])
            word = word[room:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= room:
            line += " " + word
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def fill(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Colour) -> None:
    """Fill the box [x0, x1) × [y0, y1)."""
    img[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = color


def frame(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Colour = INK) -> None:
    """A one-pixel outline just inside the box [x0, x1) × [y0, y1)."""
    fill(img, x0, y0, x1, y0 + 1, color)
    fill(img, x0, y1 - 1, x1, y1, color)
    fill(img, x0, y0, x0 + 1, y1, color)
    fill(img, x1 - 1, y0, x1, y1, color)


def readable_on(background: Colour) -> Colour:
    """Black or white text, whichever reads on ``background`` (by its luma)."""
    r, g, b = background
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 140 else WHITE


# --- legends ------------------------------------------------------------------------------

SWATCH = 11


def legend_layout(items: list[tuple[Colour, str]], width_px: int) -> tuple[int, int, int]:
    """(columns, rows, column width) of a legend of ``items`` in ``width_px``."""
    if not items:
        return 1, 0, width_px
    col_w = SWATCH + 6 + max(text_width(label) for _, label in items) + 18
    columns = max(1, min(len(items), width_px // col_w))
    rows = math.ceil(len(items) / columns)
    return columns, rows, min(col_w, width_px)


def legend_height(items: list[tuple[Colour, str]], width_px: int) -> int:
    return legend_layout(items, width_px)[1] * LINE_H


def draw_legend(img: np.ndarray, x: int, y: int, items: list[tuple[Colour, str]],
                width_px: int) -> int:
    """Swatch and label of each item, filled column by column; returns the y below it."""
    columns, rows, col_w = legend_layout(items, width_px)
    for i, (colour, label) in enumerate(items):
        cx, cy = x + (i // rows) * col_w, y + (i % rows) * LINE_H
        fill(img, cx, cy + 1, cx + SWATCH, cy + 1 + SWATCH, colour)
        frame(img, cx, cy + 1, cx + SWATCH, cy + 1 + SWATCH, MUTED)
        draw_text(img, cx + SWATCH + 6, cy, fit_text(label, col_w - SWATCH - 12))
    return y + rows * LINE_H


# --- numbers on axes ------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi], at most ``most``+1."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(most, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    count = int(math.ceil((hi - first) / step - 1e-9))
    return [round(first + i * step, 12) for i in range(count + 1)]


def number(v: float) -> str:
    """A short tick or bar label: 1.2k, 35M, 0.25, 6.05e-4."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    if abs(v) < 0.01:  # 6.05e-4, not 0.000605
        mantissa, exponent = f"{v:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{v:.3g}"


def colour_bar(img: np.ndarray, x: int, y: int, width: int, height: int,
               colours: np.ndarray, ticks: list[tuple[float, str]], title: str) -> int:
    """A horizontal colour scale: ``title`` above, the ramp ``colours`` [n, 3] stretched to
    ``width``, tick marks and labels below at (fraction 0..1, label). Returns the y below."""
    draw_text(img, x, y, title)
    top = y + LINE_H
    ramp = np.asarray(colours, np.uint8)
    index = np.minimum((np.arange(width) * len(ramp)) // width, len(ramp) - 1)
    img[top:top + height, x:x + width] = ramp[index][None, :, :]
    frame(img, x - 1, top - 1, x + width + 1, top + height + 1, MUTED)
    for fraction, label in ticks:
        tx = x + int(round(fraction * (width - 1)))
        fill(img, tx, top + height + 1, tx + 1, top + height + 5, INK)
        lx = min(max(tx - text_width(label) // 2, x - 10), x + width + 10 - text_width(label))
        draw_text(img, lx, top + height + 6, label, MUTED)
    return top + height + 6 + LINE_H
