"""Flattening a GdsLibrary (formats/gdsread.py) without holding the flat die.

The top cell is expanded lazily, in pieces of about ``batch`` shapes. Small cells (at most
MEMO_SHAPES shapes, e.g. a tile's chunk cells) are flattened once into one table that every
placement gathers from; bigger cells are expanded per instance under the composed transform
(90-degree rotations, x reflection, translation, AREF repetition). With ``instances``, the
placements of small cells by translation alone are handed out as :class:`Instances` (cell
ids and origins) instead of their shapes, so a reader of the geometry can work per instance.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from taalasc.formats.gdsread import GdsLibrary, Layer, _Refs
from taalasc.formats.safe_read import MAX_SHAPES
from taalasc.errors import MaskError

MEMO_SHAPES = 4096      # cells up to this many shapes are flattened once and reused
BATCH_SHAPES = 1 << 21  # streamed pieces hold about this many rectangles


@dataclass(frozen=True)
class Instances:
    """Small cells placed by translation alone, not expanded: the shapes of instance k are
    ``memo.table[memo.start[child[k]]:][:memo.size[child[k]]]`` moved by ``2 * origin[k]``
    (doubled centres). A reader of the geometry can work per instance instead of per shape."""
    child: np.ndarray
    origin: np.ndarray      # int64 [n, 2] nm
    memo: "_Memo"


def iter_layer(lib: GdsLibrary, layer: Layer, batch: int = BATCH_SHAPES, centres: bool = False,
               instances: bool = False) -> Iterator[np.ndarray | Instances]:
    """The top cell flattened, ``layer`` only: int64 [n, 4] rectangles in pieces of about
    ``batch`` shapes (a piece may be one larger cell's worth). With ``centres``, [n, 2]
    doubled centres ``(x0 + x1, y0 + y1)`` instead: half the data, still exact. With
    ``instances`` (needs ``centres``), placements of small cells by translation alone come
    as :class:`Instances` rather than as their shapes."""
    if instances and not centres:
        raise ValueError("instances needs centres")
    counts = _counts(lib, layer)
    memo = _Memo(len(lib.cells), 2 if centres else 4)
    pending: list[np.ndarray] = []
    size = 0
    key = (layer, centres, instances)
    try:
        for piece in _expand(lib, key, lib.top, _IDENTITY, counts, memo, batch):
            if isinstance(piece, Instances):
                yield piece
            elif len(piece):
                pending.append(piece)
                size += len(piece)
            if size >= batch:
                yield np.concatenate(pending)
                pending, size = [], 0
    except RecursionError:  # a chain of nested cells: Python's stack, not the memory, ends
        raise MaskError(f"{lib.path}: the cell hierarchy is deeper than this reader follows "
                        f"(~{sys.getrecursionlimit() // 3} levels)") from None
    if pending:
        yield np.concatenate(pending)


def flat_rects(lib: GdsLibrary) -> dict[Layer, np.ndarray]:
    """Every layer of the top cell flattened in memory (for tests and small files)."""
    layers = sorted({k for cell in lib.cells for k in cell.rects})
    out = {}
    for layer in layers:
        parts = list(iter_layer(lib, layer))
        if parts:
            out[layer] = np.concatenate(parts)
    return out


def _order(lib: GdsLibrary) -> list[int]:
    """Cell ids children first; MaskError on a reference cycle (iterative: no recursion
    limit for a deep chain). Computed once per library."""
    if lib.order is None:
        lib.order = _walk(lib)
    return lib.order


def _walk(lib: GdsLibrary) -> list[int]:
    state = np.zeros(len(lib.cells), np.int8)  # 0 new, 1 on the stack, 2 done
    order: list[int] = []
    state[lib.top] = 1
    stack = [(lib.top, iter(_children(lib, lib.top, state)))]
    while stack:
        cell, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            state[cell] = 2
            order.append(cell)
        elif state[nxt] == 1:
            raise MaskError(f"{lib.path}: cell {lib.cells[nxt].name!r} is part of a reference cycle")
        elif state[nxt] == 0:
            state[nxt] = 1
            stack.append((nxt, iter(_children(lib, nxt, state))))
    return order


def _children(lib: GdsLibrary, cell: int, state: np.ndarray) -> list[int]:
    """Children of ``cell`` not yet finished (thousands of tile cells share a few hundred
    chunk cells: filtering in numpy keeps the walk's Python loop short)."""
    refs = lib.cells[cell].refs
    if refs is None:
        return []
    kids = np.unique(refs.child)
    return kids[state[kids] != 2].tolist()


def check_counts(lib: GdsLibrary) -> None:
    """MaskError when the top cell would expand to more than MAX_SHAPES shapes."""
    total = _counts(lib, None)[lib.top]
    if total > MAX_SHAPES:
        raise MaskError(f"{lib.path}: the mask would expand to {int(total)} shapes when "
                        f"flattened; at most {MAX_SHAPES} are read")


def _counts(lib: GdsLibrary, layer: Layer | None) -> np.ndarray:
    """Shapes each cell expands to (``layer`` only, or all), as float64 so a bomb cannot wrap."""
    counts = np.zeros(len(lib.cells), np.float64)
    for k in _order(lib):
        cell = lib.cells[k]
        own = sum(len(v) for key, v in cell.rects.items() if layer is None or key == layer)
        refs = cell.refs
        if refs is not None:
            own += float(np.sum(counts[refs.child] * refs.cols * refs.rows))
        counts[k] = own
    return counts


_IDENTITY = (False, 0, 0, 0)


def _orient(rects: np.ndarray, reflect, quarter) -> np.ndarray:
    """Rectangles (or [n, 2] points when ``rects`` has 2 columns) reflected about x then
    rotated by ``quarter`` 90-degree steps; per-row arrays or scalars."""
    pts = rects.reshape(len(rects), -1, 2).copy()
    reflect = np.broadcast_to(np.asarray(reflect, bool), (len(rects),))
    quarter = np.broadcast_to(np.asarray(quarter, np.int64) % 4, (len(rects),))
    pts[reflect, :, 1] *= -1
    for q in (1, 2, 3):
        sel = quarter == q
        if sel.any():
            x, y = pts[sel, :, 0].copy(), pts[sel, :, 1].copy()
            pts[sel, :, 0], pts[sel, :, 1] = ((-y, x), (-x, -y), (y, -x))[q - 1]
    if pts.shape[1] == 1:
        return pts.reshape(len(rects), 2)
    lo, hi = np.minimum(pts[:, 0], pts[:, 1]), np.maximum(pts[:, 0], pts[:, 1])
    return np.concatenate([lo, hi], axis=1)


def _shift(shapes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rectangles [..., 4] or doubled centres [..., 2] moved by ``offsets`` (broadcast,
    last axis x, y)."""
    return shapes + (np.tile(offsets, 2) if shapes.shape[-1] == 4 else 2 * offsets)


def ragged(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated index ranges ``starts[k] .. starts[k] + sizes[k]``."""
    total = int(sizes.sum())
    return np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(total,
                                                                           dtype=np.int64)


def _apply(shapes: np.ndarray, t) -> np.ndarray:
    reflect, quarter, dx, dy = t
    out = _orient(shapes, reflect, quarter) if (reflect or quarter) else shapes
    return _shift(out, np.array([dx, dy], np.int64)) if (dx or dy) else out


def _compose(outer, reflect: bool, quarter: int, dx: int, dy: int):
    """outer after (reflect, quarter, dx, dy)."""
    r1, q1, x1, y1 = outer
    ox, oy = _orient(np.array([[dx, dy]], np.int64), r1, q1)[0].tolist() if (r1 or q1) else (dx, dy)
    return (r1 != reflect, (q1 + (-quarter if r1 else quarter)) % 4, ox + x1, oy + y1)


def _instances(refs: _Refs, sel: np.ndarray):
    """Rows ``sel`` of ``refs`` with AREFs expanded: child, origin [n, 2], reflect, quarter."""
    reps = refs.cols[sel] * refs.rows[sel]
    if (reps == 1).all():  # SREFs only: nothing to expand
        return refs.child[sel], refs.origin[sel], refs.reflect[sel], refs.quarter[sel]
    child = np.repeat(refs.child[sel], reps)
    first = np.cumsum(reps) - reps
    k = np.arange(int(reps.sum()), dtype=np.int64) - np.repeat(first, reps)
    cols = np.repeat(refs.cols[sel], reps)
    i, j = k % cols, k // cols
    origin = (np.repeat(refs.origin[sel], reps, axis=0)
              + i[:, None] * np.repeat(refs.col_step[sel], reps, axis=0)
              + j[:, None] * np.repeat(refs.row_step[sel], reps, axis=0))
    return (child, origin, np.repeat(refs.reflect[sel], reps), np.repeat(refs.quarter[sel], reps))


class _Memo:
    """Small cells (at most MEMO_SHAPES shapes) flattened once, into one table shared by
    every placement: a cell's shapes are ``table[start[c]:start[c] + size[c]]``."""

    def __init__(self, cells: int, width: int):
        self.start = np.full(cells, -1, np.int64)
        self.size = np.zeros(cells, np.int64)
        self.length, self.width = 0, width
        self._buf = np.zeros((1024, width), np.int64)  # grows by doubling

    def ensure(self, lib: GdsLibrary, key, cells: np.ndarray, counts) -> None:
        for c in np.unique(cells[self.start[cells] < 0]).tolist():
            if self.start[c] >= 0:  # filled while flattening another cell
                continue
            parts = list(_expand(lib, key[:2] + (False,), c, _IDENTITY, counts, self,
                                 BATCH_SHAPES))
            flat = np.concatenate(parts) if parts else np.zeros((0, self.width), np.int64)
            end = self.length + len(flat)
            if end > len(self._buf):
                grown = np.zeros((max(end, 2 * len(self._buf)), self.width), np.int64)
                grown[:self.length] = self._buf[:self.length]
                self._buf = grown
            self._buf[self.length:end] = flat
            self.start[c], self.size[c], self.length = self.length, len(flat), end

    @property
    def table(self) -> np.ndarray:
        return self._buf[:self.length]


def _expand(lib: GdsLibrary, key, cell: int, t, counts, memo: _Memo, batch: int
            ) -> Iterator[np.ndarray]:
    """Rectangles of ``cell`` under transform ``t``, in pieces: its own shapes, then its
    references to small cells placed in vectorised batches, then its big children
    recursively (each instance under the composed transform)."""
    own = lib.cells[cell].rects.get(key[0])
    if own is not None and len(own):
        yield _apply(own[:, :2] + own[:, 2:] if key[1] else own, t)
    refs = lib.cells[cell].refs
    if refs is None:
        return
    per_ref = counts[refs.child] * refs.cols * refs.rows
    small = (counts[refs.child] <= MEMO_SHAPES) & (per_ref > 0)
    rows = np.flatnonzero(small)
    start = 0
    cum = np.cumsum(per_ref[rows])
    while start < len(rows):
        stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + batch, "right"))
        stop = max(stop, start + 1)
        sel = rows[start:stop]
        start = stop
        if key[2] and not (t[0] or t[1]):
            child, origin, reflect, quarter = _instances(refs, sel)
            plain = ~reflect & (quarter == 0)
            memo.ensure(lib, key, child[plain], counts)
            yield Instances(child[plain], origin[plain] + np.array(t[2:], np.int64), memo)
            if plain.all():
                continue
            sel = _turned_rows(refs, sel)
        yield _place_small(lib, key, refs, sel, counts, memo, t)
    for k in np.flatnonzero(~small & (per_ref > 0)).tolist():
        child, origin, reflect, quarter = _instances(refs, np.array([k]))
        for c, (x, y), r, q in zip(child.tolist(), origin.tolist(), reflect.tolist(),
                                   quarter.tolist()):
            yield from _expand(lib, key, c, _compose(t, r, q, x, y), counts, memo, batch)


def _turned_rows(refs: _Refs, sel: np.ndarray) -> np.ndarray:
    """Rows of ``sel`` whose references rotate or reflect (an AREF row turns as a whole)."""
    return sel[refs.reflect[sel] | (refs.quarter[sel] != 0)]


def _place_small(lib, key, refs: _Refs, sel: np.ndarray, counts, memo: _Memo, t
                 ) -> np.ndarray:
    """Every instance of references ``sel`` (children of at most MEMO_SHAPES shapes) as one
    gather from the memo table, under the parent's transform ``t``."""
    child, origin, reflect, quarter = _instances(refs, sel)
    memo.ensure(lib, key, child, counts)
    turned = reflect | (quarter != 0)
    if not (t[0] or t[1]):  # a translated parent: move the origins, not every shape
        origin = origin + np.array(t[2:], np.int64)
    n = memo.size[child]
    if n.min() == n.max() and not turned.any():
        # Children of one size (a tile's chunk cells): a plain 3-D gather, no repeats.
        idx = memo.start[child][:, None] + np.arange(n[0], dtype=np.int64)
        shapes = _shift(memo.table[idx], origin[:, None, :]).reshape(-1, memo.width)
    else:
        shapes = memo.table[ragged(memo.start[child], n)]
        if turned.any():
            turned = np.repeat(turned, n)
            shapes[turned] = _orient(shapes[turned], np.repeat(reflect, n)[turned],
                                     np.repeat(quarter, n)[turned])
        shapes = _shift(shapes, np.repeat(origin, n, axis=0))
    return _apply(shapes, t) if (t[0] or t[1]) else shapes


def check_square(lib: GdsLibrary, layer: Layer, size_nm: int, what: str) -> None:
    """Every shape on ``layer`` in every cell is a ``size_nm`` square (rotation keeps that);
    ``what`` ends the message, e.g. "sky130 vias are 800 x 800 nm"."""
    for cell in lib.cells:
        rects = cell.rects.get(layer)
        if rects is None:
            continue
        bad = np.flatnonzero((rects[:, 2] - rects[:, 0] != size_nm)
                             | (rects[:, 3] - rects[:, 1] != size_nm))
        if bad.size:
            x0, y0, x1, y1 = rects[bad[0]].tolist()
            raise MaskError(f"{lib.path}: via at ({x0}, {y0}) nm in cell {cell.name!r} is "
                            f"{x1 - x0} x {y1 - y0} nm; {what} ({bad.size} such vias)")
