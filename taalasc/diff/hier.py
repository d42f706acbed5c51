"""Diff two layouts (one die each) without flattening what is the same on both sides.

Each file's cells are hashed by content (content.py: a Merkle hash over the hierarchy, from
the parsed records, never from the name). References at the same place in A and B are
skipped unflattened when the cells they place have the same content hash, whatever the cells
are called: two compiles name their tile cells with their own prefix (custom/names.py), and a
tile of the same bits has the same hash in both, so almost every tile is skipped; a cell
edited in place after the compile keeps its name but not its hash, and is compared.
``trust=False`` compares the full flat geometry instead.

A tile whose cell differs is compared one level down (its chunk references by content hash
and position), so one flipped bit flattens one 8-via chunk per side, not the whole tile. The
result holds every shape present on one side only, each tagged with the top-level instance it
came from (-1: drawn in the top cell itself, e.g. routes).

Everything works on the readers' arrays (formats/gdsread.GdsLibrary): references are matched
by comparing whole columns (writers list a tile's references in a fixed order, so two
versions of a tile line up row by row; what does not is matched by sorting), and the tiles
that differ are compared in batches of about PAIR_BATCH references. When the differing tiles
touch neither each other nor any other shape on their layers (as on every die the compile
writes), each batch's shapes are also counted and dropped before the next batch is
flattened, so memory is bounded by the batch and the shapes that differ, not by the die;
otherwise the die's flattened shapes are counted in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taalasc.diff.content import digest_table
from taalasc.diff.geom import (common_rows, contact_pairs, distinct_index, sorted_rows,
                                xor_polygons)
from taalasc.errors import MaskError
from taalasc.formats.gdsflat import LayerPlacer, cell_boxes, children_first, ref_boxes
from taalasc.formats.gdsread import GdsLibrary, _Refs

Layer = tuple[int, int]
EMPTY = np.zeros((0, 4), np.int64)
PAIR_BATCH = 1 << 18          # references of differing tiles compared at once
_FIELDS = tuple(_Refs.__dataclass_fields__)


@dataclass
class LayerChange:
    """Shapes of one layer present on one side only, and the exact XOR polygon count."""

    removed: np.ndarray        # [n, 4] rectangles of A not in B
    removed_src: np.ndarray    # [n] instance index (-1: top cell)
    added: np.ndarray
    added_src: np.ndarray
    xor_count: int = 0
    xor_rects: np.ndarray = field(default_factory=lambda: EMPTY)
    counts: tuple[int, int] | None = None   # (removed, added) once the shapes are dropped

    @property
    def n_removed(self) -> int:
        return len(self.removed) if self.counts is None else self.counts[0]

    @property
    def n_added(self) -> int:
        return len(self.added) if self.counts is None else self.counts[1]

    def without_shapes(self) -> "LayerChange":
        """The counts without the rectangles (a diff of whole dies keeps no die's shapes)."""
        none = np.zeros(0, np.int64)
        return LayerChange(EMPTY, none, EMPTY, none, self.xor_count, EMPTY,
                           (self.n_removed, self.n_added))


@dataclass
class DieChange:
    """The difference of one die: per layer, and the top-level instances shapes came from."""

    die: int
    layers: dict[Layer, LayerChange]
    instances: list[tuple[str, int, int]]   # (cell name, x_nm, y_nm) per instance index
    refs_skipped: int
    refs_compared: int
    extent_nm: tuple[int, int, int, int]    # bounding box of both layouts
    same_bytes: bool = False                # the two files are byte for byte the same
    heat: tuple[int, np.ndarray] | None = None   # (side px, changed shapes per pixel), report.py

    @property
    def identical(self) -> bool:
        return all(not c.n_added and not c.n_removed for c in self.layers.values())

    @property
    def shapes_dropped(self) -> bool:
        """Whether the diff kept only counts of this die (diff_masks keep_shapes=False)."""
        return any(c.counts is not None for c in self.layers.values())


def same_file_die(die: int, lib: GdsLibrary | None) -> DieChange:
    """A die whose two files have the same bytes: nothing to compare. ``lib`` (one side, when
    read: bare files) gives the extent and the references skipped."""
    if lib is None:
        return DieChange(die, {}, [], 0, 0, (0, 0, 0, 0), same_bytes=True)
    refs = lib.cells[lib.top].refs
    return DieChange(die, {}, [], 0 if refs is None else len(refs.child), 0,
                     _extent([cell_boxes(lib)[lib.top]]), same_bytes=True)


def layers_of(lib: GdsLibrary | None) -> set[Layer]:
    """Every (layer, datatype) a library's cells draw on."""
    return set() if lib is None else {k for c in lib.cells for k, v in c.rects.items() if len(v)}


def trusted_cells(lib_a: GdsLibrary, lib_b: GdsLibrary, where: str
                  ) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Per side, the cells (tops excluded) whose content hash the other side has too, by
    name: they draw the same shapes as a cell of the other side, whatever either is called."""
    sa, sb = _shared_ids(lib_a, lib_b, where)
    return ({lib_a.cells[k].name: d for k, d in sa.trusted.items()},
            {lib_b.cells[k].name: d for k, d in sb.trusted.items()})


@dataclass
class _Side:
    lib: GdsLibrary
    where: str
    hid: np.ndarray                             # per cell: shared content id, -1 untrusted
    trusted: dict[int, bytes] = field(default_factory=dict)
    placers: dict[Layer, LayerPlacer] = field(default_factory=dict)
    boxes: np.ndarray | None = None

    def placer(self, layer: Layer) -> LayerPlacer:
        if layer not in self.placers:
            self.placers[layer] = LayerPlacer(self.lib, layer)
        return self.placers[layer]

    def cell_boxes(self) -> np.ndarray:
        if self.boxes is None:
            self.boxes = cell_boxes(self.lib)
        return self.boxes


def _untrusted(lib: GdsLibrary, where: str) -> _Side:
    return _Side(lib, where, np.full(len(lib.cells), -1, np.int64))


def _shared_ids(lib_a: GdsLibrary, lib_b: GdsLibrary, where: str) -> tuple[_Side, _Side]:
    """Both sides with one id per content hash found on both (tops excluded), -1 elsewhere."""
    sides = [_untrusted(lib_a, f"{where} (A)"), _untrusted(lib_b, f"{where} (B)")]
    found = []
    for side in sides:
        table, lib = digest_table(side.lib, side.where), side.lib
        found.append({k: table[k].tobytes() for k in children_first(lib) if k != lib.top})
    both = set(found[0].values()) & set(found[1].values())
    ident = {d: n for n, d in enumerate(sorted(both))}
    for side, digests in zip(sides, found):
        for k, d in digests.items():
            n = ident.get(d)
            if n is not None:
                side.hid[k] = n
                side.trusted[k] = d
    return sides[0], sides[1]


# --- references as columns -----------------------------------------------------------------

def _take(refs: _Refs, rows: np.ndarray) -> _Refs:
    return _Refs(*(getattr(refs, f)[rows] for f in _FIELDS))


def _concat(parts: list[_Refs]) -> _Refs:
    return _Refs(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


def _shifted(refs: _Refs, shift: np.ndarray) -> _Refs:
    """The references moved by ``shift`` (int64 [n, 2], one per row)."""
    return _Refs(*(getattr(refs, f) + shift if f == "origin" else getattr(refs, f)
                   for f in _FIELDS))


def _plain(refs: _Refs) -> np.ndarray:
    return ~refs.reflect & (refs.quarter == 0) & (refs.cols == 1) & (refs.rows == 1)


def _same(ra: _Refs, ia: np.ndarray, ha: np.ndarray, rb: _Refs, ib: np.ndarray,
          hb: np.ndarray) -> np.ndarray:
    """Row by row: does A's reference ia[k] place the same content as B's ib[k], the same way?"""
    ca, cb = ha[ra.child[ia]], hb[rb.child[ib]]
    eq = (ca >= 0) & (ca == cb) & (ra.origin[ia] == rb.origin[ib]).all(axis=1)
    for f in ("reflect", "quarter", "cols", "rows"):
        eq &= getattr(ra, f)[ia] == getattr(rb, f)[ib]
    for f in ("col_step", "row_step"):
        eq &= (getattr(ra, f)[ia] == getattr(rb, f)[ib]).all(axis=1)
    return eq


def _key_columns(refs: _Refs, rows: np.ndarray, hid: np.ndarray, group: np.ndarray
                 ) -> np.ndarray:
    """int64 [n, 12] match keys: group, content id, placement."""
    return np.column_stack([group[rows], hid[refs.child[rows]], refs.origin[rows],
                            refs.reflect[rows], refs.quarter[rows], refs.cols[rows],
                            refs.rows[rows], refs.col_step[rows], refs.row_step[rows]])


def _match(ra: _Refs, ga: np.ndarray, sa: _Side, rb: _Refs, gb: np.ndarray, sb: _Side
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair references of A and B that place the same content the same way within one group
    (``ga``/``gb``: group per row, both sorted): (A rows matched, A rows left, B rows left).

    Groups with as many references on both sides are compared row by row first (the
    writer's order); what is left is matched as a multiset by sorting its keys."""
    ha, hb = sa.hid, sb.hid
    groups = int(max(ga.max(initial=-1), gb.max(initial=-1))) + 1
    na, nb = np.bincount(ga, minlength=groups), np.bincount(gb, minlength=groups)
    aligned = na == nb
    ia, ib = np.flatnonzero(aligned[ga]), np.flatnonzero(aligned[gb])
    eq = _same(ra, ia, ha, rb, ib, hb)
    matched = [ia[eq]]
    left_a = np.sort(np.concatenate([np.flatnonzero(~aligned[ga]), ia[~eq]]))
    left_b = np.sort(np.concatenate([np.flatnonzero(~aligned[gb]), ib[~eq]]))
    la = left_a[ha[ra.child[left_a]] >= 0]
    lb = left_b[hb[rb.child[left_b]] >= 0]
    if len(la) and len(lb):
        keys = np.concatenate([_key_columns(ra, la, ha, ga), _key_columns(rb, lb, hb, gb)])
        side = np.r_[np.zeros(len(la), np.int64), np.ones(len(lb), np.int64)]
        order = np.lexsort((side,) + tuple(keys.T[::-1]))
        k = keys[order]
        start = np.r_[True, (k[1:] != k[:-1]).any(axis=1)]
        group = np.cumsum(start) - 1
        s = side[order]
        first = np.flatnonzero(start)
        # rank of each row among its group's rows of its own side
        count_a = np.bincount(group, weights=s == 0).astype(np.int64)
        pos = np.arange(len(order)) - first[group]
        rank = np.where(s == 0, pos, pos - count_a[group])
        count_b = np.bincount(group, minlength=len(first)) - count_a
        take = rank < np.minimum(count_a, count_b)[group]
        rows = np.r_[la, lb][order]
        used_a, used_b = rows[take & (s == 0)], rows[take & (s == 1)]
        matched.append(used_a)
        left_a = np.setdiff1d(left_a, used_a)
        left_b = np.setdiff1d(left_b, used_b)
    return np.sort(np.concatenate(matched)), left_a, left_b


class _Skipped:
    """References skipped as identical (A's side); their shapes are fetched only where a
    change touches them. Plain ones are kept as (cell, origin) only, 24 bytes each: a diff of
    a randomly changed die skips ~10^6 chunk references."""

    def __init__(self, side: _Side):
        self.side = side
        self.child: list[np.ndarray] = []
        self.origin: list[np.ndarray] = []
        self.other: list[_Refs] = []
        self.count = 0
        self._refs: _Refs | None = None
        self._boxes: np.ndarray | None = None

    def add(self, refs: _Refs, rows: np.ndarray) -> None:
        self.count += len(rows)
        plain = _plain(refs)[rows]
        self.child.append(refs.child[rows[plain]].astype(np.int32))
        self.origin.append(refs.origin[rows[plain]])
        if not plain.all():
            self.other.append(_take(refs, rows[~plain]))

    def refs(self) -> _Refs:
        if self._refs is None:
            child = np.concatenate(self.child + [np.zeros(0, np.int32)]).astype(np.int64)
            n = len(child)
            plain = _Refs(child, np.concatenate(self.origin + [np.zeros((0, 2), np.int64)]),
                          np.zeros(n, bool), np.zeros(n, np.int64), np.ones(n, np.int64),
                          np.ones(n, np.int64), np.zeros((n, 2), np.int64),
                          np.zeros((n, 2), np.int64))
            self._refs = _concat([plain] + self.other)
            self.child, self.origin, self.other = [], [], []
        return self._refs

    def context(self, changed: np.ndarray, layer: Layer) -> np.ndarray:
        """Shapes on ``layer`` of the skipped references whose box touches a changed shape."""
        if not self.count or not len(changed):
            return EMPTY
        refs = self.refs()
        if self._boxes is None:
            self._boxes = ref_boxes(refs, np.arange(len(refs.child)), self.side.cell_boxes())
        _, hit = contact_pairs(changed, self._boxes)
        if not len(hit):
            return EMPTY
        return self.side.placer(layer).place(refs, np.unique(hit))[0]


class _Collector:
    """Shapes per side and layer, each with the instance index it came from."""

    def __init__(self, sides: tuple[_Side | None, _Side | None], layers: list[Layer]):
        self.sides, self.layers = sides, layers
        self.parts: tuple[dict, dict] = ({}, {})

    def add(self, side: int, layer: Layer, rects: np.ndarray, src: np.ndarray) -> None:
        if len(rects):
            self.parts[side].setdefault(layer, []).append((rects, src))

    def place(self, side: int, refs: _Refs, rows: np.ndarray, src: np.ndarray) -> None:
        """Every shape references ``rows`` place; ``src``: the instance of each row."""
        if not len(rows):
            return
        for layer in self.layers:
            rects, k = self.sides[side].placer(layer).place(refs, rows)
            self.add(side, layer, rects, src[k])

    def side(self, side: int, layer: Layer) -> tuple[np.ndarray, np.ndarray]:
        got = self.parts[side].get(layer)
        if not got:
            return EMPTY, np.zeros(0, np.int64)
        return np.concatenate([r for r, _ in got]), np.concatenate([s for _, s in got])


def diff_layouts(lib_a: GdsLibrary | None, lib_b: GdsLibrary | None, die: int,
                 where: str, trust: bool = True, extent: bool = True) -> DieChange:
    """Shapes of one die present in A only (removed) and in B only (added), per layer.
    ``extent=False`` leaves DieChange.extent_nm at zeros (a caller that knows the die's size
    from its base array saves a pass over every cell)."""
    try:
        return _diff(lib_a, lib_b, die, where, trust, extent)
    except RecursionError:  # a chain of nested cells: Python's stack, not the memory, ends
        raise MaskError(f"{where}: the cell hierarchy is deeper than this reader follows") \
            from None


def _top_refs(lib: GdsLibrary | None) -> _Refs:
    refs = None if lib is None else lib.cells[lib.top].refs
    if refs is None:
        z, z2 = np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
        return _Refs(z, z2, np.zeros(0, bool), z, z, z, z2, z2)
    return refs


def _diff(lib_a, lib_b, die: int, where: str, trust: bool, extent: bool) -> DieChange:
    if trust and lib_a is not None and lib_b is not None:
        sa, sb = _shared_ids(lib_a, lib_b, where)
    else:
        sa = _untrusted(lib_a, f"{where} (A)") if lib_a is not None else None
        sb = _untrusted(lib_b, f"{where} (B)") if lib_b is not None else None
    layers = sorted(layers_of(lib_a) | layers_of(lib_b))
    out = _Collector((sa, sb), layers)
    ra, rb = _top_refs(lib_a), _top_refs(lib_b)
    skipped = _Skipped(sa) if sa is not None else None
    if sa is not None and sb is not None:
        matched, rest_a, rest_b = _match(ra, np.zeros(len(ra.child), np.int64), sa,
                                         rb, np.zeros(len(rb.child), np.int64), sb)
        skipped.add(ra, matched)
    else:
        rest_a, rest_b = np.arange(len(ra.child)), np.arange(len(rb.child))
    skipped_top = skipped.count if skipped is not None else 0
    instances: list[tuple[str, int, int]] = []

    # References at the same place on both sides, both plain: compared one level down.
    pairs: list[tuple[int, int]] = []
    if trust and sa is not None and sb is not None:
        pairs, rest_a, rest_b = _pair_by_place(ra, rest_a, rb, rest_b)
    for side, refs, rest, lib in ((1, rb, rest_b, lib_b), (0, ra, rest_a, lib_a)):
        src = np.arange(len(instances), len(instances) + len(rest), dtype=np.int64)
        instances += [(lib.cells[c].name, x, y) for c, (x, y) in
                      zip(refs.child[rest].tolist(), refs.origin[rest].tolist())]
        out.place(side, refs, rest, src)
    first_pair = len(instances)
    for ia, ib in pairs:
        x, y = ra.origin[ia].tolist()
        instances.append((lib_b.cells[rb.child[ib]].name, x, y))
    for side, lib in ((0, lib_a), (1, lib_b)):
        if lib is not None:
            for layer in layers:
                own = lib.cells[lib.top].rects.get(layer, EMPTY)
                out.add(side, layer, own, np.full(len(own), -1, np.int64))
    batches = _batches([len(_cell_refs(lib_a, ra.child[ia]).child) for ia, _ in pairs])
    found: dict[Layer, list[LayerChange]] = {}
    if len(batches) > 1 and _apart(pairs, ra, rb, sa, sb, out):
        # Tiles that touch neither each other nor the rest: each batch's changes are its own
        # (no shape of one can equal, touch or overlap a shape of another), so each batch is
        # counted and dropped before the next is flattened.
        _changes(found, out, [skipped])
        for start, stop in batches:
            col, own = _Collector((sa, sb), layers), _Skipped(sa)
            _compare_tiles(pairs[start:stop], first_pair + start, ra, rb, sa, sb, col, own)
            _changes(found, col, [skipped, own])
    else:
        for start, stop in batches:
            _compare_tiles(pairs[start:stop], first_pair + start, ra, rb, sa, sb, out, skipped)
        _changes(found, out, [skipped])
    changes = {layer: _merged(parts) for layer, parts in sorted(found.items())}
    return DieChange(die=die, layers=changes, instances=instances, refs_skipped=skipped_top,
                     refs_compared=len(ra.child) + len(rb.child) - 2 * skipped_top,
                     extent_nm=_extent(_top_boxes(sa, sb))
                     if extent else (0, 0, 0, 0))


def _changes(found: dict, out: _Collector, context: list) -> None:
    """Each layer's change of the shapes in ``out``, appended to ``found``."""
    for layer in sorted(set(out.parts[0]) | set(out.parts[1])):
        found.setdefault(layer, []).append(
            _layer_change(out.side(0, layer), out.side(1, layer), layer, context))
    out.parts = ({}, {})


def _merged(parts: list[LayerChange]) -> LayerChange:
    """One layer's change from spatially separate parts: the rectangles in sorted-row order
    (the order one pass over the whole die gives), the counts added."""
    if len(parts) == 1:
        return parts[0]

    def joined(rects: list[np.ndarray], src: list[np.ndarray]):
        rects, src = np.concatenate(rects), np.concatenate(src)
        order = sorted_rows(rects)
        return rects[order], src[order]

    removed, removed_src = joined([c.removed for c in parts], [c.removed_src for c in parts])
    added, added_src = joined([c.added for c in parts], [c.added_src for c in parts])
    xor_rects = np.concatenate([c.xor_rects for c in parts])
    return LayerChange(removed, removed_src, added, added_src,
                       sum(c.xor_count for c in parts), xor_rects[sorted_rows(xor_rects)])


def _apart(pairs, ra: _Refs, rb: _Refs, sa: _Side, sb: _Side, out: _Collector) -> bool:
    """Whether the compared tiles (each pair's boxes on both sides) touch neither each other
    nor any shape placed outside them (``out``: unpaired references, the top cell's own)."""
    ia = np.array([a for a, _ in pairs], np.int64)
    ib = np.array([b for _, b in pairs], np.int64)
    box_a = ref_boxes(ra, ia, sa.cell_boxes())
    box_b = ref_boxes(rb, ib, _boxes_b(sa, sb))
    boxes = np.concatenate([np.minimum(box_a[:, :2], box_b[:, :2]),
                            np.maximum(box_a[:, 2:], box_b[:, 2:])], axis=1)
    i, j = contact_pairs(boxes, boxes)
    if (i != j).any():
        return False
    # a shape outside the tiles on a layer no tile draws (the die's boundary) cannot meet them
    inner = set().union(*(_inner_layers(s.lib) for s in (sa, sb)))
    rest = [r for side in out.parts for layer, got in side.items() if layer in inner
            for r, _ in got]
    return not rest or not len(contact_pairs(boxes, np.concatenate(rest))[0])


def _inner_layers(lib: GdsLibrary) -> set[Layer]:
    """The layers drawn by the cells below the top."""
    return {k for n, c in enumerate(lib.cells) if n != lib.top for k, v in c.rects.items()
            if len(v)}


def _pair_by_place(ra: _Refs, rest_a: np.ndarray, rb: _Refs, rest_b: np.ndarray):
    """(A row, B row) of plain references left at the same origin, one on each side; the
    rows left after them."""
    plain_a, plain_b = _plain(ra), _plain(rb)
    place_a: dict[tuple[int, int], list[int]] = {}
    for k in rest_a[plain_a[rest_a]].tolist():
        place_a.setdefault(tuple(ra.origin[k].tolist()), []).append(k)
    pairs = []
    for k in rest_b[plain_b[rest_b]].tolist():
        pool = place_a.get(tuple(rb.origin[k].tolist()))
        if pool is not None and len(pool) == 1:
            pairs.append((pool.pop(), k))
    paired = np.array(pairs, np.int64).reshape(-1, 2)
    return pairs, np.setdiff1d(rest_a, paired[:, 0]), np.setdiff1d(rest_b, paired[:, 1])


def _cell_refs(lib: GdsLibrary, cell: int) -> _Refs:
    refs = lib.cells[cell].refs
    return refs if refs is not None else _top_refs(None)


def _batches(sizes: list[int]) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive items of about PAIR_BATCH total size each."""
    out, start, total = [], 0, 0
    for k, n in enumerate(sizes):
        total += n
        if total >= PAIR_BATCH:
            out.append((start, k + 1))
            start, total = k + 1, 0
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def _compare_tiles(pairs, first_src: int, ra: _Refs, rb: _Refs, sa: _Side, sb: _Side,
                   out: _Collector, skipped: _Skipped) -> None:
    """Tiles placed at the same origin on both sides with different content: their own
    shapes, and their references matched within each pair (moved to the die's coordinates)."""
    sides = []
    for side, refs, s, which in ((0, ra, sa, 0), (1, rb, sb, 1)):
        cells = [refs.child[p[which]] for p in pairs]
        parts, groups, shifts = [], [], []
        for g, (cell, pair) in enumerate(zip(cells, pairs)):
            shift = refs.origin[pair[which]]
            own = s.lib.cells[int(cell)].rects
            for layer, rects in own.items():
                out.add(side, layer, rects + np.tile(shift, 2),
                        np.full(len(rects), first_src + g, np.int64))
            sub = _cell_refs(s.lib, int(cell))
            parts.append(sub)
            groups.append(np.full(len(sub.child), g, np.int64))
            shifts.append(np.broadcast_to(shift, (len(sub.child), 2)))
        refs_all = _shifted(_concat(parts), np.concatenate(shifts)) if parts else _top_refs(None)
        sides.append((refs_all, np.concatenate(groups) if groups else np.zeros(0, np.int64)))
    (refs_a, ga), (refs_b, gb) = sides
    matched, left_a, left_b = _match(refs_a, ga, sa, refs_b, gb, sb)
    skipped.add(refs_a, matched)
    out.place(0, refs_a, left_a, first_src + ga[left_a])
    out.place(1, refs_b, left_b, first_src + gb[left_b])


def _layer_change(a, b, layer: Layer, context: list[_Skipped | None]) -> LayerChange:
    (ra, sa), (rb, sb) = a, b
    in_b, in_a = common_rows(ra, rb)
    removed, removed_src = _distinct(ra[~in_b], sa[~in_b])
    added, added_src = _distinct(rb[~in_a], sb[~in_a])
    change = LayerChange(removed, removed_src, added, added_src)
    if not len(removed) and not len(added):
        return change
    # Shapes of skipped (identical) instances only matter where they overlap a change.
    changed = np.concatenate([removed, added])
    ctx = np.concatenate([EMPTY] + [c.context(changed, layer) for c in context if c])
    all_a, all_b = np.concatenate([ra, ctx]), np.concatenate([rb, ctx])
    del a, b, ra, rb   # their copies with the context are what is used from here
    change.xor_count, rects = xor_polygons(removed, added, all_a, all_b)
    change.xor_rects = rects[sorted_rows(rects)]   # one order, however the die was split
    return change


def _distinct(rects: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(rects) < 2:
        return rects, src
    first = distinct_index(rects)
    return rects[first], src[first]


def _top_boxes(sa: _Side | None, sb: _Side | None) -> list[np.ndarray]:
    """The top cells' boxes."""
    if sa is None or sb is None:
        return [s.cell_boxes()[s.lib.top] for s in (sa, sb) if s is not None]
    return [sa.cell_boxes()[sa.lib.top], _boxes_b(sa, sb)[sb.lib.top]]


def _boxes_b(sa: _Side, sb: _Side) -> np.ndarray:
    """B's cell boxes, kept with B. B's cells of a content A has take A's box: only what
    differs is boxed again."""
    if sb.boxes is None:
        boxes_a = sa.cell_boxes()
        by_content = np.zeros((int(max(sa.hid.max(initial=-1), sb.hid.max(initial=-1))) + 1,
                               4), np.int64)
        shared_a = np.flatnonzero(sa.hid >= 0)
        by_content[sa.hid[shared_a]] = boxes_a[shared_a]
        shared_b = sb.hid >= 0
        known = np.zeros((len(sb.hid), 4), np.int64)
        known[shared_b] = by_content[sb.hid[shared_b]]
        sb.boxes = cell_boxes(sb.lib, (known, shared_b))
    return sb.boxes


def _extent(boxes: list[np.ndarray]) -> tuple[int, int, int, int]:
    """Bounding box of the top cells' boxes (0, 0, 0, 0 when all are empty)."""
    b = np.array([box for box in boxes if box[2] >= box[0]], np.int64).reshape(-1, 4)
    if not len(b):
        return (0, 0, 0, 0)
    return (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))
