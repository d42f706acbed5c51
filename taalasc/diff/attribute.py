"""Name what changed: tiles, model tensors and elements, the masks a re-spin needs, its cost.

A changed via inside a weight tile is decoded like extraction does: its site from the
position in the tile, its slot (high strap = 1, low strap = 0) from the y offset; the
manifest's placement maps the site to (tensor, kind, element, bit) with
``element = site // bits``, ``bit = site % bits``, element (r0 + e // width, c0 + e % width).
One flipped bit is one via removed and one added at the same site. A tensor whose tiles or
segments differ between the two placements is reported as re-placed, with via counts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taalasc.custom.names import local_name
from taalasc.place.plan import ROW_DTYPE

MAX_ELEMENTS_KEPT = 1000   # per tensor; the counts stay exact


@dataclass
class TileDiff:
    """Shapes changed in one top-level instance (a weight tile, or FILL, or the top cell)."""

    die: int
    label: str                         # "tile (c, r)", "FILL @ (x, y)", "top cell (routes)"
    column: int | None
    row: int | None
    origin_nm: tuple[int, int] | None
    added: dict[str, int] = field(default_factory=dict)     # layer name -> shapes
    removed: dict[str, int] = field(default_factory=dict)
    tensor_a: str | None = None
    tensor_b: str | None = None

    def to_json(self) -> dict:
        return {"die": self.die, "label": self.label, "column": self.column, "row": self.row,
                "origin_nm": list(self.origin_nm) if self.origin_nm else None,
                "added": dict(sorted(self.added.items())),
                "removed": dict(sorted(self.removed.items())),
                "tensor_a": self.tensor_a, "tensor_b": self.tensor_b}


@dataclass
class TensorDiff:
    """What changed in one model tensor."""

    tensor: str
    placement_changed: bool = False
    vias_added: int = 0
    vias_removed: int = 0
    bits_changed: int = 0
    changed: dict[str, int] = field(default_factory=dict)      # kind -> elements changed
    elements: list[tuple[str, int, int, tuple[int, ...]]] = field(default_factory=list)
    tiles: set[tuple[int, int, int]] = field(default_factory=set)

    @property
    def values_changed(self) -> int:
        return sum(self.changed.values())

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "placement_changed": self.placement_changed,
                "values_changed": self.values_changed,
                "changed": dict(sorted(self.changed.items())),
                "bits_changed": self.bits_changed, "vias_added": self.vias_added,
                "vias_removed": self.vias_removed,
                "tiles": [list(t) for t in sorted(self.tiles)],
                "elements": [{"kind": k, "index": [r, c], "bits": list(b)}
                             for k, r, c, b in self.elements],
                "elements_truncated": len(self.elements) < self.values_changed}


def tile_of(base, origin: tuple[int, int]) -> tuple[int, int] | None:
    """Grid (column, row) of a tile instance placed at ``origin`` (None: not a tile origin)."""
    if base is None:
        return None
    g = base.tile_grid
    dx, dy = origin[0] - g.origin_nm[0], origin[1] - g.origin_nm[1]
    if dx % g.pitch_x_nm or dy % g.pitch_y_nm:
        return None
    c, r = dx // g.pitch_x_nm, dy // g.pitch_y_nm
    return (c, r) if 0 <= c < g.columns and 0 <= r < g.rows else None


def _segment_at(placement, key: tuple[int, int, int]):
    return None if placement is None else placement.segment_at(*key)


def _layout(placement, name: str) -> np.ndarray:
    """[segments, 10] int64: tile, kind, bits, extent and digit width of one tensor's
    segments (not its index, which differs between placements with other tensor lists)."""
    rows = placement.tensor_rows(name)
    return np.stack([rows[f].astype(np.int64) for f in ROW_DTYPE.names if f != "tensor"]
                    + [placement.digit_bits_of(rows["kind"])], axis=1)


def replaced_tensors(pa, pb) -> set[str]:
    """Tensors whose (tile, segment) lists differ between two placements."""
    if pa is None or pb is None:
        return set()
    names = set(pa.tensors) | set(pb.tensors)
    return {n for n in names if not np.array_equal(_layout(pa, n), _layout(pb, n))}


def decode_sites(centres: np.ndarray, origin: tuple[int, int], base
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(site index, line) of via centres inside a tile at ``origin`` (site -1: on no slot;
    tie-high-low's line 0 is the high strap)."""
    tile, tol = base.weight_tile, base.pdk.grid_nm
    x, y = centres[:, 0] - origin[0], centres[:, 1] - origin[1]
    i, j = x // tile.site_pitch_x_nm, y // tile.site_pitch_y_nm
    on_x = np.abs(x - i * tile.site_pitch_x_nm - tile.slot_x_nm(0)) <= tol
    pitch = tile.site_pitch_y_nm // tile.lines_per_site
    dy = y - j * tile.site_pitch_y_nm - tile.line_y_nm(0, 0)
    line = (dy + pitch // 2) // pitch
    on_line = (np.abs(dy - line * pitch) <= tol) & (line >= 0) & (line < tile.lines_per_site)
    inside = (i >= 0) & (i < tile.sites_x) & (j >= 0) & (j < tile.sites_y)
    site = np.where(on_x & on_line & inside, j * tile.sites_x + i, -1)
    return site, line


class Attribution:
    """Accumulates tile and tensor changes over the dies of a diff."""

    def __init__(self, base, placement_a, placement_b, via_layer, layer_names):
        self.base = base
        self.placement_a, self.placement_b = placement_a, placement_b
        self.replaced = replaced_tensors(placement_a, placement_b)
        self.via_layer = via_layer
        self.names = layer_names
        self.tiles: list[TileDiff] = []
        self.tensors: dict[str, TensorDiff] = {}

    def add_die(self, change) -> None:
        per: dict[int, TileDiff] = {}
        for layer, lc in sorted(change.layers.items()):
            for src, side in ((lc.removed_src, "removed"), (lc.added_src, "added")):
                ids, shapes = np.unique(src, return_counts=True)
                for s, n in zip(ids.tolist(), shapes.tolist()):
                    if s not in per:
                        per[s] = self._tile(change, s)
                    d = getattr(per[s], side)
                    d[self.names[layer]] = d.get(self.names[layer], 0) + n
            if layer == self.via_layer:
                self._vias(change, lc)
        self.tiles += [per[s] for s in sorted(per, key=lambda k: (per[k].column is None, per[k].row
                                                                   or 0, per[k].column or 0, k))]

    def _tile(self, change, src: int) -> TileDiff:
        if src < 0:
            return TileDiff(change.die, "top cell (routes)", None, None, None)
        name, x, y = change.instances[src]
        cr = tile_of(self.base, (x, y))
        if cr is None:
            # the local name: a writer's cell is FILL in either compile (custom/names.py)
            return TileDiff(change.die, f"{local_name(name)} @ ({x}, {y})", None, None, (x, y))
        key = (change.die, *cr)
        sa, sb = _segment_at(self.placement_a, key), _segment_at(self.placement_b, key)
        return TileDiff(change.die, f"tile ({cr[0]}, {cr[1]})", cr[0], cr[1], (x, y),
                        tensor_a=sa.tensor if sa else None, tensor_b=sb.tensor if sb else None)

    def _vias(self, change, lc) -> None:
        """Changed vias of one die to tensors and elements, tile by tile. A value's sites all
        lie in one tile, and a flipped bit is a via removed and one added at the same site:
        so both sides of a tile give that tile's changed elements in full, counted here with
        numpy and kept only up to MAX_ELEMENTS_KEPT per tensor (a new checkpoint changes
        nearly every weight: a Python set per element would not fit in memory at 8 B)."""
        if self.base is None:
            return
        # each side's shapes sorted by instance once; a tile's are then one slice
        sides = []
        for rects, src, side, placement in ((lc.removed, lc.removed_src, "removed",
                                             self.placement_a),
                                            (lc.added, lc.added_src, "added", self.placement_b)):
            order = np.argsort(src, kind="stable")
            sides.append((rects, order, src[order], side, placement))
        for s in np.unique(np.concatenate([lc.removed_src, lc.added_src])).tolist():
            if s < 0:
                continue
            name, x, y = change.instances[s]
            cr = tile_of(self.base, (x, y))
            if cr is None:
                continue
            keys, segment = [], None
            for rects, order, by_src, side, placement in sides:
                seg = _segment_at(placement, (change.die, *cr))
                lo, hi = np.searchsorted(by_src, [s, s + 1]).tolist()
                if seg is None or lo == hi:
                    continue
                mine = order[lo:hi]
                t = self.tensors.setdefault(seg.tensor, TensorDiff(seg.tensor))
                t.tiles.add((change.die, *cr))
                if side == "removed":
                    t.vias_removed += hi - lo
                else:
                    t.vias_added += hi - lo
                if seg.tensor in self.replaced:
                    t.placement_changed = True
                    continue
                # not re-placed: both sides hold the same segment here
                segment = seg
                centres = (rects[mine, :2] + rects[mine, 2:]) // 2
                site, _ = decode_sites(centres, (x, y), self.base)
                site = site[(site >= 0) & (site < seg.used_sites)]
                element, digit = np.divmod(site, seg.sites_per_element)
                keys.append(element * 64 + digit * seg.digit_bits)   # a value has <= 16 bits
            if segment is not None and keys:
                self._elements(segment, np.unique(np.concatenate(keys)))

    def _elements(self, seg, keys: np.ndarray) -> None:
        """Record one tile's changed (element, bit) keys (sorted, unique) of segment ``seg``."""
        if not len(keys):   # vias on no site of the segment: counted, no element
            return
        t = self.tensors[seg.tensor]
        element, bit = keys // 64, keys % 64
        starts = np.flatnonzero(np.r_[True, element[1:] != element[:-1]])
        t.changed[seg.kind] = t.changed.get(seg.kind, 0) + len(starts)
        t.bits_changed += len(keys)
        room = MAX_ELEMENTS_KEPT   # the smallest (kind, row, col) of the tensor are kept
        if len(t.elements) >= room and (seg.kind, seg.rows[0], seg.cols[0]) > t.elements[-1][:3]:
            return
        width = seg.cols[1] - seg.cols[0]
        ends = np.r_[starts[1:], len(keys)]
        new = [(seg.kind, seg.rows[0] + e // width, seg.cols[0] + e % width,
                tuple(bit[a:b].tolist()))
               for e, a, b in zip(element[starts[:room]].tolist(), starts[:room].tolist(),
                                  ends[:room].tolist())]
        t.elements = sorted(t.elements + new)[:room]

    def finish(self) -> list[TensorDiff]:
        for name in self.replaced:
            self.tensors.setdefault(name, TensorDiff(name)).placement_changed = True
        return [self.tensors[n] for n in sorted(self.tensors)]


def respin_cost(pdk, masks_per_die: list[set[str]]) -> dict | None:
    """Cost of the new custom masks: per changed die, the via and/or top-metal mask."""
    if pdk is None or getattr(pdk, "cost", None) is None:
        return None
    from taalasc.report.metrics import from_pdk

    via = from_pdk(pdk, "cost.via_mask_cost_usd")
    top = from_pdk(pdk, "cost.top_metal_mask_cost_usd")
    n_via = sum("via" in m for m in masks_per_die)
    n_top = sum("top_metal" in m for m in masks_per_die)
    return {"usd": n_via * via[0] + n_top * top[0],
            "formula": "via_mask_cost_usd × dies with via changes + top_metal_mask_cost_usd × "
                       "dies with top-metal changes",
            "inputs": {"via_mask_cost_usd": {"value": via[0], "source": via[1]},
                       "top_metal_mask_cost_usd": {"value": top[0], "source": top[1]},
                       "dies_with_via_changes": n_via, "dies_with_top_metal_changes": n_top}}
