"""Rule check of a written die that scales: per cell once, plus a flat check of the few shapes
outside the tiles. No per-via work, so its cost does not grow with the model.

Why this is enough (the writer's geometry, see writer.py / tiles.py):

1. Inside a tile. Every bit via of every tile sits on a *slot*: site (i, j), high or low strap
   (tiles.render_tile places chunk cells only at site columns that are multiples of 8 inside
   the tile, one chunk per 8 sites, and a chunk cell of n sites has one via per site on a
   slot of row 0 -- checked below for every chunk cell the die uses). A tile's vias are a
   subset of all its slots, so if STRAPS plus *every* slot (both polarities of every site)
   passes the flat check, every programmed tile does: spacing between a subset of vias cannot
   get smaller, each via keeps its enclosing strap, and the metal is STRAPS alone. That flat
   check is done once per base array (cached).
2. Between a tile and the rest. All of a tile's shapes lie in its box [0, W] x [0, H]
   (checked). If every other shape of the die keeps the spacing rule from every used tile's
   box (metal: top_metal_space; route vias: via_space) and boxes keep it from each other, no
   rule can fail across the box edge. This is conservative (it treats the box as metal).
3. Outside the tiles: routes (wires + vias), channel fill bars and fill arrays (each array as
   its bounding box, conservative; one 2 x 2 block of its squares is checked flat, all squares
   being the same at one pitch) are checked flat. They are few.
4. Density comes from the writer, computed exactly over every flattened metal rectangle.
"""

from __future__ import annotations

import hashlib

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.checks.drc import (Violation, _near_pairs, check_rects, fill_clearance, fill_sizes,
                                 fill_spacing, wide_metal_violations)
from taalasc.custom.geometry import centred, chunk_via_rects, strap_rects
from taalasc.custom.writer import DieLayout, DieMaskResult

_PROOFS: dict[str, list[Violation]] = {}
_DIES: dict[str, list[Violation]] = {}


def slot_via_rects(base: BaseArray) -> np.ndarray:
    """Every possible bit via of a tile (every line of every site), tile-relative."""
    tile, g, via = base.weight_tile, base.pdk.grid_nm, base.pdk.rules.via_size_nm
    xs = np.array([centred(tile.slot_x_nm(i), via, g) for i in range(tile.sites_x)])
    ys = np.array([centred(tile.line_y_nm(j, line), via, g)
                   for j in range(tile.sites_y) for line in range(tile.lines_per_site)])
    x = np.repeat(xs, len(ys), axis=0)
    y = np.tile(ys, (len(xs), 1))
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.int64)


def tile_proof(base: BaseArray) -> list[Violation]:
    """Violations inside a tile whose every slot holds a via (cached per base array)."""
    key = repr((base.weight_tile, base.pdk.rules, base.pdk.grid_nm))
    if key in _PROOFS:
        return _PROOFS[key]
    tile, g, rules = base.weight_tile, base.pdk.grid_nm, base.pdk.rules
    slots = slot_via_rects(base)
    straps = strap_rects(tile, g)
    found = [Violation(v.rule, v.x_nm, v.y_nm, f"tile cell (every slot used): {v.message}")
             for v in check_rects(slots, straps, base.pdk) + wide_metal_violations(straps, base.pdk)]
    box = np.array([0, 0, tile.width_nm, tile.height_nm])
    for name, rects in (("slots", slots), ("STRAPS", straps)):
        if (rects[:, :2] < box[:2]).any() or (rects[:, 2:] > box[2:]).any():
            found.append(Violation("tile.box", 0, 0, f"{name} reach outside the tile box"))
    # A chunk cell (1..chunk_sites sites, every digit the encoding stores on each, and
    # the digits in turn) holds one via per site with a via digit, only on row-0 slots.
    cs, d = tile.chunk_sites, tile.site_bits
    row0 = {tuple(r) for r in slots[(slots[:, 1] < tile.site_pitch_y_nm)
                                    & (slots[:, 0] < cs * tile.site_pitch_x_nm)]}
    storable = [v for v, line in enumerate(tile.line_of_value) if line != -2]
    for n in range(1, min(cs, tile.sites_x) + 1):
        patterns = [[v] * n for v in storable] + [
            [storable[(i + k) % len(storable)] for i in range(n)] for k in range(len(storable))]
        for digits in patterns:
            value = sum(v << (d * i) for i, v in enumerate(digits))
            rects = chunk_via_rects(tile, rules.via_size_nm, g, n, value)
            vias = sum(tile.line_of_value[v] >= 0 for v in digits)
            if len(rects) != vias or any(tuple(r) not in row0 for r in rects.tolist()):
                found.append(Violation("chunk", 0, 0, f"chunk cell of {n} sites holds a via "
                                                      "off its slots"))
    _PROOFS[key] = found
    return found


def check_die(die: DieMaskResult | DieLayout, base: BaseArray,
              max_per_rule: int = 20) -> list[Violation]:
    """Rule violations of a closed die (empty list = clean); see the module docstring."""
    layout = die.layout if isinstance(die, DieMaskResult) else die
    if layout is None:
        raise ValueError("check_die needs the DieMaskResult of DieMaskWriter.close()")
    digest = hashlib.sha256(repr((base, max_per_rule, sorted(layout.tiles), layout.arrays))
                            .encode())
    for arr in (layout.wires, layout.route_vias, layout.bars, layout.density_pct):
        digest.update(np.ascontiguousarray(arr).tobytes())
    key = digest.hexdigest()
    if key not in _DIES:  # dies with the same tiles used, routes and fill share the result
        if len(_DIES) >= 16:
            _DIES.pop(next(iter(_DIES)))
        _DIES[key] = _check_layout(layout, base, max_per_rule)
    return list(_DIES[key])


def _fill_rules(fill: np.ndarray, layout: DieLayout, base: BaseArray,
                max_per_rule: int) -> list[Violation]:
    """Where the PDK rules fill apart from drawn metal (IHP TopMetal2:filler): fill (bars and
    whole arrays as boxes) keeps its clearance from the routes; each bar and array square
    stays within the size limits; squares keep the fill spacing (each array's first square
    and its neighbours in x and y: all squares of an array sit at one pitch)."""
    pdk, squares, samples = base.pdk, [], []
    for a in layout.arrays:
        first = (a.x_nm, a.y_nm, a.x_nm + a.size_nm, a.y_nm + a.size_nm)
        squares.append(first)
        samples.append(first)
        if a.columns > 1:
            samples.append((first[0] + a.pitch_nm, first[1], first[2] + a.pitch_nm, first[3]))
        if a.rows > 1:
            samples.append((first[0], first[1] + a.pitch_nm, first[2], first[3] + a.pitch_nm))
    as_rects = lambda rows: np.array(rows, np.int64).reshape(-1, 4)  # noqa: E731
    return (fill_clearance(fill, layout.wires, pdk, max_per_rule)
            + fill_sizes(np.concatenate([layout.bars, as_rects(squares)]), pdk, max_per_rule)
            + fill_spacing(as_rects(samples), pdk, max_per_rule))


def _check_layout(layout: DieLayout, base: BaseArray, max_per_rule: int) -> list[Violation]:
    rules, g, grid, tile = base.pdk.rules, base.pdk.grid_nm, base.tile_grid, base.weight_tile
    out = list(tile_proof(base))
    # 2. Tile boxes: apart from each other by the spacing rule, on the grid.
    for gap, axis in ((grid.pitch_x_nm - tile.width_nm, "x"),
                      (grid.pitch_y_nm - tile.height_nm, "y")):
        if gap < max(rules.top_metal_space_nm, rules.via_space_nm):
            out.append(Violation("tile.box", 0, 0, f"tiles only {gap} nm apart in {axis}"))
    if any(v % g for v in grid.origin_nm + (grid.pitch_x_nm, grid.pitch_y_nm)):
        out.append(Violation("grid", *grid.origin_nm, "tile origins off the grid"))
    used = sorted(layout.tiles)
    origins = np.array([grid.tile_origin_nm(c, r) for c, r in used], np.int64).reshape(-1, 2)
    boxes = np.concatenate([origins, origins + [tile.width_nm, tile.height_nm]], axis=1)
    # 3. Outside the tiles, flat (fill arrays as bounding boxes plus one sample block).
    array_boxes = np.array([[a.x_nm, a.y_nm, a.x_nm + (a.columns - 1) * a.pitch_nm + a.size_nm,
                             a.y_nm + (a.rows - 1) * a.pitch_nm + a.size_nm]
                            for a in layout.arrays], np.int64).reshape(-1, 4)
    metal = np.concatenate([layout.wires, layout.bars, array_boxes])
    out += check_rects(layout.route_vias, metal, base.pdk, max_per_rule=max_per_rule)
    fill = np.concatenate([layout.bars, array_boxes])
    out += _fill_rules(fill, layout, base, max_per_rule)
    out += wide_metal_violations(layout.wires, base.pdk, max_per_rule)
    samples = {(a.size_nm, a.pitch_nm, min(a.columns, 2), min(a.rows, 2)) for a in layout.arrays}
    for size, pitch, cols, rows in sorted(samples):
        xy = np.array([(i * pitch, j * pitch) for i in range(cols) for j in range(rows)])
        squares = np.concatenate([xy, xy + size], axis=1)
        out += [Violation(v.rule, v.x_nm, v.y_nm, f"fill array: {v.message}")
                for v in check_rects(np.zeros((0, 4)), squares, base.pdk)]
    # 2b. Clearance of everything outside from every used tile box.
    for kind, rects, reach in (("metal", metal, rules.top_metal_space_nm),
                               ("fill", fill, rules.fill_clearance),
                               ("via", layout.route_vias, rules.via_space_nm)):
        if not len(rects) or not len(boxes):
            continue
        # Buckets about one tile box wide: a box then covers at most 2 x 2 of them (a cell
        # of a few times ``reach`` would register every box in ~10^4 buckets). The pairs
        # found do not depend on the cell size, only the work does.
        cell = max(4 * reach, 1, tile.width_nm, tile.height_nm)
        p = _near_pairs(rects, boxes, reach, cell)
        if not len(p):
            continue
        a, b = rects[p[:, 0]], boxes[p[:, 1]]
        gx = np.maximum(a[:, 0], b[:, 0]) - np.minimum(a[:, 2], b[:, 2])
        gy = np.maximum(a[:, 1], b[:, 1]) - np.minimum(a[:, 3], b[:, 3])
        d2 = np.maximum(gx, 0) ** 2 + np.maximum(gy, 0) ** 2
        bad = np.unique(p[(d2 < reach ** 2) | ((gx <= 0) & (gy <= 0))], axis=0)
        for i, j in bad[:max_per_rule].tolist():
            c, r = used[j]
            out.append(Violation(f"{kind}.clearance", int(rects[i, 0]), int(rects[i, 1]),
                                 f"{kind} within {reach} nm of tile ({c}, {r})"))
        if len(bad) > max_per_rule:
            out.append(Violation(f"{kind}.clearance", 0, 0,
                                 f"... and {len(bad) - max_per_rule} more"))
    # 4. Density (exact, from the writer).
    lo, hi = rules.top_metal_density_min_pct, rules.top_metal_density_max_pct
    dens = layout.density_pct
    bad = np.argwhere((dens < lo) | (dens > hi))
    for ix, iy in bad[:max_per_rule].tolist():
        out.append(Violation("density", ix, iy, f"window ({ix}, {iy}) density "
                                                f"{dens[ix, iy]:.1f}% outside {lo}..{hi}%"))
    return out
