"""Placement figures: inter-tile wirelength (against the row-major baseline) and utilisation.

Wirelength is the sum, over the drawn (same-die) dataflow links, of the Manhattan distance
between the two tile centres: |d column| * pitch_x_nm + |d row| * pitch_y_nm. Cross-die
hand-offs leave the die and are counted apart (Placement.cross_die_links).
"""

from __future__ import annotations

from collections.abc import Sequence

from taalasc.config.base_array import BaseArray
from taalasc.place.plan import Placement, TensorSpec, plan_placement


def wirelength_nm(placement: Placement, base: BaseArray) -> int:
    """Sum of Manhattan distances between the centres of linked tiles (nm)."""
    px, py = base.tile_grid.pitch_x_nm, base.tile_grid.pitch_y_nm
    return sum(abs(a.column - b.column) * px + abs(a.row - b.row) * py
               for a, b in placement.links)


def tensor_span_nm(placement: Placement, base: BaseArray) -> int:
    """Sum over tensors and dies of the half-perimeter of the box around the tensor's tiles.

    A proxy for the buses that reach every tile of a tensor at once (the input vector is
    broadcast to all row blocks, outputs are gathered), which the chain wirelength ignores.
    """
    px, py = base.tile_grid.pitch_x_nm, base.tile_grid.pitch_y_nm
    boxes: dict[tuple[str, int], list[int]] = {}
    for slot, seg in placement.assignments:
        box = boxes.setdefault((seg.tensor, slot.die), [slot.column, slot.column, slot.row, slot.row])
        box[0], box[1] = min(box[0], slot.column), max(box[1], slot.column)
        box[2], box[3] = min(box[2], slot.row), max(box[3], slot.row)
    return sum((b[1] - b[0]) * px + (b[3] - b[2]) * py for b in boxes.values())


def rowmajor_wirelength_nm(tensors: Sequence[TensorSpec], base: BaseArray, *,
                           max_dies: int | None = None) -> int:
    """Wirelength of the same segments placed row-major (row 0 left to right, ...): the baseline."""
    return wirelength_nm(plan_placement(tensors, base, max_dies=max_dies, curve="rowmajor"), base)


def placement_stats(placement: Placement, base: BaseArray) -> dict[str, float | int]:
    """Utilisation figures, METRICS-style names; ratios are fractions (0..1)."""
    cap = base.weight_tile.capacity_bits
    per_die = base.tile_grid.tiles
    used = placement.tiles_used
    by_kind = {k: [s for _, s in placement.assignments if s.kind == k]
               for k in ("codes", "scales", "vector")}
    stats: dict[str, float | int] = {
        "place__dies": placement.dies,
        "place__tiles__used": used,
        "place__tiles__total": placement.dies * per_die,
        "place__tiles__utilization": used / (placement.dies * per_die) if placement.dies else 0.0,
        "place__sites__used": placement.sites_used,
        "place__sites__utilization": placement.sites_used / (used * cap) if used else 0.0,
        "place__wirelength_nm": wirelength_nm(placement, base),
        "place__tensor_span_nm": tensor_span_nm(placement, base),
        "place__links__on_die": len(placement.links),
        "place__links__cross_die": placement.cross_die_links,
    }
    for kind, segs in by_kind.items():
        stats[f"place__tiles__{kind}"] = len(segs)
        # Sites left empty in tiles of this kind: the price of one segment per tile.
        stats[f"place__sites__{kind}__unused"] = sum(cap - s.used_sites for s in segs)
    return stats
