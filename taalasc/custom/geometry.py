"""Tile-level shapes of the two custom layers, as integer-nm rectangles ``[x0, y0, x1, y1]``.

Everything here is tile-relative (tile origin at its lower-left corner) and follows the
site layout in ``taalasc.config.base_array``. A rectangle of size S centred on C has its low
edge at ``C - floor_to_grid(S / 2)``, so every edge stays on the manufacturing grid even when
S / 2 is not; all sizes and centres in a valid base array are on the grid.

Hierarchy used by the writer: a tile's vias are grouped in *chunks* of up to ``CHUNK_SITES``
consecutive sites of one site row. A chunk cell holds the vias of one bit pattern (for 8 sites
there are only 256 patterns, shared by every tile of the die), and a tile cell is one strap
reference plus one chunk reference per chunk. This keeps GDS near 4 bytes per weight bit and
OASIS (deflate-compressed tile cells) near 0.4.
"""

from __future__ import annotations

import numpy as np

from taalasc.config.base_array import BaseArray, WeightTile

CHUNK_SITES = 8
# The nets of a site row's two straps, high strap first (strap_rects order): the base die's
# tie-high and tie-low rails (taalasc/base, taalasc/signoff name them the same).
STRAP_NETS = ("VPWR", "VGND")


def centred(centre_nm: int, size_nm: int, grid_nm: int) -> tuple[int, int]:
    """Low and high edge of an interval of ``size_nm`` centred (to the grid) on ``centre_nm``."""
    low = centre_nm - (size_nm // 2 // grid_nm) * grid_nm
    return low, low + size_nm


def strap_rects(tile: WeightTile, grid_nm: int) -> np.ndarray:
    """Both straps of every site row, running the tile's full width: shape [2*sites_y, 4]."""
    rows = []
    for j in range(tile.sites_y):
        for high in (True, False):
            y0, y1 = centred(tile.strap_y_nm(j, high), tile.strap_width_nm, grid_nm)
            rows.append((0, y0, tile.width_nm, y1))
    return np.array(rows, dtype=np.int64)


def strap_labels(tile: WeightTile, grid_nm: int) -> list[tuple[str, int, int]]:
    """A label per strap, in ``strap_rects`` order: (net, x, y) at the strap's centre on the
    grid, tile-relative."""
    def mid(a: int, b: int) -> int:
        return (a + b) // (2 * grid_nm) * grid_nm

    return [(STRAP_NETS[k % 2], mid(x0, x1), mid(y0, y1))
            for k, (x0, y0, x1, y1) in enumerate(strap_rects(tile, grid_nm).tolist())]


def tie_via_rects(tile: WeightTile, via_nm: int, grid_nm: int) -> np.ndarray:
    """The tie via of every strap, in ``strap_rects`` order: [2*sites_y, 4], tile-relative."""
    x0, x1 = centred(tile.tie_slot_x_nm, via_nm, grid_nm)
    rows = []
    for j in range(tile.sites_y):
        for high in (True, False):
            y0, y1 = centred(tile.strap_y_nm(j, high), via_nm, grid_nm)
            rows.append((x0, y0, x1, y1))
    return np.array(rows, dtype=np.int64)


def landing_rects(tile: WeightTile, via_nm: int, enclosure_nm: int, grid_nm: int) -> np.ndarray:
    """The base chip's landing shape of every bit site on the metal below the custom via:
    one rectangle under both slots of the site (high and low strap), enclosing each by
    ``enclosure_nm``. [sites, 4], tile-relative, site index j * sites_x + i. A via in either
    slot lands on it; the site's gate input is this shape's net."""
    out = np.empty((tile.sites, 4), dtype=np.int64)
    k = 0
    for j in range(tile.sites_y):
        ys = [centred(tile.strap_y_nm(j, h), via_nm, grid_nm) for h in (True, False)]
        y0, y1 = min(y for y, _ in ys) - enclosure_nm, max(y for _, y in ys) + enclosure_nm
        for i in range(tile.sites_x):
            x0, x1 = centred(tile.slot_x_nm(i), via_nm, grid_nm)
            out[k] = (x0 - enclosure_nm, y0, x1 + enclosure_nm, y1)
            k += 1
    return out


def tie_pad_rects(tile: WeightTile, via_nm: int, enclosure_nm: int, grid_nm: int) -> np.ndarray:
    """The base chip's pad under every tie via (``tie_via_rects`` order, high strap first in
    each row): VPWR under a high strap, VGND under a low one. [2*sites_y, 4]."""
    vias = tie_via_rects(tile, via_nm, grid_nm)
    return vias + np.array([-enclosure_nm, -enclosure_nm, enclosure_nm, enclosure_nm])


def chunk_via_rects(tile: WeightTile, via_nm: int, grid_nm: int, n: int, value: int) -> np.ndarray:
    """Vias of a chunk of ``n`` sites in site row 0, bit i of ``value`` for site i: [n, 4]."""
    rects = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        x0, x1 = centred(tile.slot_x_nm(i), via_nm, grid_nm)
        y0, y1 = centred(tile.strap_y_nm(0, bool((value >> i) & 1)), via_nm, grid_nm)
        rects[i] = (x0, y0, x1, y1)
    return rects


def tile_chunks(bits: np.ndarray, tile: WeightTile) -> list[tuple[int, int, int, int]]:
    """Split a tile's used-site bits into chunks: (site_column, site_row, n_sites, value).

    Site s sits at column s % sites_x, row s // sites_x; a partially used last row gives
    shorter chunks. Sorted by row, then column.
    """
    used = len(bits)
    out: list[tuple[int, int, int, int]] = []
    full_rows = used // tile.sites_x
    weights = (1 << np.arange(CHUNK_SITES, dtype=np.int64))
    per_row = -(-tile.sites_x // CHUNK_SITES)
    padded = np.zeros((full_rows + 1) * per_row * CHUNK_SITES, dtype=np.int64)
    # Lay bits out row by row, each row padded to a whole number of chunks.
    row_pad = per_row * CHUNK_SITES
    for j in range(full_rows + (1 if used % tile.sites_x else 0)):
        row_bits = bits[j * tile.sites_x:(j + 1) * tile.sites_x]
        padded[j * row_pad:j * row_pad + len(row_bits)] = row_bits
    values = (padded.reshape(-1, CHUNK_SITES) * weights).sum(axis=1)
    for j in range(full_rows + (1 if used % tile.sites_x else 0)):
        row_len = min(tile.sites_x, used - j * tile.sites_x)
        for c in range(per_row):
            start = c * CHUNK_SITES
            if start >= row_len:
                break
            n = min(CHUNK_SITES, row_len - start)
            out.append((start, j, n, int(values[j * per_row + c])))
    return out


def tile_origin(base: BaseArray, column: int, row: int) -> tuple[int, int]:
    return base.tile_grid.tile_origin_nm(column, row)
