"""Top-metal density: exact window densities over rectangles, and the fill that fixes them.

Density windows are ``density_window_um`` squares stepped by ``density_step_um`` from the die's
lower-left corner, plus one window flush with the right / top die edge when the steps do not
land on it (a die smaller than the window is one window, the die itself).

Exactness: with A(X, Y) the metal area inside [0, X] x [0, Y], a window's area is four
look-ups of A. For disjoint rectangles A is separable per rectangle,
A(X, Y) = sum_r clip(X - x0_r, 0, w_r) * clip(Y - y0_r, 0, h_r), i.e. one matrix product.
Values are integers in grid units squared and stay below 2**53, so float64 is exact.
Rectangles must not overlap (the writer's never do: straps, fill and routes are spaced, and
a route's own overlapping corner pieces are counted once by ``route_area_rects``).

Fill (drawn on the PDK's top-metal fill datatype, see writer.py; nothing in keep-outs):
* unused tiles and the die margin get arrays of ``f x f`` squares at pitch ``f + space``,
  ``f`` chosen so the pattern density is the middle of the allowed range;
* the channel strips beside and above every tile (less the port rows / columns in their
  middle) get one long bar per free interval: the channel less its routes grown by the
  spacing rule.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from taalasc.config.base_array import BaseArray


@dataclass(frozen=True)
class FillArray:
    """``columns x rows`` squares of side ``size_nm`` at ``pitch_nm``, lower-left at x, y."""
    x_nm: int
    y_nm: int
    columns: int
    rows: int
    size_nm: int
    pitch_nm: int

    def rects(self) -> np.ndarray:
        i = np.arange(self.columns, dtype=np.int64) * self.pitch_nm + self.x_nm
        j = np.arange(self.rows, dtype=np.int64) * self.pitch_nm + self.y_nm
        xx, yy = np.meshgrid(i, j, indexing="ij")
        x0, y0 = xx.ravel(), yy.ravel()
        return np.stack([x0, y0, x0 + self.size_nm, y0 + self.size_nm], axis=1)


def _window_starts(extent_nm: int, window_nm: int, step_nm: int) -> tuple[np.ndarray, int]:
    if extent_nm <= window_nm:
        return np.array([0], dtype=np.int64), extent_nm
    starts = list(range(0, extent_nm - window_nm + 1, step_nm))
    if starts[-1] != extent_nm - window_nm:
        starts.append(extent_nm - window_nm)
    return np.array(starts, dtype=np.int64), window_nm


# A window mostly over keep-outs (a die corner: seal ring and pad ring on two sides) is judged
# by the base die's own metal there, which the custom layers cannot see; the sliver left to
# them (a few um between the frame and the grid's channels, much of it the fill's clearance)
# says nothing about the window. Such windows are not ours to measure.
MIN_OWNED_FRACTION = 0.25


def window_density_pct(rects: np.ndarray, die_nm: tuple[int, int], window_nm: int, step_nm: int,
                       grid_nm: int, exclude=()) -> np.ndarray:
    """Metal density (percent) of every window: array [n_x_windows, n_y_windows].

    ``rects`` is one [n, 4] array or an iterable of them (streamed: memory stays bounded).
    ``exclude``: disjoint rectangles (keep-outs) whose area is not the custom layers' to fill:
    a window's density is its metal over its area outside them, NaN when less than
    ``MIN_OWNED_FRACTION`` of the window is left.
    """
    xs, wx = _window_starts(die_nm[0], window_nm, step_nm)
    ys, wy = _window_starts(die_nm[1], window_nm, step_nm)
    X = np.unique(np.concatenate([xs, xs + wx])) // grid_nm
    Y = np.unique(np.concatenate([ys, ys + wy])) // grid_nm
    metal = _window_areas(rects, X, Y, xs, ys, wx, wy, grid_nm)
    owned = wx / grid_nm * wy / grid_nm
    if len(exclude):
        owned = owned - _window_areas(np.asarray(exclude, np.int64).reshape(-1, 4), X, Y, xs,
                                      ys, wx, wy, grid_nm)
        owned = np.where(owned >= MIN_OWNED_FRACTION * wx / grid_nm * wy / grid_nm, owned, np.nan)
    return 100.0 * metal / owned


def _window_areas(rects, X, Y, xs, ys, wx, wy, grid_nm: int) -> np.ndarray:
    """Area of ``rects`` (disjoint) inside every window, grid units squared."""
    parts = [rects] if isinstance(rects, np.ndarray) else rects
    H = np.zeros((len(X) + 1) * (len(Y) + 1))
    pending: list[np.ndarray] = []
    size = 0
    for part in itertools.chain(parts, [None]):  # gather small parts (one route each) into batches
        if part is not None:
            part = np.asarray(part, dtype=np.int64).reshape(-1, 4)
            pending.append(part)
            size += len(part)
        if pending and (part is None or size >= 1 << 15):
            H += _cell_areas(np.concatenate(pending) // grid_nm, X, Y)
            pending, size = [], 0
    # A[i, j] = metal inside [0, X[i]] x [0, Y[j]]: the 2-D running sum of the cell areas.
    A = np.cumsum(np.cumsum(H.reshape(len(X) + 1, len(Y) + 1), axis=0), axis=1)[:-1, :-1]
    ix0, ix1 = np.searchsorted(X, xs / grid_nm), np.searchsorted(X, (xs + wx) / grid_nm)
    iy0, iy1 = np.searchsorted(Y, ys / grid_nm), np.searchsorted(Y, (ys + wy) / grid_nm)
    return (A[np.ix_(ix1, iy1)] - A[np.ix_(ix0, iy1)] - A[np.ix_(ix1, iy0)]
            + A[np.ix_(ix0, iy0)])


def _cell_areas(r: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Metal area of the rectangles in every cell of the X / Y lines (flat, grid units).

    Every rectangle is cut at the X and Y lines into pieces that each lie in one cell and the
    piece areas are summed per cell (bincount; exact: integers < 2**53). Cell (i, j) spans
    X[i-1]..X[i] (X[-1] = -inf). Linear in the pieces and no BLAS (whose threads spin on a
    busy machine).
    """
    nx, ny = len(X), len(Y)
    out = np.zeros((nx + 1) * (ny + 1))
    Xe = np.concatenate([[np.iinfo(np.int64).min // 2], X, [np.iinfo(np.int64).max // 2]])
    Ye = np.concatenate([[np.iinfo(np.int64).min // 2], Y, [np.iinfo(np.int64).max // 2]])
    for start in range(0, len(r), 1 << 16):  # bounded memory for big rectangle sets
        x0, y0, x1, y1 = r[start:start + (1 << 16)].T
        kx0, kx1 = np.searchsorted(X, x0, "right"), np.searchsorted(X, x1, "left")
        ky0, ky1 = np.searchsorted(Y, y0, "right"), np.searchsorted(Y, y1, "left")
        npx, npy = kx1 - kx0 + 1, ky1 - ky0 + 1
        count = npx * npy
        idx = np.repeat(np.arange(len(x0)), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        kx = kx0[idx] + k // npy[idx]
        ky = ky0[idx] + k % npy[idx]
        w = np.minimum(x1[idx], Xe[kx + 1]) - np.maximum(x0[idx], Xe[kx])
        h = np.minimum(y1[idx], Ye[ky + 1]) - np.maximum(y0[idx], Ye[ky])
        out += np.bincount(kx * (ny + 1) + ky, weights=(w * h).astype(np.float64),
                           minlength=(nx + 1) * (ny + 1))
    return out


def route_area_rects(wires: np.ndarray) -> np.ndarray:
    """A route's wire rectangles made disjoint (a later piece loses what earlier ones cover).

    Consecutive pieces of one route overlap in a ``w x w`` corner square; trimming the later
    piece's end that lies inside the earlier one is enough for the L-shaped joins we draw.
    """
    out = []
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(wires).tolist()):
        for px0, py0, px1, py1 in out:
            if px0 < x1 and x0 < px1 and py0 < y1 and y0 < py1:
                if px0 <= x0 and x1 <= px1:      # same x span: trim in y
                    y0, y1 = (max(y0, py1), y1) if y0 >= py0 else (y0, min(y1, py0))
                elif py0 <= y0 and y1 <= py1:    # same y span: trim in x
                    x0, x1 = (max(x0, px1), x1) if x0 >= px0 else (x0, min(x1, px0))
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def fill_square_nm(base: BaseArray) -> int:
    """Side of the fill square whose pattern density (at the fill spacing) is mid-range, on
    grid, within the fill's width limits, >= the metal width and area."""
    rules, g = base.pdk.rules, base.pdk.grid_nm
    target = (rules.top_metal_density_min_pct + rules.top_metal_density_max_pct) / 200.0
    root = math.sqrt(target)
    side = rules.fill_space * root / (1 - root)
    min_area_side = math.sqrt(rules.top_metal_min_area_um2) * 1000
    side = max(side, rules.top_metal_width_nm, min_area_side, rules.fill_width_min_nm or 0)
    side = int(math.ceil(side / g)) * g
    if rules.fill_width_max_nm:
        side = min(side, rules.fill_width_max_nm // g * g)
    return side


def array_in(x0: int, y0: int, x1: int, y1: int, size: int, pitch: int, grid: int) -> FillArray | None:
    """The largest square array inside [x0, x1] x [y0, y1], centred to the grid."""
    cols = (x1 - x0 + pitch - size) // pitch
    rows = (y1 - y0 + pitch - size) // pitch
    if cols <= 0 or rows <= 0:
        return None
    span_x, span_y = cols * pitch - (pitch - size), rows * pitch - (pitch - size)
    ox = x0 + ((x1 - x0 - span_x) // 2 // grid) * grid
    oy = y0 + ((y1 - y0 - span_y) // 2 // grid) * grid
    return FillArray(ox, oy, cols, rows, size, pitch)


def free_intervals(lo: int, hi: int, blocked: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi] less the blocked intervals (each already grown by the spacing rule)."""
    out, cur = [], lo
    for b0, b1 in sorted(blocked):
        if b0 > cur:
            out.append((cur, min(b0, hi)))
        cur = max(cur, b1)
        if cur >= hi:
            break
    if cur < hi:
        out.append((cur, hi))
    return [(a, b) for a, b in out if b > a]


def subtract(rect: tuple[int, int, int, int], holes: list[tuple[int, int, int, int]]
             ) -> list[tuple[int, int, int, int]]:
    """``rect`` less every hole, as disjoint rectangles (bands below and above a hole, then
    the pieces left and right of it); empty pieces dropped."""
    pieces = [rect] if rect[2] > rect[0] and rect[3] > rect[1] else []
    for h0, k0, h1, k1 in holes:
        out = []
        for x0, y0, x1, y1 in pieces:
            if h0 >= x1 or h1 <= x0 or k0 >= y1 or k1 <= y0:
                out.append((x0, y0, x1, y1))
                continue
            out += [(x0, y0, x1, k0), (x0, k1, x1, y1),
                    (x0, max(y0, k0), h0, min(y1, k1)), (h1, max(y0, k0), x1, min(y1, k1))]
        pieces = [p for p in out if p[2] > p[0] and p[3] > p[1]]
    return pieces


def keep_out_area_rects(base: BaseArray) -> list[tuple[int, int, int, int]]:
    """The area that is not the custom layers' to fill, as disjoint rectangles: every
    keep-out grown by the fill's clearance to metal (fill must stay that far from the base
    chip's own metal there), clipped to the die."""
    s, W, H = base.pdk.rules.fill_clearance, base.die.width_nm, base.die.height_nm
    out: list[tuple[int, int, int, int]] = []
    for a, b, c, d in base.keep_out_rects_nm:
        grown = (max(a - s, 0), max(b - s, 0), min(c + s, W), min(d + s, H))
        out += subtract(grown, out)
    return out


def plan_fill(base: BaseArray, used: set[tuple[int, int]], router, route_wires: np.ndarray,
              die_nm: tuple[int, int]) -> tuple[list[FillArray], np.ndarray]:
    """Fill for one die: square arrays (unused tiles, margin) and channel bars [n, 4].

    Two spacings: ``c``, fill to drawn metal (tiles, routes, the keep-outs' own metal), and
    ``f``, fill to fill; both the drawn metal's spacing unless the PDK rules its fill apart.
    A PDK that caps a fill shape's extent (IHP TM2Fil.a1) gets square arrays in the channels
    instead of long bars.
    """
    rules, g, grid, tile = base.pdk.rules, base.pdk.grid_nm, base.tile_grid, base.weight_tile
    c, f, W, H = rules.fill_clearance, rules.fill_space, tile.width_nm, tile.height_nm
    size = fill_square_nm(base)
    pitch = size + f
    arrays: list[FillArray] = []
    # An unused tile's box: routes run top_metal_space from it, fill must keep c from them.
    d = max(c - rules.top_metal_space_nm, 0)
    for col in range(grid.columns):
        for r in range(grid.rows):
            if (col, r) not in used:
                ox, oy = grid.tile_origin_nm(col, r)
                arrays.append(array_in(ox + d, oy + d, ox + W - d, oy + H - d, size, pitch, g))
    bx0 = min([grid.origin_nm[0]] + [x0 for x0, _ in router.vchannels.values()]) - c
    by0 = min([grid.origin_nm[1]] + [y0 for y0, _ in router.hchannels.values()]) - c
    bx1 = grid.origin_nm[0] + grid.columns * grid.pitch_x_nm + c
    by1 = grid.origin_nm[1] + grid.rows * grid.pitch_y_nm + c
    dw, dh = die_nm
    # The margin around the grid, less the keep-outs (seal ring, pad ring, ...) grown by the
    # clearance: the base chip has top metal of its own there.
    holes = keep_out_area_rects(base)
    for margin in ((c, c, dw - c, by0), (c, by1, dw - c, dh - c),
                   (c, by0 + f, bx0, by1 - f), (bx1, by0 + f, dw - c, by1 - f)):
        for x0, y0, x1, y1 in subtract(margin, holes):
            arrays.append(array_in(x0, y0, x1, y1, size, pitch, g))

    wires = np.asarray(route_wires, dtype=np.int64).reshape(-1, 4)
    min_area_nm2 = rules.top_metal_min_area_um2 * 1e6
    min_width = max(rules.top_metal_width_nm, rules.fill_width_min_nm or 0)
    bars: list[tuple[int, int, int, int]] = []

    def near(lo, hi, axis):
        """The wires within clearance of the band [lo, hi] along ``axis`` (0: x, 1: y)."""
        return wires[(wires[:, axis] < hi + c) & (wires[:, axis + 2] > lo - c)]

    def blocked(group, x0, y0, x1, y1, axis):
        hit = group[(group[:, 0] < x1 + c) & (group[:, 2] > x0 - c)
                    & (group[:, 1] < y1 + c) & (group[:, 3] > y0 - c)]
        return [(int(a) - c, int(b) + c) for a, b in zip(hit[:, axis], hit[:, axis + 2])]

    def keep(x0, y0, x1, y1):
        if rules.fill_width_max_nm and max(x1 - x0, y1 - y0) > rules.fill_width_max_nm:
            arrays.append(array_in(x0, y0, x1, y1, size, pitch, g))
        elif min(x1 - x0, y1 - y0) >= min_width and (x1 - x0) * (y1 - y0) >= min_area_nm2:
            bars.append((x0, y0, x1, y1))

    for col, (cx0, cx1) in sorted(router.vchannels.items()):
        group = near(cx0, cx1, 0)  # only this channel's wires: linear, not wires x channels
        for r in range(grid.rows):
            oy = grid.tile_origin_nm(0, r)[1]
            b_y, a_y = router.port_y[r]
            for y0, y1 in ((oy, b_y - c), (a_y + router.w + c, oy + H)):
                for a, b in free_intervals(cx0 + c, cx1 - c, blocked(group, cx0, y0, cx1, y1, 0)):
                    keep(a, y0, b, y1)
    for r, (hy0, hy1) in sorted(router.hchannels.items()):
        group = near(hy0, hy1, 1)
        for col in range(grid.columns):
            ox = grid.tile_origin_nm(col, 0)[0]
            b_x, a_x = router.port_x[col]
            for x0, x1 in ((ox, b_x - c), (a_x + router.w + c, ox + W)):
                for a, b in free_intervals(hy0 + c, hy1 - c, blocked(group, x0, hy0, x1, hy1, 1)):
                    keep(x0, a, x1, b)
    arrays = [a for a in arrays if a is not None]
    return arrays, np.array(bars, dtype=np.int64).reshape(-1, 4)
