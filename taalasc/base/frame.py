"""The die around the weight tiles, as numbers (nm, die coordinates).

* The boundary (the PDK's prBoundary layer) over the whole die.
* The seal ring: a ring on each metal below the custom via, inside ``frame.seal_ring_nm``.
* Two supply rings on met4 (below_metal) in the pad ring, VPWR outside VGND; pads and I/O
  cells are not drawn.
* The power grid: per tile a VPWR and a VGND rail on met3 under its tie column (tile.py),
  joined to the next tile's rails across the channel by *bridges* on met2 (two via2 at each
  end, in the middle of the first and last cell rows, away from the rails' power stacks). The
  VPWR rails reach a met3 spine below the grid, the VGND rails one above it (two combs, no
  crossing); each spine reaches its supply ring and drops on it with an array of via3.
  Why bridges and not one rail per column: rails abutting from tile to tile merge into
  polygons as tall as the grid, and hierarchical DRC then checks each against every tile of
  its column (the sky130 deck: 32 s instead of 5 s on the demo base).
* A met4 pad under every dataflow port of every tile (taalasc.custom.routing), where a route's
  via lands.

Nothing of the base is on the custom layers (via4, met5) or their fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taalasc.base.recipe import Recipe
from taalasc.base.tile import TilePlan
from taalasc.config.base_array import BaseArray
from taalasc.custom.geometry import centred
from taalasc.custom.routing import ChannelRouter
from taalasc.errors import MaskError

Rect = tuple[int, int, int, int]

_MARGIN_NM = 1000      # between the frame or the grid and a spine
_SPINE_MIN_NM = 2000   # a spine's height at least
_VIA_PITCH_NM = 1000   # via3 arrays where a spine meets its ring


@dataclass(frozen=True)
class Bridge:
    """A rail carried across a gap on the bridge layer: cuts up to the rail layer at both
    ends, two each, centred on ``y_low`` and ``y_high``."""
    x: tuple[int, int]
    y_low: int
    y_high: int

    def metal(self, recipe: Recipe) -> Rect:
        """The bridge layer: past the outer cuts by as much as beside them."""
        reach = recipe.bridge_via_pitch_nm // 2 + (self.x[1] - self.x[0]) // 2
        return (self.x[0], self.y_low - reach, self.x[1], self.y_high + reach)

    def cuts(self, recipe: Recipe) -> list[Rect]:
        cx, h, d = (self.x[0] + self.x[1]) // 2, recipe.bridge_via_half_nm, recipe.bridge_via_pitch_nm // 2
        return [(cx - h, y - h, cx + h, y + h)
                for end in (self.y_low, self.y_high) for y in (end - d, end + d)]


def channel_bridges(base: BaseArray, tile: TilePlan) -> list[Bridge]:
    """The bridges across one channel, in the coordinates of the tile above it."""
    low = tile.bridge_y[1] - base.tile_grid.pitch_y_nm
    return [Bridge(x, low, tile.bridge_y[0]) for x in (tile.vpwr_rail_x, tile.vgnd_rail_x)]


@dataclass(frozen=True)
class FramePlan:
    boundary: Rect
    seal: list[Rect]                  # on every seal layer
    rings: dict[str, list[Rect]]      # met4, "VPWR" / "VGND"
    spines: dict[str, Rect]           # met3
    bridges: list[Bridge]             # from the spines to the first and last tile rows
    spine_vias: list[Rect]            # via3
    ports: np.ndarray                 # [n, 4] met4 pads under the route vias


def ring(die_w: int, die_h: int, inner: int, outer: int, gap: int = _MARGIN_NM) -> list[Rect]:
    """Four bars between insets ``inner`` < ``outer`` from the die edge: left, right, bottom,
    top, ``gap`` apart at the corners. Not closed on purpose: a closed ring merges into
    one polygon whose bounding box is the whole die, and hierarchical DRC then checks it
    against every tile (the sky130 deck took 4.5 times as long on the demo die)."""
    a, b = inner, outer
    return [(a, a, b, die_h - a), (die_w - b, a, die_w - a, die_h - a),
            (b + gap, a, die_w - b - gap, b), (b + gap, die_h - b, die_w - b - gap, die_h - a)]


def _via_array(area: Rect, half: int, pitch: int) -> list[Rect]:
    x0, y0, x1, y1 = area
    xs = range(x0 + pitch // 2, x1 - pitch // 2 + 1, pitch)
    ys = range(y0 + pitch // 2, y1 - pitch // 2 + 1, pitch)
    return [(x - half, y - half, x + half, y + half) for y in ys for x in xs]


def _overlap(a: Rect, b: Rect) -> Rect | None:
    r = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return r if r[0] < r[2] and r[1] < r[3] else None


def plan_frame(base: BaseArray, recipe: Recipe, tile: TilePlan) -> FramePlan:
    die, grid, g = base.die, base.tile_grid, base.pdk.grid_nm
    W, H = die.width_nm, die.height_nm
    snap = lambda v: v // g * g  # noqa: E731
    ox, oy = grid.origin_nm
    gx1 = ox + grid.columns * grid.pitch_x_nm
    gy1 = oy + grid.rows * grid.pitch_y_nm
    seal: list[Rect] = []
    rings: dict[str, list[Rect]] = {"VPWR": [], "VGND": []}
    frame_in = 0
    span = {"VPWR": (ox, gx1), "VGND": (ox, gx1)}
    # Corners and the bars of a split ring keep the below metal's spacing (IHP TopMetal1:
    # 1.64 um, more than the 1 um margin).
    gap = max(_MARGIN_NM, snap(2 * recipe.below_space_nm))
    if base.frame is not None:
        s, p = base.frame.seal_ring_nm, base.frame.pad_ring_nm
        seal = ring(W, H, snap(s // 10), snap(s - s // 10), gap)
        for net, (a, b) in (("VPWR", (1, 3)), ("VGND", (4, 6))):
            inner, outer = snap(s + a * p // 8), snap(s + b * p // 8)
            # A PDK that slots wide metal (IHP Slt.c: TopMetal1 over 30 um) gets the ring as
            # parallel rings no wider than that.
            n = 1 if not recipe.below_max_width_nm else \
                -(-(outer - inner + gap) // (recipe.below_max_width_nm + gap))
            width = snap((outer - inner - (n - 1) * gap) // n)
            for k in range(n):
                x0 = inner + k * (width + gap)
                rings[net] += ring(W, H, x0, x0 + width, gap)
            span[net] = (inner, W - inner)
        frame_in = s + p
    bottom = (frame_in + _MARGIN_NM, oy - 3 * _MARGIN_NM)
    top = (gy1 + _MARGIN_NM, min(gy1 + 7 * _MARGIN_NM, H - frame_in - _MARGIN_NM))
    for where, (y0, y1) in (("below", bottom), ("above", top)):
        if y1 - y0 < _SPINE_MIN_NM:
            raise MaskError(f"tile_grid: no room for the power-grid spine {where} the tile grid "
                            f"({y1 - y0} nm between it and the frame; {_SPINE_MIN_NM + 4 * _MARGIN_NM}"
                            " nm needed)")
    spines = {"VPWR": (span["VPWR"][0], bottom[0], span["VPWR"][1], bottom[1]),
              "VGND": (span["VGND"][0], top[0], span["VGND"][1], top[1])}
    # The first tile row's VPWR rails bridge down to their spine, the last row's VGND rails up.
    top_tile = oy + (grid.rows - 1) * grid.pitch_y_nm
    bridges = []
    for c in range(grid.columns):
        tx = grid.tile_origin_nm(c, 0)[0]
        bridges.append(Bridge((tx + tile.vpwr_rail_x[0], tx + tile.vpwr_rail_x[1]),
                              (bottom[0] + bottom[1]) // 2, oy + tile.bridge_y[0]))
        bridges.append(Bridge((tx + tile.vgnd_rail_x[0], tx + tile.vgnd_rail_x[1]),
                              top_tile + tile.bridge_y[1],
                              (top[0] + top[1]) // 2))
    vias: list[Rect] = []
    half = recipe.rail_via_half_nm
    for net in ("VPWR", "VGND"):
        for side in (bar for k, bar in enumerate(rings[net]) if k % 4 < 2):  # left, right
            area = _overlap(spines[net], side)
            if area is not None:
                inset = (area[0] + _MARGIN_NM // 2, area[1] + _MARGIN_NM // 2,
                         area[2] - _MARGIN_NM // 2, area[3] - _MARGIN_NM // 2)
                vias += _via_array(inset, half, _VIA_PITCH_NM)
    return FramePlan((0, 0, W, H), seal, rings, spines, bridges, vias,
                     port_pads(base, recipe.port_pad_grow_nm))


def port_pads(base: BaseArray, grow_nm: int = 0) -> np.ndarray:
    """A below-metal pad (the via enclosure all round, plus ``grow_nm`` where the base's
    rules ask for more) under every dataflow port of every tile, sorted: the places where a
    route's via may land."""
    rules, g = base.pdk.rules, base.pdk.grid_nm
    router = ChannelRouter(base)
    centres = sorted({xy for c in range(base.tile_grid.columns) for r in range(base.tile_grid.rows)
                      for kind in ("in", "out")
                      for xy in router.port_centres_nm(c, r, kind).values()})
    size = rules.via_size_nm + 2 * (rules.via_enclosure_below_nm + grow_nm)
    out = np.empty((len(centres), 4), np.int64)
    for k, (x, y) in enumerate(centres):
        (x0, x1), (y0, y1) = centred(x, size, g), centred(y, size, g)
        out[k] = (x0, y0, x1, y1)
    return out
