"""Diff two layouts (one die each) without flattening what is the same on both sides.

Each file's cells are hashed by content (content.py: a Merkle hash over the hierarchy, from
the parsed records, never from the name). References at the same place in A and B are
skipped unflattened when the cells they place have the same content hash, whatever the cells
are called: two compiles name every cell with their own prefix (custom/names.py), and a
tile of the same bits has the same hash in both, so almost every tile is skipped; a cell
edited in place after the compile keeps its name but not its hash, and is compared.
``trust=False`` compares the full flat geometry instead.

A tile whose cell differs is compared one level down (its chunk references by content hash
and position), so one flipped bit flattens one 8-via chunk per side, not the whole tile. The
result holds every shape present on one side only, each tagged with the top-level
instance it came from (-1: drawn in the top cell itself, e.g. routes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import gdstk
import numpy as np

from taalasc.diff.content import content_hashes
from taalasc.diff.flatten import EMPTY, Flattener, Layer, polygon_rects, ref_offsets
from taalasc.diff.geom import contact_pairs, distinct_index, rows_in, xor_polygons

Trusted = tuple[dict[str, bytes], dict[str, bytes]]   # per side: cell name -> content hash


@dataclass
class LayerChange:
    """Shapes of one layer present on one side only, and the exact XOR polygon count."""

    removed: np.ndarray        # [n, 4] rectangles of A not in B
    removed_src: np.ndarray    # [n] instance index (-1: top cell)
    added: np.ndarray
    added_src: np.ndarray
    xor_count: int = 0
    xor_rects: np.ndarray = field(default_factory=lambda: EMPTY)


@dataclass
class DieChange:
    """The difference of one die: per layer, and the top-level instances shapes came from."""

    die: int
    layers: dict[Layer, LayerChange]
    instances: list[tuple[str, int, int]]   # (cell name, x_nm, y_nm) per instance index
    refs_skipped: int
    refs_compared: int
    extent_nm: tuple[int, int, int, int]    # bounding box of both layouts

    @property
    def identical(self) -> bool:
        return all(not len(c.added) and not len(c.removed) for c in self.layers.values())


def _top(lib: gdstk.Library | None, where: str) -> gdstk.Cell | None:
    from taalasc.errors import MaskError

    if lib is None:
        return None
    tops = lib.top_level()
    if len(tops) != 1:
        raise MaskError(f"{where}: expected one top cell, found {len(tops)}")
    return tops[0]


def trusted_cells(lib_a, lib_b, where: str, tops: set[str]) -> Trusted:
    """Per side, the cells (tops excluded) whose content hash the other side has too, by
    name: they draw the same shapes as a cell of the other side, whatever either is called."""
    ha, hb = content_hashes(lib_a, f"{where} (A)"), content_hashes(lib_b, f"{where} (B)")
    both = set(ha.values()) & set(hb.values())
    return ({n: d for n, d in ha.items() if d in both and n not in tops},
            {n: d for n, d in hb.items() if d in both and n not in tops})


def _key(ref, digests: dict[str, bytes] | None = None) -> tuple:
    """Match key of a reference: (cell, x, y) when plain, with its transform otherwise. The
    cell is its content hash when ``digests`` has one for it (a trusted cell), else None."""
    x, y = ref.origin
    x, y = round(x), round(y)   # OASIS reads back with float noise (99999.99999999999)
    cell = None if digests is None else digests.get(ref.cell_name)
    if ref.rotation == 0 and not ref.x_reflection and ref.magnification == 1 \
            and ref.repetition.size <= 1:
        return (cell, x, y)
    off = ref_offsets(ref)
    return (cell, x, y, ref.rotation, ref.x_reflection, ref.magnification,
            None if off is None else off.tobytes())


class _Collector:
    """Gathers flattened shapes per side and layer with their instance index."""

    def __init__(self):
        self.parts: tuple[dict, dict] = ({}, {})

    def add(self, side: int, shapes: dict[Layer, np.ndarray], src: int, shift=(0, 0)) -> None:
        for layer, rects in shapes.items():
            if len(rects):
                r = rects + np.array([shift[0], shift[1], shift[0], shift[1]], np.int64)
                self.parts[side].setdefault(layer, []).append((r, np.full(len(r), src, np.int64)))

    def add_many(self, side: int, items: list[tuple[dict, int, int, int]]) -> None:
        """Plain placements (child shapes, dx, dy, instance) added with one broadcast."""
        if not items:
            return
        for layer in sorted({k for f, _, _, _ in items for k in f}):
            arrs = [f.get(layer, EMPTY) for f, _, _, _ in items]
            counts = np.array([len(x) for x in arrs])
            if not counts.sum():
                continue
            off = np.array([(dx, dy) for _, dx, dy, _ in items], np.int64)
            rects = np.concatenate(arrs) + np.tile(np.repeat(off, counts, axis=0), 2)
            src = np.repeat(np.array([s for _, _, _, s in items], np.int64), counts)
            self.parts[side].setdefault(layer, []).append((rects, src))

    def side(self, side: int, layer: Layer) -> tuple[np.ndarray, np.ndarray]:
        got = self.parts[side].get(layer)
        if not got:
            return EMPTY, np.zeros(0, np.int64)
        return np.concatenate([r for r, _ in got]), np.concatenate([s for _, s in got])


def _plain(ref) -> bool:
    return not ref.rotation and not ref.x_reflection and ref.magnification == 1 \
        and ref.repetition.size <= 1


def _same_origin(a, b) -> bool:
    return round(a[0]) == round(b[0]) and round(a[1]) == round(b[1])


def _split(refs_a, refs_b, trusted: Trusted, skipped: _Skipped, shift=(0, 0)):
    """Skip references that place cells of the same content hash (trusted_cells) at the same
    place; return the rest.

    Writers emit references in a fixed order, so the common case (two versions of one tile)
    is matched pairwise first; whatever is left is matched by key.
    """
    refs_a, refs_b = list(refs_a), list(refs_b)
    hash_a, hash_b = trusted
    skipped.begin(shift)
    if len(refs_a) == len(refs_b):
        left_a, left_b = [], []
        names, refs, origins = skipped.names, skipped.refs, skipped.origins
        for ra, rb in zip(refs_a, refs_b):  # the hot loop of a diff: kept flat on purpose
            name = ra.cell_name
            digest = hash_a.get(name)
            if digest is not None and digest == hash_b.get(rb.cell_name):
                oa, ob = ra.origin, rb.origin
                if (oa == ob or _same_origin(oa, ob)) and _plain(ra) and _plain(rb):
                    names.append(name)
                    refs.append(ra)
                    origins.append(oa)
                    continue
            left_a.append(ra)
            left_b.append(rb)
        refs_a, refs_b = left_a, left_b
    by_key: dict[tuple, list] = {}
    for ref in refs_a:
        by_key.setdefault(_key(ref, hash_a), []).append(ref)
    rest_b = []
    for ref in refs_b:
        key = _key(ref, hash_b)
        pool = by_key.get(key)
        if pool and key[0] is not None:
            ra = pool.pop()
            if len(key) == 3:
                skipped.add_plain(ra.cell_name, ra, ra.origin)
            else:
                skipped.add_other(ra)
        else:
            rest_b.append(ref)
    rest_a = [r for pool in by_key.values() for r in pool]
    return rest_a, rest_b


class _Skipped:
    """Instances skipped as identical; their shapes are fetched only where a change touches.

    Stored as flat lists (name, origin, reference) plus one shift per batch, because a diff
    of a randomly changed die skips ~10^6 chunk references.
    """

    def __init__(self, fl: Flattener):
        self.fl = fl
        self.names: list[str] = []
        self.origins: list[tuple[float, float]] = []
        self.refs: list = []
        self.batches: list[tuple[int, tuple[int, int]]] = []   # (first index, shift)
        self.other: list[int] = []       # indices of non-plain references
        self._boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.refs)

    def begin(self, shift) -> None:
        self.batches.append((len(self.refs), shift))

    def add_plain(self, name: str, ref, origin) -> None:
        self.names.append(name)
        self.origins.append(origin)
        self.refs.append(ref)

    def add_other(self, ref) -> None:
        self.other.append(len(self.refs))
        self.add_plain("", ref, (0.0, 0.0))

    def _shifts(self) -> np.ndarray:
        starts = [b[0] for b in self.batches] + [len(self.refs)]
        counts = np.diff(np.array(starts, np.int64))
        return np.repeat(np.array([b[1] for b in self.batches], np.int64).reshape(-1, 2),
                         counts, axis=0)

    def _compute_boxes(self) -> np.ndarray:
        # One bounding box per distinct cell, moved to each origin.
        index: dict[str, int] = {}
        inverse = np.array([index.setdefault(n, len(index)) for n in self.names], np.int64)
        first = np.zeros(len(index), np.int64)
        first[inverse[::-1]] = np.arange(len(inverse))[::-1]
        cell_box = np.array([_int_box(self.refs[k].cell.bounding_box()) if n else (0, 0, 0, 0)
                             for n, k in zip(index, first.tolist())], np.int64)
        flat = np.fromiter(chain.from_iterable(self.origins), np.float64, 2 * len(self.origins))
        origins = np.rint(flat).astype(np.int64).reshape(-1, 2)
        shifts = self._shifts()
        boxes = cell_box.reshape(-1, 4)[inverse] + np.tile(origins + shifts, 2)
        for k in self.other:
            bb = _int_box(self.refs[k].bounding_box())
            dx, dy = shifts[k]
            boxes[k] = (bb[0] + dx, bb[1] + dy, bb[2] + dx, bb[3] + dy)
        return boxes

    def context(self, changed: np.ndarray, layer: Layer) -> np.ndarray:
        """Shapes on ``layer`` of the skipped instances whose box touches a changed shape."""
        if not self.refs or not len(changed):
            return EMPTY
        if self._boxes is None:
            self._boxes = self._compute_boxes()
        _, hit = contact_pairs(changed, self._boxes)
        parts = [EMPTY]
        shifts = self._shifts() if len(hit) else None
        for k in np.unique(hit).tolist():
            rects = self.fl.reference(self.refs[k]).get(layer)
            if rects is not None:
                dx, dy = (int(v) for v in shifts[k])
                parts.append(rects + np.array([dx, dy, dx, dy], np.int64))
        return np.concatenate(parts)


def diff_layouts(lib_a: gdstk.Library | None, lib_b: gdstk.Library | None, die: int,
                 where: str, trust: bool = True) -> DieChange:
    """Shapes of one die present in A only (removed) and in B only (added), per layer."""
    top_a, top_b = _top(lib_a, f"{where} (A)"), _top(lib_b, f"{where} (B)")
    fa, fb = Flattener(f"{where} (A)"), Flattener(f"{where} (B)")
    trusted: Trusted = ({}, {})
    if trust and top_a is not None and top_b is not None:
        trusted = trusted_cells(lib_a, lib_b, where, {top_a.name, top_b.name})
    refs_a = list(top_a.references) if top_a is not None else []
    refs_b = list(top_b.references) if top_b is not None else []
    context = _Skipped(fa)
    rest_a, rest_b = _split(refs_a, refs_b, trusted, context)
    skipped_top = len(context)
    out = _Collector()
    instances: list[tuple[str, int, int]] = []

    # References at the same place on both sides, both plain: compare one level down.
    place_a: dict[tuple, list] = {}
    for ref in rest_a:
        place_a.setdefault(_key(ref)[1:], []).append(ref)
    paired_b = []
    for ref in rest_b:
        pool = place_a.get(_key(ref)[1:])
        if trust and pool and len(pool) == 1 and len(_key(ref)) == 3 and len(_key(pool[0])) == 3 \
                and not isinstance(ref.cell, str) and not isinstance(pool[0].cell, str):
            paired_b.append((pool.pop(), ref))
        else:
            src = len(instances)
            instances.append((ref.cell_name, round(ref.origin[0]), round(ref.origin[1])))
            out.add(1, fb.reference(ref), src)
    for pool in place_a.values():
        for ref in pool:
            src = len(instances)
            instances.append((ref.cell_name, round(ref.origin[0]), round(ref.origin[1])))
            out.add(0, fa.reference(ref), src)
    batch: tuple[list, list] = ([], [])
    for ra, rb in paired_b:
        src = len(instances)
        shift = (round(ra.origin[0]), round(ra.origin[1]))
        instances.append((rb.cell_name, *shift))
        ca, cb = ra.cell, rb.cell
        out.add(0, polygon_rects(ca, fa.where), src, shift)
        out.add(1, polygon_rects(cb, fb.where), src, shift)
        sub_a, sub_b = _split(ca.references, cb.references, trusted, context, shift)
        for side, subs, fl in ((0, sub_a, fa), (1, sub_b, fb)):
            for ref in subs:
                if len(_key(ref)) == 3:   # plain: gathered, placed in one broadcast below
                    o = ref.origin
                    batch[side].append((fl.child(ref), round(o[0]) + shift[0],
                                        round(o[1]) + shift[1], src))
                else:
                    out.add(side, fl.reference(ref), src, shift)
    for side in (0, 1):
        out.add_many(side, batch[side])
    for side, top, fl in ((0, top_a, fa), (1, top_b, fb)):
        if top is not None:
            out.add(side, polygon_rects(top, fl.where), -1)

    layers = sorted(set(out.parts[0]) | set(out.parts[1]))
    changes: dict[Layer, LayerChange] = {}
    for layer in layers:
        changes[layer] = _layer_change(out.side(0, layer), out.side(1, layer), layer, context)
    extent = _extent(top_a, top_b)
    return DieChange(die=die, layers=changes, instances=instances, refs_skipped=skipped_top,
                     refs_compared=len(refs_a) + len(refs_b) - 2 * skipped_top,
                     extent_nm=extent)


def _layer_change(a, b, layer: Layer, context: _Skipped) -> LayerChange:
    (ra, sa), (rb, sb) = a, b
    in_b, in_a = rows_in(ra, rb), rows_in(rb, ra)
    removed, removed_src = _distinct(ra[~in_b], sa[~in_b])
    added, added_src = _distinct(rb[~in_a], sb[~in_a])
    change = LayerChange(removed, removed_src, added, added_src)
    if not len(removed) and not len(added):
        return change
    # Shapes of skipped (identical) instances only matter where they overlap a change.
    ctx = context.context(np.concatenate([removed, added]), layer)
    all_a, all_b = np.concatenate([ra, ctx]), np.concatenate([rb, ctx])
    change.xor_count, change.xor_rects = xor_polygons(removed, added, all_a, all_b)
    return change


def _distinct(rects: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(rects) < 2:
        return rects, src
    first = distinct_index(rects)
    return rects[first], src[first]


def _int_box(bb) -> tuple[int, int, int, int]:
    if bb is None:  # an empty cell: a box that touches nothing
        return (0, 0, -1, -1)
    (x0, y0), (x1, y1) = bb
    return (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))


def _extent(*tops) -> tuple[int, int, int, int]:
    boxes = [t.bounding_box() for t in tops if t is not None]
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return (0, 0, 0, 0)
    return (int(np.floor(min(b[0][0] for b in boxes))), int(np.floor(min(b[0][1] for b in boxes))),
            int(np.ceil(max(b[1][0] for b in boxes))), int(np.ceil(max(b[1][1] for b in boxes))))
