"""The base die of a base array as one GDSII library, and what it is made of.

Hierarchy keeps the file small and the same for every model: one tile cell (``TLB_TILE``)
holds the landings, tie pads and the standard-cell rows of one weight tile, and the die cell
places it with one array reference over the grid. Rows are two cells (a gate row and a filler
row), each referenced flipped or not; the pin and power via stacks are cells of their own.
Library cells keep their PDK names (sky130_fd_sc_hd__*), ours start with ``TLB_``, so they
never clash with the custom layers' cells. Written with gdstk at a fixed timestamp: the same
base array and library give the same bytes.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import gdstk

from taalasc.base.frame import Bridge, FramePlan, channel_bridges, plan_frame
from taalasc.base.recipe import Recipe, recipe_for
from taalasc.base.tile import TilePlan, plan_tile
from taalasc.config.base_array import BaseArray

PREFIX = "TLB_"
TIMESTAMP = datetime.datetime(2000, 1, 1)   # as taalasc.formats.gdsii: fixed, for reproducibility


@dataclass(frozen=True)
class CellUse:
    """How many of one library cell the base die holds, and what they cost."""
    name: str
    count: int
    area_um2: float        # count x LEF SIZE
    transistors: int       # count x devices in the cell's SPICE netlist


@dataclass(frozen=True)
class BaseDie:
    library: gdstk.Library
    top: str
    tile: TilePlan
    frame: FramePlan
    usage: list[CellUse]


def top_cell_name(base: BaseArray) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", base.name)


def build_base(base: BaseArray) -> BaseDie:
    """Draw the base die of ``base`` in memory (MaskError when it cannot be drawn)."""
    from taalasc.config.base_array import require_base_die_encoding

    require_base_die_encoding(base)
    recipe = recipe_for(base.pdk)
    tile = plan_tile(base, recipe)
    frame = plan_frame(base, recipe, tile)
    lib = gdstk.Library(name=PREFIX + "BASE", unit=1e-9, precision=1e-9)
    layer = _layers(base, recipe)
    rows = None
    if tile.rows is not None:
        rows = _row_cells(lib, tile, recipe, layer)
    tile_cell = _tile_cell(lib, base, tile, recipe, rows, layer)
    top = lib.new_cell(top_cell_name(base))
    _frame(top, frame, recipe, layer)
    g = base.tile_grid
    top.add(gdstk.Reference(tile_cell, g.origin_nm, columns=g.columns, rows=g.rows,
                            spacing=(g.pitch_x_nm, g.pitch_y_nm)))
    if g.rows > 1:   # the bridges across the channels between tile rows
        bridges = lib.new_cell(PREFIX + "BRIDGES")
        for bridge in channel_bridges(base, tile):
            _bridge(bridges, bridge, recipe, layer)
        top.add(gdstk.Reference(bridges, (g.origin_nm[0], g.origin_nm[1] + g.pitch_y_nm),
                                columns=g.columns, rows=g.rows - 1,
                                spacing=(g.pitch_x_nm, g.pitch_y_nm)))
    return BaseDie(lib, top.name, tile, frame, cell_usage(base, tile))


def write_base(die: BaseDie, path: Path) -> None:
    die.library.write_gds(str(path), max_points=8190, timestamp=TIMESTAMP)


def cell_report(base: BaseArray) -> list[CellUse]:
    """The library cells the base die of ``base`` is made of, without drawing it (for
    reports: area and transistor counts of the cells actually placed)."""
    return cell_usage(base, plan_tile(base, recipe_for(base.pdk)))


def cell_usage(base: BaseArray, tile: TilePlan) -> list[CellUse]:
    """Library cells in the whole die, by name: counts, LEF area, transistors (none for a
    base without standard cells)."""
    rows = tile.rows
    if rows is None:
        return []
    gate_rows = sum(1 for j in rows.site_row_of if j is not None)
    per_tile: dict[str, int] = {}
    for placed, times in ((rows.gate_row, gate_rows), (rows.filler_row, rows.rows - gate_rows)):
        for _, name in placed:
            per_tile[name] = per_tile.get(name, 0) + times
    tiles = base.tile_grid.tiles
    out = []
    for name in sorted(per_tile):
        cell, n = rows.cells[name], per_tile[name] * tiles
        out.append(CellUse(name, n, n * cell.width_nm * cell.height_nm * 1e-6,
                           n * cell.transistors))
    return out


def cell_metrics(base: BaseArray) -> list:
    """Report metrics of the cells the base die of ``base`` is drawn from (``[]`` for a base
    without standard cells): per die, their count, LEF area and SPICE transistors. For a
    compile that draws the base die (``--merge``), beside the formula figures of
    taalasc.report.area: these count the cells actually placed, the gates the bit sites
    program and the taps and fillers around them, not the datapath's adders."""
    from taalasc.report.metrics import Metric

    usage = cell_report(base)
    if not usage:
        return []
    cells = recipe_for(base.pdk).cells
    source = f"placed, {cells.library} LEF/SPICE"
    count = sum(u.count for u in usage)
    gates = next(u for u in usage if u.name == cells.gate)
    inputs = {u.name: (u.count, source) for u in usage}
    return [
        Metric("base__cells__count", count, "cells", "Σ cells placed in the base die",
               inputs, description="per die: standard cells of the drawn base die"),
        Metric("base__cells__area", round(sum(u.area_um2 for u in usage) * 1e-6, 6), "mm²",
               "Σ count × LEF width × height", {u.name: (round(u.area_um2 * 1e-6, 6), source)
                                                 for u in usage},
               higher_is_better=False, description="per die: area of the drawn base die's "
               "standard cells"),
        Metric("base__cells__transistors", sum(u.transistors for u in usage), "transistors",
               "Σ count × devices in the cell's SPICE netlist",
               {u.name: (u.transistors, source) for u in usage},
               description="per die, the cells drawn (the bit sites' gates, taps, fillers); "
                           "the datapath's adders are in design__transistors__count"),
        Metric("base__gates__count", gates.count, "gates",
               f"{cells.gate} cells placed: one per bit site",
               {cells.gate: (gates.count, source)}, description="per die"),
    ]


# --- drawing ------------------------------------------------------------------------------

def _names(lib: gdstk.Library) -> set[str]:
    return {c.name for c in lib.cells}


def _layers(base: BaseArray, recipe: Recipe) -> dict[str, tuple[int, int]]:
    layers = base.pdk.layers
    out = dict(recipe.layers)
    out["below"] = (layers.below_metal.gds_layer, layers.below_metal.gds_datatype)
    out["boundary"] = (layers.boundary.gds_layer, layers.boundary.gds_datatype)
    return out


def _rect(cell: gdstk.Cell, r, lay: tuple[int, int]) -> None:
    cell.add(gdstk.rectangle((int(r[0]), int(r[1])), (int(r[2]), int(r[3])),
                             layer=lay[0], datatype=lay[1]))


def _label(cell: gdstk.Cell, text: str, r, lay: tuple[int, int]) -> None:
    cell.add(gdstk.Label(text, ((int(r[0]) + int(r[2])) // 2, (int(r[1]) + int(r[3])) // 2),
                         layer=lay[0], texttype=lay[1]))


def _stack_cell(lib, name, stack, layer) -> gdstk.Cell:
    """Concentric squares centred on the origin, one per (layer, half size)."""
    cell = lib.new_cell(name)
    for lay, half in stack:
        _rect(cell, (-half, -half, half, half), layer[lay])
    return cell


def _row_cells(lib: gdstk.Library, tile: TilePlan, recipe: Recipe, layer
               ) -> dict[str, gdstk.Cell]:
    """The library cells the rows use, the via stacks, and the two row cells (gate, filler)."""
    cells, plan = recipe.cells, tile.rows
    used = {name for _, name in plan.gate_row + plan.filler_row}
    for cell in (c for name, c in plan.cells.items() if name in used):
        # The library's GDS is in um; read it in nm so every coordinate is an integer.
        for c in gdstk.read_gds(str(cell.gds), unit=1e-9).cells:
            if c.name not in _names(lib):
                lib.add(c)
    pin = _stack_cell(lib, PREFIX + "PIN_STACK", cells.pin_stack, layer)
    power = _stack_cell(lib, PREFIX + "POWER_STACK", cells.power_stack, layer)
    return {kind: _row_cell(lib, kind, placed, tile, recipe, layer, pin, power)
            for kind, placed in (("GATE", plan.gate_row), ("FILL", plan.filler_row))}


def _row_cell(lib, kind, placed, tile: TilePlan, recipe: Recipe, layer, pin, power
              ) -> gdstk.Cell:
    """One standard-cell row in its own coordinates: VGND rail at y = 0, VPWR at the row
    height; both rails drawn on the row metal (the cells carry them only as pins) with a
    power stack where each crosses its rail-layer rail."""
    plan = tile.rows
    site_w, row_h = plan.site_nm
    cell = lib.new_cell(f"{PREFIX}ROW_{kind}")
    for site, name in placed:
        cell.add(gdstk.Reference(lib[name], (site * site_w, 0)))
    half = recipe.cells.rail_half_nm
    for y in (0, row_h):
        _rect(cell, (0, y - half, plan.row_width_nm, y + half), layer[recipe.cells.row_metal])
    vgnd_x = (tile.vgnd_rail_x[0] + tile.vgnd_rail_x[1]) // 2
    vpwr_x = (tile.vpwr_rail_x[0] + tile.vpwr_rail_x[1]) // 2
    cell.add(gdstk.Reference(power, (vgnd_x, 0)), gdstk.Reference(power, (vpwr_x, row_h)))
    if kind == "GATE":
        for xy in plan.pin_stacks:
            cell.add(gdstk.Reference(pin, xy))
    return cell


def _tile_cell(lib, base: BaseArray, tile: TilePlan, recipe: Recipe, rows, layer
               ) -> gdstk.Cell:
    wt = base.weight_tile
    landing = lib.new_cell(PREFIX + "LANDING")
    _rect(landing, tile.landings[0], layer["below"])
    tie = lib.new_cell(PREFIX + "TIE")
    for k in (0, 1):
        _rect(tie, tile.tie_pads[k], layer["below"])
        _rect(tie, tile.tie_vias[k], layer[recipe.rail_via])
    cell = lib.new_cell(PREFIX + "TILE")
    cell.add(gdstk.Reference(landing, (0, 0), columns=wt.sites_x, rows=wt.sites_y,
                             spacing=(wt.site_pitch_x_nm, wt.site_pitch_y_nm)))
    cell.add(gdstk.Reference(tie, (0, 0), columns=1, rows=wt.sites_y,
                             spacing=(wt.site_pitch_x_nm, wt.site_pitch_y_nm)))
    # The tile's rails; bridges join them to the next tile's (frame.py).
    y0, y1 = tile.rail_y
    for x0, x1 in (tile.vpwr_rail_x, tile.vgnd_rail_x):
        _rect(cell, (x0, y0, x1, y1), layer[recipe.rail])
    if tile.rows is None:
        return cell
    plan = tile.rows
    row_h = plan.site_nm[1]
    for k, site_row in enumerate(plan.site_row_of):
        row = rows["GATE" if site_row is not None else "FILL"]
        if k % 2 == 0:
            cell.add(gdstk.Reference(row, (0, k * row_h)))
        else:   # flipped about the row's middle: shares its lower rail (VPWR) with row k - 1
            cell.add(gdstk.Reference(row, (0, (k + 1) * row_h), x_reflection=True))
    return cell


def _frame(top: gdstk.Cell, frame: FramePlan, recipe: Recipe, layer) -> None:
    _rect(top, frame.boundary, layer["boundary"])
    for lay in recipe.seal_layers + ("below",):
        for r in frame.seal:
            _rect(top, r, layer[lay])
    rail_label = layer[recipe.rail + ".label"]
    for net in ("VPWR", "VGND"):
        for r in frame.rings[net]:
            _rect(top, r, layer["below"])
        if frame.rings[net]:
            _label(top, net, frame.rings[net][0], layer["below.label"])
        _rect(top, frame.spines[net], layer[recipe.rail])
        _label(top, net, frame.spines[net], rail_label)
    for r in frame.spine_vias:
        _rect(top, r, layer[recipe.rail_via])
    for bridge in frame.bridges:
        _bridge(top, bridge, recipe, layer)
    for r in frame.ports:
        _rect(top, r, layer["below"])


def _bridge(cell: gdstk.Cell, bridge: Bridge, recipe: Recipe, layer) -> None:
    _rect(cell, bridge.metal(recipe), layer[recipe.bridge])
    for r in bridge.cuts(recipe):
        _rect(cell, r, layer[recipe.bridge_via])


# --- the base folder ----------------------------------------------------------------------

def _tile_summary(tile: TilePlan) -> dict | None:
    """The cell rows under a tile, for the manifest (None: a base without cells)."""
    rows = tile.rows
    if rows is None:
        return None
    return {"rows": rows.rows, "gate_rows": sum(j is not None for j in rows.site_row_of),
            "row_sites": rows.row_sites}


BASE_FORMAT = "taalasc-base/1"
BASE_FILE = "base.gds"


def base_inputs(base: BaseArray) -> dict:
    """What the base die is drawn from: the base YAML, its PDK, the cell library, taalasc."""
    from importlib.metadata import PackageNotFoundError, version

    from taalasc import __version__
    from taalasc.outdir import sha256_file

    recipe = recipe_for(base.pdk)
    cells = recipe.cells
    try:
        cells_version = version(cells.package) if cells else None
    except PackageNotFoundError:
        cells_version = None
    return {"base_array": {"name": base.name, "sha256": sha256_file(Path(base.path))},
            "pdk": {"name": base.pdk.name, "sha256": sha256_file(Path(base.pdk.path))},
            "cells": cells and {"package": cells.package, "version": cells_version,
                                "library": cells.library},
            "tool": {"name": "taalasc", "version": __version__}}


def write_base_folder(base: BaseArray, out_dir: Path, force: bool = False) -> dict:
    """Build the base die into ``out_dir`` (replaced as a whole): base.gds and manifest.json.
    Returns the manifest."""
    import hashlib
    import json
    import time

    from taalasc.outdir import MANIFEST, sha256_file, staged_output

    start = time.perf_counter()
    die = build_base(base)
    inputs = base_inputs(base)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    with staged_output(out_dir, inputs_digest=digest, force=force) as staging:
        path = staging / BASE_FILE
        write_base(die, path)
        manifest = {
            "format": BASE_FORMAT, "inputs": inputs, "inputs_digest": digest,
            "top_cell": die.top, "file": BASE_FILE,
            "outputs": {BASE_FILE: {"bytes": path.stat().st_size, "sha256": sha256_file(path)}},
            "tile": _tile_summary(die.tile),
            "cells": [{"name": u.name, "count": u.count, "area_um2": round(u.area_um2, 4),
                       "transistors": u.transistors} for u in die.usage],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["seconds"] = time.perf_counter() - start
    return manifest
