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


def children_first(lib: GdsLibrary) -> list[int]:
    """Ids of the cells the top reaches, children first; MaskError on a reference cycle
    (iterative: no recursion limit for a deep chain). Computed once per library."""
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
    kids = refs.child[state[refs.child] != 2]
    return np.unique(kids).tolist() if len(kids) else []


def check_counts(lib: GdsLibrary) -> None:
    """MaskError when the top cell would expand to more than MAX_SHAPES shapes."""
    total = _counts(lib, None)[lib.top]
    if total > MAX_SHAPES:
        raise MaskError(f"{lib.path}: the mask would expand to {int(total)} shapes when "
                        f"flattened; at most {MAX_SHAPES} are read")


def shape_count(lib: GdsLibrary) -> int:
    """Shapes the top cell expands to when flattened, counted without flattening."""
    return int(_counts(lib, None)[lib.top])


def _counts(lib: GdsLibrary, layer: Layer | None) -> np.ndarray:
    """Shapes each cell expands to (``layer`` only, or all), as float64 so a bomb cannot wrap;
    kept with the library (a reader checks the total, extraction then flattens one layer)."""
    if lib.counts is None:
        lib.counts = {}
    if layer not in lib.counts:
        lib.counts[layer] = layer_counts(lib, None if layer is None else [layer])[:, 0]
    return lib.counts[layer]


def layer_counts(lib: GdsLibrary, layers: list[Layer] | None) -> np.ndarray:
    """float64 [cells, len(layers)]: the shapes each cell expands to on each of ``layers``
    (None: one column, all layers); float64 so a bomb cannot wrap."""
    counts = np.zeros((len(lib.cells), 1 if layers is None else len(layers)), np.float64)
    for cells, refs, owner in _level_batches(lib, ("child", "cols", "rows")):
        if layers is None:
            counts[cells, 0] = [sum(len(v) for v in lib.cells[k].rects.values()) for k in cells]
        else:
            counts[cells] = [[len(lib.cells[k].rects.get(layer, ())) for layer in layers]
                             for k in cells]
        if refs is not None:   # owner is sorted: one reduceat per batch sums every layer
            placed = counts[refs.child] * (refs.cols * refs.rows).astype(np.float64)[:, None]
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            counts[np.asarray(cells)[owner[starts]]] += np.add.reduceat(placed, starts, axis=0)
    return counts


_LEVEL_BATCH = 1 << 14   # references of one level handled at once: cache-sized arrays


def levels(lib: GdsLibrary) -> np.ndarray:
    """Per cell id its level: 0 for a cell that places nothing (a chunk cell), else one more
    than its highest child's (a tile 1, the top 2). Computed once per library."""
    if lib.level is None:
        level = np.zeros(len(lib.cells), np.int64)
        for k in children_first(lib):
            refs = lib.cells[k].refs
            if refs is not None and len(refs.child):
                level[k] = level[refs.child].max() + 1
        lib.level = level
    return lib.level


def _level_batches(lib: GdsLibrary, fields=tuple(_Refs.__dataclass_fields__),
                   skip: np.ndarray | None = None):
    """The cells the top reaches (but ``skip``, a mask), children first, as batches of cells
    of one level holding about _LEVEL_BATCH references: (cell ids, their references
    concatenated or None, the batch position of each reference's cell; only ``fields``
    filled in). One vectorised step per batch instead of one per cell."""
    order, level = children_first(lib), levels(lib)
    by_level = np.array(order, np.int64)
    if skip is not None:
        by_level = by_level[~skip[by_level]]
    by_level = by_level[np.argsort(level[by_level], kind="stable")]
    batch, size = [], 0
    for n, k in enumerate(by_level.tolist()):
        batch.append(k)
        refs = lib.cells[k].refs
        size += 1 if refs is None else len(refs.child)
        last = n + 1 == len(by_level) or level[by_level[n + 1]] != level[k]
        if size >= _LEVEL_BATCH or last:
            yield _batch(lib, batch, fields)
            batch, size = [], 0


def _batch(lib: GdsLibrary, cells: list[int], fields):
    placing = [n for n, k in enumerate(cells) if lib.cells[k].refs is not None]
    if not placing:
        return cells, None, None
    parts = [lib.cells[cells[n]].refs for n in placing]
    refs = _Refs(*(np.concatenate([getattr(r, f) for r in parts]) if f in fields else None
                   for f in _Refs.__dataclass_fields__))
    return cells, refs, np.repeat(placing, [len(r.child) for r in parts])


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
        missing = cells[self.start[cells] < 0]
        if not len(missing):   # the usual case after a die's first tiles
            return
        for c in np.unique(missing).tolist():
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


def cell_boxes(lib: GdsLibrary, known: tuple[np.ndarray, np.ndarray] | None = None
               ) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) nm of every cell reached from the top, flattened, over
    all layers; (0, 0, -1, -1) for a cell that draws nothing (_level_batches: a few
    vectorised steps per batch of cells, not per cell). ``known`` = (boxes, mask): the boxes
    of the cells in mask are taken as given, not computed."""
    boxes = np.tile(np.array([0, 0, -1, -1], np.int64), (len(lib.cells), 1))
    skip = None
    if known is not None:
        skip = known[1]
        boxes[skip] = known[0][skip]
    for cells, refs, owner in _level_batches(lib, skip=skip):
        parts, at = [np.zeros((0, 4), np.int64)], [np.zeros(0, np.int64)]
        for n, k in enumerate(cells):
            for r in lib.cells[k].rects.values():
                if len(r):
                    parts.append(np.concatenate([r[:, :2].min(axis=0), r[:, 2:].max(axis=0)])[None])
                    at.append(np.array([n]))
        if refs is not None:
            parts.append(ref_boxes(refs, np.arange(len(refs.child)), boxes))
            at.append(owner)
        got, at = np.concatenate(parts), np.concatenate(at)
        keep = got[:, 2] >= got[:, 0]
        got, at = got[keep], at[keep]
        if not len(got):
            continue
        by_cell = np.argsort(at, kind="stable")
        got, at = got[by_cell], at[by_cell]
        first = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
        boxes[np.asarray(cells)[at[first]]] = np.concatenate(
            [np.minimum.reduceat(got[:, :2], first), np.maximum.reduceat(got[:, 2:], first)],
            axis=1)
    return boxes


def ref_boxes(refs: _Refs, sel: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Bounding box of what each reference ``sel`` of ``refs`` places (its whole array),
    from the boxes of the cells (``cell_boxes``); an empty child gives (0, 0, -1, -1)."""
    box = boxes[refs.child[sel]]
    empty = box[:, 2] < box[:, 0]
    if refs.reflect[sel].any() or refs.quarter[sel].any():
        box = _orient(box, refs.reflect[sel], refs.quarter[sel])
    out = box + np.tile(refs.origin[sel], 2)
    for count, step in ((refs.cols[sel], refs.col_step[sel]), (refs.rows[sel], refs.row_step[sel])):
        if (count != 1).any():
            reach = (count - 1)[:, None] * step      # the last copy's offset from the first
            out += np.concatenate([np.minimum(reach, 0), np.maximum(reach, 0)], axis=1)
    out[empty] = (0, 0, -1, -1)
    return out


class LayerPlacer:
    """The rectangles of one layer that chosen references of a cell put into it, with the
    reference each came from: for a diff, which flattens only the references that differ.
    Cells of at most MEMO_SHAPES shapes are flattened once (as iter_layer does)."""

    def __init__(self, lib: GdsLibrary, layer: Layer):
        self.lib, self.key = lib, (layer, False, False)
        self.counts = np.full(len(lib.cells), np.nan)   # filled in as cells are placed
        self.memo = _Memo(len(lib.cells), 4)

    def _count(self, cells: np.ndarray) -> None:
        """The shape counts of ``cells`` and every cell below them, on first need: a diff
        places the few cells that changed, not the die's thousands."""
        todo = np.unique(cells[np.isnan(self.counts[cells])])
        found: set[int] = set()
        while len(todo):
            found.update(todo.tolist())
            kids = [r.child for r in (self.lib.cells[k].refs for k in todo.tolist())
                    if r is not None]
            todo = np.unique(np.concatenate(kids)) if kids else todo[:0]
            todo = todo[np.isnan(self.counts[todo])]
            todo = todo[[k not in found for k in todo.tolist()]] if len(todo) else todo
        level = levels(self.lib)
        for k in sorted(found, key=level.__getitem__):   # children first
            cell = self.lib.cells[k]
            n = float(len(cell.rects.get(self.key[0], ())))
            if cell.refs is not None:
                n += float(np.sum(self.counts[cell.refs.child] * cell.refs.cols
                                  * cell.refs.rows))
            self.counts[k] = n

    def own(self, cell: int) -> np.ndarray:
        """The cell's own rectangles on the layer (not its references')."""
        return self.lib.cells[cell].rects.get(self.key[0], np.zeros((0, 4), np.int64))

    def place(self, refs: _Refs, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rectangles [n, 4], the position in ``sel`` each came from) of references ``sel``
        of ``refs``, arrays and transforms included, in their parent's coordinates."""
        sel = np.asarray(sel, np.int64)
        self._count(refs.child[sel])
        counts = self.counts[refs.child[sel]]
        per_ref = (counts * refs.cols[sel] * refs.rows[sel]).astype(np.int64)
        small = np.flatnonzero((counts <= MEMO_SHAPES) & (per_ref > 0))
        parts, src = [np.zeros((0, 4), np.int64)], [np.zeros(0, np.int64)]
        if len(small):
            parts.append(_place_small(self.lib, self.key, refs, sel[small], self.counts,
                                      self.memo, _IDENTITY))
            src.append(np.repeat(small, per_ref[small]))
        for k in np.flatnonzero((counts > MEMO_SHAPES) & (per_ref > 0)).tolist():
            child, origin, reflect, quarter = _instances(refs, sel[k:k + 1])
            for c, (x, y), r, q in zip(child.tolist(), origin.tolist(), reflect.tolist(),
                                       quarter.tolist()):
                for piece in _expand(self.lib, self.key, c, (r, q, x, y), self.counts,
                                     self.memo, BATCH_SHAPES):
                    parts.append(piece)
                    src.append(np.full(len(piece), k, np.int64))
        return np.concatenate(parts), np.concatenate(src)


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
