"""Which built-in base arrays hold a model: for the "does not fit" placement error.

A base holds a model when the placement rules (``tensor_rows``: one segment per tile) give at
most ``tiles per die × max_dies`` tiles. Only segment counts are computed — no placement, no
curve — and the count stops as soon as a base is over its limit, so even a model of billions
of parameters is judged in a fraction of a second per base. Candidates share the model's
base encoding and, when that base draws masks, have a mask-capable PDK themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from taalasc.config.base_array import BaseArray
from taalasc.errors import ConfigError, PlacementError


def tiles_needed(tensors: Sequence, base: BaseArray, limit: int) -> int | None:
    """Weight tiles the placement rules give ``tensors`` on ``base``; None when more than
    ``limit`` or when a tensor cannot be placed there at all (too many bits, ...)."""
    from taalasc.place.plan import FP16_BITS, tensor_rows

    # A tile holds at most capacity_bits of one tensor: a lower bound that rejects hopeless
    # bases without building a single segment.
    cap = base.weight_tile.capacity_bits
    floor = 0
    for spec in tensors:
        numel = math.prod(spec.shape)
        floor += -(-numel * (spec.bits or FP16_BITS) // cap)
    if floor > limit:
        return None
    count = 0
    for spec in tensors:
        try:
            count += len(tensor_rows(spec, base))
        except PlacementError:
            return None
        if count > limit:
            return None
    return count


def bases_that_hold(tensors: Sequence, base: BaseArray, max_dies: int | None = None,
                    need_masks: bool | None = None) -> list[tuple[str, int, bool]]:
    """(built-in base name, dies, mask-capable) for every built-in base array, other than
    ``base`` itself, that holds ``tensors`` within its max_dies (and within ``max_dies`` when
    given), fewest dies first. ``need_masks`` (default: whether ``base`` draws masks) keeps
    only bases whose PDK is mask-capable."""
    if need_masks is None:
        need_masks = base.pdk.mask_capable
    from taalasc.config import builtin_names, load_base_array

    here = Path(base.path).resolve() if base.path else None
    found = []
    for name in builtin_names("base"):
        try:
            other = load_base_array(name)
        except ConfigError:
            continue
        if here is not None and Path(other.path).resolve() == here:
            continue
        if other.weight_tile.encoding != base.weight_tile.encoding:
            continue
        if need_masks and not other.pdk.mask_capable:
            continue
        allowed = other.max_dies if max_dies is None else min(other.max_dies, max_dies)
        per_die = other.tile_grid.tiles
        tiles = tiles_needed(tensors, other, allowed * per_die)
        if tiles is not None:
            found.append((name, max(1, -(-tiles // per_die)), other.pdk.mask_capable))
    return sorted(found, key=lambda item: (item[1], item[0]))


def fit_hint(tensors: Sequence, base: BaseArray, max_dies: int | None = None,
             need_masks: bool | None = None) -> str:
    """The error's tail: 'built-in bases that hold it: sky130-reticle (2 dies)', or why none.
    Estimate-only bases (when ``need_masks`` is False) say so."""
    found = bases_that_hold(tensors, base, max_dies, need_masks)
    if not found:
        return "no built-in base array holds it"
    return "built-in bases that hold it: " + ", ".join(
        f"{name} ({dies} {'die' if dies == 1 else 'dies'}"
        f"{'' if masks else ', estimate only'})" for name, dies, masks in found)
