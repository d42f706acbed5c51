"""A picture of a placement: every die side by side, tiles coloured by transformer stage.

Colours: one hue per stage (embedding, layer 0..N-1, head) along a golden-angle sequence so
neighbouring layers differ; tiles holding scales or vectors are the same hue, lighter;
unused tiles grey; dataflow links dark lines between tile centres (drawn when a tile is at
least 3 pixels on its short side). Row 0 of the tile grid is at the bottom, as on the die.
"""

from __future__ import annotations

import colorsys
from itertools import chain
from pathlib import Path

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.place.plan import Placement
from taalasc.png import write_png

Colour = tuple[int, int, int]
BACKGROUND: Colour = (255, 255, 255)
UNUSED: Colour = (190, 190, 190)
LINK: Colour = (30, 30, 30)
_MAX_W_PX, _MAX_H_PX, _DIE_GAP_PX = 1600, 1000, 6


def _hue(index: int, light: bool) -> Colour:
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.85)
    rgb = np.array([r, g, b])
    if light:
        rgb = 0.45 * rgb + 0.55  # halfway to white: same stage, constants
    return tuple(int(round(v * 255)) for v in rgb)  # type: ignore[return-value]


def _stages(placement: Placement) -> tuple[dict[str, int], list[str]]:
    """Stage index of every tensor and the stage labels (embedding, layer i, head)."""
    layers = sorted({la for _, la in placement.layers if la is not None})
    labels = ["embedding"] + [f"layer {la}" for la in layers] + ["head"]
    position = {la: i + 1 for i, la in enumerate(layers)}
    stage: dict[str, int] = {}
    seen_layer = False
    for name, la in placement.layers:
        if la is not None:
            seen_layer = True
            stage[name] = position[la]
        else:  # unlayered tensors before the first layer feed it; after it, they are the head
            stage[name] = len(labels) - 1 if seen_layer else 0
    return stage, labels


def _cell_px(base: BaseArray, dies: int) -> tuple[int, int]:
    grid = base.tile_grid
    short = min(grid.pitch_x_nm, grid.pitch_y_nm)
    ax, ay = grid.pitch_x_nm / short, grid.pitch_y_nm / short
    # Whole pixels per short pitch, so that cells keep the pitch ratio exactly when it is whole.
    unit = max(1, int(min((_MAX_W_PX / max(dies, 1)) / (grid.columns * ax),
                          _MAX_H_PX / (grid.rows * ay))))
    return max(1, round(unit * ax)), max(1, round(unit * ay))


# Line pixels are made for at most this many points at a time (bounded memory on huge models).
_LINE_CHUNK_POINTS = 1 << 21


def _rounded_points(lo: np.ndarray, hi: np.ndarray, steps: np.ndarray, i: np.ndarray,
                    which: np.ndarray, last: np.ndarray) -> np.ndarray:
    """One coordinate of every point, in linspace's float64 arithmetic, rounded to pixels."""
    v = i * ((hi - lo).astype(np.float64) / steps)[which] + lo.astype(np.float64)[which]
    v[last] = hi  # linspace sets the end point exactly
    return np.rint(v).astype(np.intp)


def _lines(img: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
           y1: np.ndarray) -> None:
    """Draw straight lines (x0, y0) -> (x1, y1) in LINK, all at once.

    Each line has max(|dx|, |dy|, 1) + 1 points, rounded to the pixel as
    ``np.rint(np.linspace(x0, x1, steps + 1))`` would round them: point i is
    ``i * ((x1 - x0) / steps) + x0`` in float64 and the last point is exactly the end, so the
    pixels are the same as drawing the lines one by one with linspace.
    """
    steps = np.maximum(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0)), 1)
    counts = steps + 1
    ends = np.cumsum(counts)
    first = 0
    while first < len(steps):
        # Whole lines per chunk, at least one, about _LINE_CHUNK_POINTS points.
        done = int(ends[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(ends, done + _LINE_CHUNK_POINTS, side="right")))
        sl = slice(first, last)
        n = counts[sl]
        which = np.repeat(np.arange(len(n)), n)
        starts = np.cumsum(n) - n
        i = (np.arange(int(n.sum())) - np.repeat(starts, n)).astype(np.float64)
        xs = _rounded_points(x0[sl], x1[sl], steps[sl], i, which, starts + n - 1)
        ys = _rounded_points(y0[sl], y1[sl], steps[sl], i, which, starts + n - 1)
        img[ys, xs] = LINK
        first = last


def overview_image(placement: Placement, base: BaseArray) -> tuple[np.ndarray, list[tuple[Colour, str]]]:
    """The overview as an RGB uint8 array and its legend [(colour, label), ...]."""
    grid = base.tile_grid
    dies = max(placement.dies, 1)
    cw, ch = _cell_px(base, dies)
    die_w, die_h = grid.columns * cw, grid.rows * ch
    width = dies * die_w + (dies - 1) * _DIE_GAP_PX
    gap = 1 if min(cw, ch) >= 4 else 0  # a 1 px seam between tiles when they are big enough
    stage, labels = _stages(placement)
    # Colour code of every tile: 0 unused, 1 background, 2 + 2 * stage + light (vectorised:
    # models with 10^5 tiles made a Python loop over tiles the slow part).
    tiles = placement.assignments
    codes = np.fromiter((2 + 2 * stage.get(seg.tensor, 0) + (seg.kind != "codes")
                         for _, seg in tiles), dtype=np.int64, count=len(tiles))
    die, col, row = np.fromiter(chain.from_iterable((s.die, s.column, s.row) for s, _ in tiles),
                                dtype=np.int64, count=3 * len(tiles)).reshape(-1, 3).T
    used = {(int(c - 2) // 2, bool((c - 2) % 2)) for c in np.unique(codes)}
    lut = np.zeros((2 + 2 * len(labels), 3), dtype=np.uint8)
    lut[0], lut[1] = UNUSED, BACKGROUND
    for index, light in used:
        lut[2 + 2 * index + light] = _hue(index, light)
    # Cells of all dies side by side, row 0 at the bottom; one extra column for the die gap.
    cells = np.zeros((grid.rows, dies * grid.columns + 1), dtype=np.int64)
    cells[:, -1] = 1
    inside = ((die >= 0) & (die < dies) & (col >= 0) & (col < grid.columns)
              & (row >= 0) & (row < grid.rows))
    cells[grid.rows - 1 - row[inside], die[inside] * grid.columns + col[inside]] = codes[inside]
    py = np.arange(die_h)
    px = np.arange(width)
    within = px % (die_w + _DIE_GAP_PX)
    in_die = within < die_w
    cell_col = np.where(in_die, (px // (die_w + _DIE_GAP_PX)) * grid.columns + within // cw,
                        dies * grid.columns)
    img = lut[cells[(py // ch)[:, None], cell_col[None, :]]]
    if gap:
        img[py % ch == ch - 1] = BACKGROUND
        img[:, in_die & (within % cw == cw - 1)] = BACKGROUND
    if min(cw, ch) >= 3 and placement.links:
        ends = np.fromiter(chain.from_iterable((a.die, a.column, a.row, b.die, b.column, b.row)
                                               for a, b in placement.links),
                           dtype=np.int64, count=6 * len(placement.links)).reshape(-1, 6)

        def centre(d: np.ndarray, c: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (d * (die_w + _DIE_GAP_PX) + c * cw + cw // 2,
                    (grid.rows - 1 - r) * ch + ch // 2)

        (xa, ya), (xb, yb) = centre(*ends[:, :3].T), centre(*ends[:, 3:].T)
        _lines(img, xa, ya, xb, yb)
    legend: list[tuple[Colour, str]] = []
    for index, label in enumerate(labels):
        for light, what in ((False, "weight codes"), (True, "scales and vectors")):
            if (index, light) in used:
                legend.append((_hue(index, light), f"{label}: {what}"))
    legend.append((UNUSED, "unused tile"))
    if min(cw, ch) >= 3 and placement.links:
        legend.append((LINK, "dataflow link (same die)"))
    return img, legend


def overview_png(placement: Placement, base: BaseArray, path: str | Path) -> list[tuple[Colour, str]]:
    """Write the overview PNG to ``path``; return its legend [(rgb, label), ...]."""
    img, legend = overview_image(placement, base)
    write_png(path, img)
    return legend
