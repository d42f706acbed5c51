"""Tile-level shapes of the two custom layers, as integer-nm rectangles ``[x0, y0, x1, y1]``.

Everything here is tile-relative (tile origin at its lower-left corner) and follows the
site layout in ``taalasc.config.base_array``. A rectangle of size S centred on C has its low
edge at ``C - floor_to_grid(S / 2)``, so every edge stays on the manufacturing grid even when
S / 2 is not; all sizes and centres in a valid base array are on the grid.

Hierarchy used by the writer: a tile's vias are grouped in *chunks* of up to
``WeightTile.chunk_sites`` consecutive sites of one site row. A chunk cell holds the vias of
one digit pattern (8 bits of digits: at most 256 patterns, shared by every tile of the die),
and a tile cell is one strap reference plus one chunk reference per chunk. This keeps GDS near
5 bytes per weight bit and OASIS (deflate-compressed tile cells) near 0.4.

A "strap" is one custom-metal line running a site row: two per row for tie-high-low
(tie-high, tie-low), one for zero-skip, 2^s for select, three for ternary
(``WeightTile.lines_per_site``; which digit goes on which line: ``WeightTile.line_of_value``).
"""

from __future__ import annotations

import numpy as np

from taalasc.config.base_array import BaseArray, WeightTile

def centred(centre_nm: int, size_nm: int, grid_nm: int) -> tuple[int, int]:
    """Low and high edge of an interval of ``size_nm`` centred (to the grid) on ``centre_nm``."""
    low = centre_nm - (size_nm // 2 // grid_nm) * grid_nm
    return low, low + size_nm


def strap_rects(tile: WeightTile, grid_nm: int) -> np.ndarray:
    """Every line (strap) of every site row, running the tile's full width, line 0 first in
    each row: shape [lines_per_site * sites_y, 4]."""
    rows = []
    for j in range(tile.sites_y):
        for line in range(tile.lines_per_site):
            y0, y1 = centred(tile.line_y_nm(j, line), tile.strap_width_nm, grid_nm)
            rows.append((0, y0, tile.width_nm, y1))
    return np.array(rows, dtype=np.int64)


def strap_labels(tile: WeightTile, grid_nm: int) -> list[tuple[str, int, int]]:
    """A label per strap, in ``strap_rects`` order: (net, x, y) at the strap's centre on the
    grid, tile-relative; nets from ``WeightTile.line_nets``."""
    def mid(a: int, b: int) -> int:
        return (a + b) // (2 * grid_nm) * grid_nm

    nets = tile.line_nets
    return [(nets[k % len(nets)], mid(x0, x1), mid(y0, y1))
            for k, (x0, y0, x1, y1) in enumerate(strap_rects(tile, grid_nm).tolist())]


def tie_via_rects(tile: WeightTile, via_nm: int, grid_nm: int) -> np.ndarray:
    """The tie via of every strap, in ``strap_rects`` order: [lines * sites_y, 4], tile-relative.
    It connects the strap to its net in the base (a supply rail, or a product-bank port)."""
    x0, x1 = centred(tile.tie_slot_x_nm, via_nm, grid_nm)
    rows = []
    for j in range(tile.sites_y):
        for line in range(tile.lines_per_site):
            y0, y1 = centred(tile.line_y_nm(j, line), via_nm, grid_nm)
            rows.append((x0, y0, x1, y1))
    return np.array(rows, dtype=np.int64)


def landing_rects(tile: WeightTile, via_nm: int, enclosure_nm: int, grid_nm: int) -> np.ndarray:
    """The base chip's landing shape of every bit site on the metal below the custom via:
    one rectangle under every slot of the site (one per line), enclosing each by
    ``enclosure_nm``. [sites, 4], tile-relative, site index j * sites_x + i. A via in any
    slot lands on it; the site's input is this shape's net."""
    out = np.empty((tile.sites, 4), dtype=np.int64)
    lines = tile.lines_per_site
    k = 0
    for j in range(tile.sites_y):
        ys = [centred(tile.line_y_nm(j, line), via_nm, grid_nm) for line in range(lines)]
        y0, y1 = min(y for y, _ in ys) - enclosure_nm, max(y for _, y in ys) + enclosure_nm
        for i in range(tile.sites_x):
            x0, x1 = centred(tile.slot_x_nm(i), via_nm, grid_nm)
            out[k] = (x0 - enclosure_nm, y0, x1 + enclosure_nm, y1)
            k += 1
    return out


def tie_pad_rects(tile: WeightTile, via_nm: int, enclosure_nm: int, grid_nm: int) -> np.ndarray:
    """The base chip's pad under every tie via (``tie_via_rects`` order, line 0 first in each
    row), on the net of its line (``WeightTile.line_nets``). [lines * sites_y, 4]."""
    vias = tie_via_rects(tile, via_nm, grid_nm)
    return vias + np.array([-enclosure_nm, -enclosure_nm, enclosure_nm, enclosure_nm])


def chunk_digits(value: int, n: int, site_bits: int) -> list[int]:
    """The n digits of a chunk value, site 0 first: digit i is bits i*d .. i*d + d - 1."""
    mask = (1 << site_bits) - 1
    return [(value >> (site_bits * i)) & mask for i in range(n)]


def chunk_via_rects(tile: WeightTile, via_nm: int, grid_nm: int, n: int, value: int) -> np.ndarray:
    """Vias of a chunk of ``n`` sites in site row 0, digit i of ``value`` for site i, on the
    line ``line_of_value`` gives (none for a digit without a via): [k <= n, 4]."""
    table = tile.line_of_value
    rects = []
    for i, digit in enumerate(chunk_digits(value, n, tile.site_bits)):
        line = table[digit]
        if line == -2:
            raise ValueError(f"digit {digit} cannot be stored by encoding {tile.encoding!r}")
        if line < 0:
            continue
        x0, x1 = centred(tile.slot_x_nm(i), via_nm, grid_nm)
        y0, y1 = centred(tile.line_y_nm(0, line), via_nm, grid_nm)
        rects.append((x0, y0, x1, y1))
    return np.array(rects, dtype=np.int64).reshape(-1, 4)


def tile_origin(base: BaseArray, column: int, row: int) -> tuple[int, int]:
    return base.tile_grid.tile_origin_nm(column, row)
