"""Placement figures: inter-tile wirelength (against the row-major baseline) and utilisation.

Wirelength is the sum, over the drawn (same-die) dataflow links, of the Manhattan distance
between the two tile centres: |d column| * pitch_x_nm + |d row| * pitch_y_nm. Cross-die
hand-offs leave the die and are counted apart (Placement.cross_die_links).

The sums run on numpy arrays pulled out of the placement in one pass (models of 10^5 tiles
made per-tile Python loops a visible part of a compile); results are plain Python ints and
floats, equal to the per-tile definitions above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.place.curve import curve_order
from taalasc.place.plan import KINDS, Placement, TensorSpec, plan_placement, tensor_rows


def _link_array(placement: Placement) -> np.ndarray:
    """[n_links, 4] int64: column and row of each link's two ends."""
    return placement.link_ends()[:, [1, 2, 4, 5]]


def _wirelength(ends: np.ndarray, base: BaseArray) -> int:
    px, py = base.tile_grid.pitch_x_nm, base.tile_grid.pitch_y_nm
    return (int(np.abs(ends[:, 0] - ends[:, 2]).sum()) * px
            + int(np.abs(ends[:, 1] - ends[:, 3]).sum()) * py)


def wirelength_nm(placement: Placement, base: BaseArray) -> int:
    """Sum of Manhattan distances between the centres of linked tiles (nm)."""
    return _wirelength(_link_array(placement), base)


def _tile_array(placement: Placement) -> np.ndarray:
    """[n_tiles, 4] int64 (die, column, row, used sites) per tile."""
    r = placement.rows
    return np.stack([r["die"], r["column"], r["row"], placement.used_sites],
                    axis=1).astype(np.int64)


def _tensor_span(tiles: np.ndarray, tid: np.ndarray, base: BaseArray) -> int:
    """Half-perimeters of the boxes around each (tensor ``tid``, die)'s tiles, summed."""
    if not len(tiles):
        return 0
    px, py = base.tile_grid.pitch_x_nm, base.tile_grid.pitch_y_nm
    die, col, row = tiles[:, 0], tiles[:, 1], tiles[:, 2]
    order = np.lexsort((die, tid))  # group by (tensor, die)
    t, d = tid[order], die[order]
    starts = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (d[1:] != d[:-1])])
    c, r = col[order], row[order]
    width = np.maximum.reduceat(c, starts) - np.minimum.reduceat(c, starts)
    height = np.maximum.reduceat(r, starts) - np.minimum.reduceat(r, starts)
    return int(width.sum()) * px + int(height.sum()) * py


def tensor_span_nm(placement: Placement, base: BaseArray) -> int:
    """Sum over tensors and dies of the half-perimeter of the box around the tensor's tiles.

    A proxy for the buses that reach every tile of a tensor at once (the input vector is
    broadcast to all row blocks, outputs are gathered), which the chain wirelength ignores.
    """
    return _tensor_span(_tile_array(placement), placement.rows["tensor"], base)


def _rowmajor_wirelength(segments: int, base: BaseArray) -> int:
    """Wirelength of ``segments`` consecutive tiles laid row-major, die after die (as
    plan_placement lays them: a link joins consecutive tiles of the same die)."""
    grid = base.tile_grid
    per_die = grid.tiles
    order = np.array(curve_order("rowmajor", grid.columns, grid.rows),
                     dtype=np.int64).reshape(-1, 2)
    # Links of a full die, and of the last die's first k tiles: prefix sums of step lengths.
    step = (np.abs(np.diff(order[:, 0])) * grid.pitch_x_nm
            + np.abs(np.diff(order[:, 1])) * grid.pitch_y_nm)
    prefix = np.r_[0, np.cumsum(step)]
    full, rest = divmod(segments, per_die)
    return full * int(prefix[per_die - 1]) + (int(prefix[rest - 1]) if rest else 0)


def rowmajor_wirelength_nm(tensors: Sequence[TensorSpec], base: BaseArray, *,
                           max_dies: int | None = None, placement: Placement | None = None) -> int:
    """Wirelength of the same segments placed row-major (row 0 left to right, ...): the baseline.

    ``placement``: the placement already planned from these ``tensors`` and ``max_dies`` (on
    any curve); its tile count is used instead of cutting the tensors into segments again.
    """
    if placement is not None:
        return _rowmajor_wirelength(placement.tiles_used, base)
    allowed = base.max_dies if max_dies is None else max_dies
    names = [t.name for t in tensors]
    valid = (not isinstance(allowed, bool) and isinstance(allowed, int) and allowed >= 1
             and len(set(names)) == len(names) and len(tensors) > 0)
    if valid:
        count = sum(len(tensor_rows(t, base)) for t in tensors)  # raises as plan_placement does
        valid = -(-count // base.tile_grid.tiles) <= allowed
    if not valid:  # plan_placement raises the PlacementError that says what is wrong
        return wirelength_nm(plan_placement(tensors, base, max_dies=max_dies, curve="rowmajor"),
                             base)
    return _rowmajor_wirelength(count, base)


def placement_stats(placement: Placement, base: BaseArray) -> dict[str, float | int]:
    """Utilisation figures, METRICS-style names; ratios are fractions (0..1)."""
    cap = base.weight_tile.sites
    per_die = base.tile_grid.tiles
    used = placement.tiles_used
    tiles = _tile_array(placement)
    sites_used = int(tiles[:, 3].sum())
    stats: dict[str, float | int] = {
        "place__dies": placement.dies,
        "place__tiles__used": used,
        "place__tiles__total": placement.dies * per_die,
        "place__tiles__utilization": used / (placement.dies * per_die) if placement.dies else 0.0,
        "place__sites__used": sites_used,
        "place__sites__utilization": sites_used / (used * cap) if used else 0.0,
        "place__wirelength_nm": wirelength_nm(placement, base),
        "place__tensor_span_nm": _tensor_span(tiles, placement.rows["tensor"], base),
        "place__links__on_die": len(placement.link_rows),
        # Hand-offs between consecutive tiles on different dies (not drawn).
        "place__links__cross_die": placement.cross_die_links,
    }
    for index, k in enumerate(KINDS):
        mine = placement.rows["kind"] == index
        count = int(np.count_nonzero(mine))
        stats[f"place__tiles__{k}"] = count
        # Sites left empty in tiles of this kind: the price of one segment per tile.
        stats[f"place__sites__{k}__unused"] = count * cap - int(tiles[mine, 3].sum())
    return stats
