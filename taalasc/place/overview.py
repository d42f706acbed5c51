"""A picture of a placement: every die side by side, tiles coloured by transformer stage.

Colours: one hue per stage (embedding, layer 0..N-1, head) along a golden-angle sequence so
neighbouring layers differ; tiles holding scales or vectors are the same hue, lighter;
unused tiles grey; dataflow links dark lines between tile centres (drawn when a tile is at
least 3 pixels on its short side). Row 0 of the tile grid is at the bottom, as on the die.
"""

from __future__ import annotations

import colorsys
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


def _line(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    steps = max(abs(x1 - x0), abs(y1 - y0), 1)
    xs = np.rint(np.linspace(x0, x1, steps + 1)).astype(int)
    ys = np.rint(np.linspace(y0, y1, steps + 1)).astype(int)
    img[ys, xs] = LINK


def overview_image(placement: Placement, base: BaseArray) -> tuple[np.ndarray, list[tuple[Colour, str]]]:
    """The overview as an RGB uint8 array and its legend [(colour, label), ...]."""
    grid = base.tile_grid
    dies = max(placement.dies, 1)
    cw, ch = _cell_px(base, dies)
    die_w, die_h = grid.columns * cw, grid.rows * ch
    width = dies * die_w + (dies - 1) * _DIE_GAP_PX
    img = np.full((die_h, width, 3), BACKGROUND, dtype=np.uint8)
    gap = 1 if min(cw, ch) >= 4 else 0  # a 1 px seam between tiles when they are big enough

    def box(die: int, column: int, row: int) -> tuple[int, int]:
        return die * (die_w + _DIE_GAP_PX) + column * cw, (grid.rows - 1 - row) * ch

    for die in range(dies):
        x0, _ = box(die, 0, grid.rows - 1)
        img[:, x0:x0 + die_w] = UNUSED
        if gap:
            img[:, x0:x0 + die_w][np.arange(die_h) % ch == ch - 1] = BACKGROUND
            img[:, x0:x0 + die_w][:, np.arange(die_w) % cw == cw - 1] = BACKGROUND
    stage, labels = _stages(placement)
    used: set[tuple[int, bool]] = set()
    for slot, seg in placement.assignments:
        light = seg.kind != "codes"
        index = stage.get(seg.tensor, 0)
        used.add((index, light))
        x, y = box(slot.die, slot.column, slot.row)
        img[y:y + ch - gap, x:x + cw - gap] = _hue(index, light)
    if min(cw, ch) >= 3:
        for a, b in placement.links:
            (xa, ya), (xb, yb) = box(a.die, a.column, a.row), box(b.die, b.column, b.row)
            _line(img, xa + cw // 2, ya + ch // 2, xb + cw // 2, yb + ch // 2)
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
