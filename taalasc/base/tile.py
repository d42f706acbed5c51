"""One weight tile of the base die, as numbers (nm, tile-relative; drawing is build.py's).

Top down, per bit site (the landing shape and tie pads come from taalasc.custom.geometry, the
contract with the custom layers):

* met4 (below_metal): one landing under both via slots of the site; per strap a tie pad
  under its tie via in the tie column right of the sites.
* via3 from each tie pad to its met3 rail: two vertical met3 rails under the tie column,
  VPWR (under the high straps' pads) and VGND (low straps'), which run the grid's height.
* Standard-cell rows (0.46 x 2.72 um sites for sky130_fd_sc_hd) fill the tile, alternate
  rows flipped so neighbours share a follow-pin met1 rail. The row that holds a site row's
  gates is the first whose gate pins fall inside that site row's landings; its gates are
  placed left to right, each with its input pin inside its own site's landing.
* A pin stack per gate: mcon, met1, via, met2, via2, met3, via3 straight up from the gate's
  input pin to the landing above it. So a via in the high slot ties the gate input to VPWR
  through the strap and its tie via, one in the low slot to VGND.
* A power stack (via, met2, via2) where each met1 rail crosses its met3 rail.

The 0.46 x 2.72 um cell grid does not divide the 1.6 x 6.4 um site pitch; the pin stack
absorbs the offset, since a landing is 1.18 x 4.38 um and the pin may sit anywhere under it
(at least the via3 enclosure inside).

Named for sky130; other PDKs use their own layers (recipe.py). A PDK whose cells no package
ships (IHP, GF180MCU) gets everything above but the rows and stacks: landings, tie pads, rail
vias and rails. Where the contract's tie pad is too narrow for both rail vias, the base
widens it to the right (IHP: TopVia1's 0.42 um enclosure), inside the tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taalasc.base.cells import StdCell, load_cell
from taalasc.base.recipe import CellLibrary, Recipe
from taalasc.base.rows import Placed, place_gates, row_cells
from taalasc.config.base_array import BaseArray
from taalasc.custom.geometry import landing_rects, tie_pad_rects
from taalasc.errors import MaskError


@dataclass(frozen=True)
class RowPlan:
    """The standard-cell rows under a tile (recipes with a cell library)."""
    site_nm: tuple[int, int]       # placement site (width, row height)
    row_sites: int                 # sites per standard-cell row
    rows: int                      # standard-cell rows in the tile
    gate_sites: tuple[int, ...]    # per bit-site column: its gate's site in a gate row
    gate_row: tuple[Placed, ...]   # the cells of a row that holds gates
    filler_row: tuple[Placed, ...]
    pin_xy: tuple[int, int]        # the gate pin stack's centre, from the gate's origin
    site_row_of: tuple[int | None, ...]  # per cell row: the site row whose gates it holds
    cells: dict[str, StdCell]

    @property
    def row_width_nm(self) -> int:
        return self.row_sites * self.site_nm[0]

    @property
    def height_nm(self) -> int:
        return self.rows * self.site_nm[1]

    @property
    def pin_stacks(self) -> list[tuple[int, int]]:
        """Pin-stack centres in a gate row's own (unflipped) coordinates."""
        return [(s * self.site_nm[0] + self.pin_xy[0], self.pin_xy[1]) for s in self.gate_sites]


@dataclass(frozen=True)
class TilePlan:
    landings: np.ndarray           # [sites, 4] below_metal
    tie_pads: np.ndarray           # [2 * sites_y, 4] below_metal, VPWR (high strap) first per row
    tie_vias: np.ndarray           # [2 * sites_y, 4] rail via, same order
    vpwr_rail_x: tuple[int, int]   # the rails under the tie column
    vgnd_rail_x: tuple[int, int]
    rail_y: tuple[int, int]        # both rails' extent
    bridge_y: tuple[int, int]      # where bridges meet the rails: near the bottom, the top
    rows: RowPlan | None           # None: a base without standard cells


def _snap_down(value: int, grid: int) -> int:
    return value // grid * grid


def plan_tile(base: BaseArray, recipe: Recipe) -> TilePlan:
    """Everything under one weight tile, or MaskError naming what does not fit."""
    pdk, tile = base.pdk, base.weight_tile
    grid, rules = pdk.grid_nm, pdk.rules
    gx, gy = recipe.landing_grow_nm
    landings = landing_rects(tile, rules.via_size_nm, rules.via_enclosure_below_nm, grid) \
        + np.array([-gx, -gy, gx, gy])
    px, py = recipe.tie_pad_grow_nm
    pads = tie_pad_rects(tile, rules.via_size_nm, rules.via_enclosure_below_nm, grid) \
        + np.array([-px, -py, px, py])
    _check_spacing(tile, landings, pads, recipe.below_space_nm, pdk.layers.below_metal.name)
    # Rail vias: at the pad's left end under a high strap (VPWR), at its right end under a
    # low one (VGND), so the two rails under the tie column sit side by side; where the
    # contract's pad is too narrow for both, the base widens it to the right, inside the tile.
    v, m, e = 2 * recipe.rail_via_half_nm, recipe.rail_via_enclosure_above_nm, \
        recipe.rail_via_enclosure_nm
    x_high = int(pads[0, 0]) + m
    x_low = max(int(pads[1, 2]) - m - v, x_high + v + 2 * e + recipe.rail_space_nm)
    pads[:, 2] = np.maximum(pads[:, 2], x_low + v + m)
    if pads[0, 2] > tile.width_nm:
        raise MaskError(f"weight_tile: the tie column ({tile.width_nm - int(pads[0, 0])} nm "
                        f"from its pads' left edge) cannot hold the VPWR and VGND "
                        f"{recipe.rail} rails side by side ({int(pads[0, 2] - pads[0, 0])} "
                        "nm needed); widen the site pitch or set weight_tile.tie_columns")
    cy = (pads[:, 1] + pads[:, 3]) // 2
    cy = cy - cy % grid
    high = np.arange(len(pads)) % 2 == 0
    x0 = np.where(high, x_high, x_low)
    vias = np.stack([x0, cy - v // 2, x0 + v, cy + v // 2], axis=1)
    vpwr = (x_high - e, x_high + v + e)
    vgnd = (x_low - e, x_low + v + e)

    lib = recipe.cells
    bridge_reach = recipe.bridge_via_pitch_nm // 2 + (vpwr[1] - vpwr[0]) // 2
    if lib is None:
        # Rails the tile's height; bridges meet them one bridge length in from each end.
        margin = bridge_reach + recipe.bridge_via_pitch_nm
        return TilePlan(landings, pads, vias, vpwr, vgnd, (0, tile.height_nm),
                        (margin, tile.height_nm - margin), None)
    rows = _plan_rows(base, lib, landings, vpwr, recipe)
    # Past the first and last row edges far enough to hold their power stacks.
    reach = dict(lib.power_stack)[recipe.bridge_via] + recipe.rail_via_enclosure_nm
    row_h = lib.site_nm[1]
    return TilePlan(landings, pads, vias, vpwr, vgnd,
                    (-reach, max(tile.height_nm, rows.height_nm + reach)),
                    (row_h // 2, rows.height_nm - row_h // 2), rows)


def _check_spacing(tile, landings: np.ndarray, pads: np.ndarray, space_nm: int,
                   layer: str) -> None:
    """Landings and tie pads keep below_metal's spacing: beside each other, row to row, and
    the last landing of a row to its tie pads; MaskError naming the key to change."""
    w, h = int(landings[0, 2] - landings[0, 0]), int(landings[0, 3] - landings[0, 1])
    gaps = [("weight_tile.site_pitch_x_nm", tile.site_pitch_x_nm - w,
             "between neighbouring landings"),
            ("weight_tile.site_pitch_y_nm", tile.site_pitch_y_nm - h, "between landing rows"),
            ("weight_tile.site_pitch_y_nm", int(pads[1, 1] - pads[0, 3]),
             "between a site row's two tie pads"),
            ("weight_tile.tie_columns", int(pads[0, 0] - landings[tile.sites_x - 1, 2]),
             "between the last landing of a row and its tie pads")]
    for key, gap, where in gaps:
        if gap < space_nm:
            raise MaskError(f"{key}: {gap} nm {where} on {layer}; the base die needs "
                            f"{space_nm} nm")


def _plan_rows(base: BaseArray, lib: CellLibrary, landings: np.ndarray,
               vpwr: tuple[int, int], recipe: Recipe) -> RowPlan:
    """The standard-cell rows: a gate per bit site whose input pin lies under its landing."""
    grid, tile = base.pdk.grid_nm, base.weight_tile
    site_w, row_h = lib.site_nm
    names = (lib.gate, lib.tap) + lib.fillers
    cells = {name: load_cell(lib, name) for name in names}
    widths = {name: c.width_nm // site_w for name, c in cells.items()}
    gate = cells[lib.gate]
    pin_xy = _pin_centre(gate, lib, grid)

    # Rows run the tile's width, rounded up to whole sites (they may reach a few nm into the
    # channel, where the base has nothing else below the top metal).
    row_sites = -(-tile.width_nm // site_w)
    rows = tile.height_nm // row_h
    if row_sites * site_w >= base.tile_grid.pitch_x_nm:
        raise MaskError("tile_grid.pitch_x_nm: the standard-cell rows under a tile would "
                        "touch the next tile's")
    # Gate pin windows: the pin stack's rail via inside the landing by its enclosure, its
    # rail-layer pad one spacing left of the VPWR rail.
    via_reach = recipe.rail_via_half_nm + recipe.rail_via_enclosure_above_nm
    right = vpwr[0] - recipe.rail_space_nm - dict(lib.pin_stack)[recipe.rail]
    windows = [(int(landings[i, 0]) + via_reach, min(int(landings[i, 2]) - via_reach, right))
               for i in range(tile.sites_x)]
    gates = place_gates(windows, pin_xy[0], widths[lib.gate], site_w, row_sites)
    gate_row = row_cells(gates, lib, widths, row_sites)
    filler_row = row_cells([], lib, widths, row_sites)

    # Each site row takes the first cell row whose (possibly flipped) pin lies in its landings.
    site_row_of: list[int | None] = [None] * rows
    k = 0
    for j in range(tile.sites_y):
        lo = int(landings[j * tile.sites_x, 1]) + via_reach
        hi = int(landings[j * tile.sites_x, 3]) - via_reach
        while k < rows and not lo <= _pin_y(k, pin_xy[1], row_h) <= hi:
            k += 1
        if k == rows:
            raise MaskError(f"weight_tile: no standard-cell row puts its gate pins under site "
                            f"row {j}'s landings ({lo}..{hi} nm)")
        site_row_of[k] = j
        k += 1
    return RowPlan(lib.site_nm, row_sites, rows, tuple(gates), gate_row, filler_row, pin_xy,
                   tuple(site_row_of), cells)


def _pin_y(row: int, pin_y: int, row_h: int) -> int:
    """A gate pin's y in the tile: odd rows are flipped about their middle."""
    return row * row_h + (pin_y if row % 2 == 0 else row_h - pin_y)


def _pin_centre(gate: StdCell, lib: CellLibrary, grid: int) -> tuple[int, int]:
    """The pin stack's centre on the gate's input pin: the pin rectangle's centre, on the
    grid, with the first cut inside the pin."""
    rects = gate.pins.get(lib.gate_pin)
    if not rects:
        raise MaskError(f"{gate.name}: no {lib.gate_pin} pin on li1 in its LEF")
    x0, y0, x1, y1 = max(rects, key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
    cx, cy = _snap_down((x0 + x1) // 2, grid), _snap_down((y0 + y1) // 2, grid)
    half = lib.pin_stack[0][1]
    if not (x0 <= cx - half and cx + half <= x1 and y0 <= cy - half and cy + half <= y1):
        raise MaskError(f"{gate.name}: pin {lib.gate_pin} is too small for a "
                        f"{2 * half} nm {lib.pin_stack[0][0]} cut")
    return cx, cy
