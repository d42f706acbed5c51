"""LVS-style extraction: which rail every bit site's gate input reaches, from connectivity.

KLayout's netlist extractor (``klayout.db.LayoutToNetlist``) connects the real layer stack of
a die: top metal (with its fill) - custom via - the metal below (the base die's landings and
tie pads) and, on a merged die, the base's supply path under the tie pads (``RAILS``), with
its VPWR/VGND labels. Small probe squares, drawn by us on layers of their own and
connected to the metal below only, mark every bit site's landing (its gate input) and every
tie pad (VPWR under a high strap, VGND under a low one; taalasc.custom.geometry). One
extraction, then one net-level query (``evaluate_nets``) counts, for the net of every landing
probe, the VPWR and VGND tie pads it reaches: a 1 is a net with VPWR pads only, a 0 one
with VGND pads only, no pad is a floating gate input, both is a short.

Without a merged die (the compile's custom layers alone) the landings and tie pads are drawn
here from the base array's geometry, so the extraction proves the custom layers (vias on
the right strap, straps whole, tie vias present, no strap joined to another) against the
base array's design, not against a drawn base die.

Fill on the top metal's fill datatype floats: it is connected as top metal only when some
of it touches drawn top metal (then it could join two nets; the count is reported). Flat
regions are used: on these dies the hierarchical extractor spends its time on the many
tile cells against the base's landing array (twice as slow on the demo die).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.custom.geometry import landing_rects, tie_pad_rects
from taalasc.errors import MaskError

Layer = tuple[int, int]
PROBE_HALF_NM = 10   # probe squares: 20 nm, inside any landing or pad


@dataclass(frozen=True)
class RailLayers:
    """The base die's supply path under the tie pads, top down (GDS layer/datatype): the via
    under the pads, the rail metal, and the via and metal that carry the rails on to the
    labelled supply (the issue-14 base: met3 rails under each tile's tie column, met2 bridges
    across the channels to met3 spines). Labels: on the metal below the custom via, then on
    each metal of the stack. Not the top metal's (the PDK's top_metal_label): the compile
    labels its own straps VPWR / VGND there, which names a strap's net as intended but is no
    evidence that its tie pad reaches the base die's supply; the base's labels are."""
    stack: tuple[Layer, Layer, Layer, Layer]     # via, metal, via, metal
    labels: tuple[Layer, Layer, Layer]
    source: str


RAILS: dict[str, RailLayers] = {
    "sky130": RailLayers(((70, 44), (70, 20), (69, 44), (69, 20)),
                         ((71, 5), (70, 5), (69, 5)),
                         "google/skywater-pdk docs/rules/gds_layers.csv: via3 70/44, met3 "
                         "70/20, via2 69/44, met2 69/20; labels met4 71/5, met3 70/5, met2 69/5"),
    "ihp-sg13g2": RailLayers(((125, 0), (67, 0), (66, 0), (50, 0)),
                             ((126, 25), (67, 25), (50, 25)),
                             "IHP ihp-sg13g2 rule_decks/layers_def.drc: TopVia1 125/0, Metal5 "
                             "67/0, Via4 66/0, Metal4 50/0; texts 126/25, 67/25, 50/25"),
    "gf180mcu": RailLayers(((40, 0), (42, 0), (38, 0), (36, 0)),
                           ((46, 10), (42, 10), (36, 10)),
                           "gf180mcuD_mr.drc: Via3 40/0, Metal3 42/0, Via2 38/0, Metal2 36/0; "
                           "labels 46/10, 42/10, 36/10"),
}
_RAIL_NAMES = ("rail_via", "rail_metal", "bridge_via", "bridge_metal")
_LABELS = (("label_below", "below"), ("label_rail", "rail_metal"), ("label_bridge", "bridge_metal"))


@dataclass
class Connectivity:
    """One die's extraction, per used tile (in the order given) and site / tie pad."""
    top_cell: str
    vpwr: np.ndarray            # int64 [tiles, sites]: VPWR tie pads on the landing's net
    vgnd: np.ndarray            # int64 [tiles, sites]
    pad_vpwr: np.ndarray        # int64 [tiles, 2 * sites_y]: per tie pad (high strap first)
    pad_vgnd: np.ndarray
    pad_names: np.ndarray       # object [tiles, 2 * sites_y]: the pad net's label(s), "" if none
    vias_on_nothing: np.ndarray  # int64 [n, 4] nm: custom vias touching no metal below
    outside_tiles: np.ndarray   # bool [n]: ... of them outside the used tiles (route vias)
    vias_not_checked: int       # custom-only: vias outside the used tiles (route vias)
    fill_touching: int          # top-metal fill shapes touching drawn top metal
    labels: int                 # rail label texts found
    shapes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def connect_die(path: Path, base: BaseArray, tiles: list[tuple[int, int]], *,
                merged: bool, rails: bool) -> Connectivity:
    """Extract one die file (``merged``: base + custom layers; else the custom layers, with
    landings and tie pads drawn from the base array). ``rails``: also connect the rail via
    and metal and the labels (a merged die only), so the pads' nets are the supply nets."""
    import klayout.db as kdb

    clock = _Clock()
    pdk, tile = base.pdk, base.weight_tile
    layers = pdk.layers
    own = {"via": layers.via, "top": layers.top_metal, "fill": layers.top_metal_fill,
           "below": layers.below_metal}
    wanted: dict[str, Layer] = {k: (v.gds_layer, v.gds_datatype) for k, v in own.items()}
    rail = RAILS.get(pdk.name) if rails else None
    if rails and rail is None:
        raise MaskError(f"PDK {pdk.name!r}: the layers under its tie pads are not known")
    if rail is not None:
        wanted.update(zip(_RAIL_NAMES, rail.stack))
        wanted.update(zip((label for label, _ in _LABELS), rail.labels))
    ly = kdb.Layout()
    options = kdb.LoadLayoutOptions()
    layer_map = kdb.LayerMap()
    for k, (name, (lay, dt)) in enumerate(wanted.items()):
        layer_map.map(kdb.LayerInfo(lay, dt), k)
    options.layer_map = layer_map
    options.create_other_layers = False   # standard cells' lower layers are never loaded
    try:
        ly.read(str(path), options)
    except RuntimeError as exc:
        raise MaskError(f"{path}: KLayout cannot read it ({str(exc).splitlines()[0]})") from None
    tops = list(ly.each_top_cell())
    if len(tops) != 1:
        raise MaskError(f"{path}: expected one top cell, found {len(tops)}")
    top = ly.cell(tops[0])
    index = {name: ly.layer(kdb.LayerInfo(*ld)) for name, ld in wanted.items()}
    for name in ("probe", "probe_vpwr", "probe_vgnd"):
        index[name] = ly.layer()   # anonymous: never one of the file's layers
    _draw_probes(ly, top, index, base, tiles, synthetic=not merged)
    clock.lap("read")

    window = _window(base, tiles) if merged else None

    def flat(name):
        if window is None:
            return kdb.Region(top.begin_shapes_rec(index[name]))
        return kdb.Region(kdb.RecursiveShapeIterator(ly, top, index[name], window, False))

    regions = {name: flat(name) for name in ("via", "top", "below", "probe", "probe_vpwr",
                                              "probe_vgnd")}
    # Fill floats unless it touches drawn metal; its arrays stay hierarchical for the test.
    dss = kdb.DeepShapeStore()
    fill_deep = kdb.Region(top.begin_shapes_rec(index["fill"]), dss)
    touching = fill_deep.interacting(kdb.Region(top.begin_shapes_rec(index["top"]), dss))
    fill_touching = touching.count()
    if fill_touching:
        regions["top"] += flat("fill")
    chain = [("top", "via"), ("via", "below"), ("below", "probe"), ("below", "probe_vpwr"),
             ("below", "probe_vgnd")]
    texts = {}
    if rail is not None:
        regions.update((name, flat(name)) for name in _RAIL_NAMES)
        chain += list(zip(("below",) + _RAIL_NAMES[:-1], _RAIL_NAMES))
        texts = {label: kdb.Texts(top.begin_shapes_rec(index[label]) if window is None else
                                  kdb.RecursiveShapeIterator(ly, top, index[label], window, False))
                 for label, _ in _LABELS}
    l2n = kdb.LayoutToNetlist(top.name, ly.dbu)
    for name, region in regions.items():
        l2n.register(region, name)
    for name, text in texts.items():
        l2n.register(text, name)
    for a, b in chain:
        l2n.connect(regions[a], regions[b])
    for region in regions.values():
        l2n.connect(region)
    for label, metal in _LABELS:
        if label in texts:
            l2n.connect(regions[metal], texts[label])
    clock.lap("layers")
    l2n.extract_netlist()
    clock.lap("extract")

    slot_of = np.full(base.tile_grid.tiles, -1, np.int64)
    for k, (column, row) in enumerate(tiles):
        slot_of[row * base.tile_grid.columns + column] = k
    pads = {"pv": regions["probe_vpwr"], "pg": regions["probe_vgnd"]}
    site_v = np.zeros((len(tiles), tile.sites), np.int64)
    site_g = np.zeros_like(site_v)
    xy, v, g, _ = _net_counts(l2n, regions["probe"], pads, with_names=False)
    k, site, _ = _locate(xy, base, slot_of)
    site_v[k, site], site_g[k, site] = v, g
    n_pads = 2 * tile.sites_y
    pad_v = np.zeros((len(tiles), n_pads), np.int64)
    pad_g = np.zeros_like(pad_v)
    pad_names = np.full((len(tiles), n_pads), "", dtype=object)
    for name in ("probe_vpwr", "probe_vgnd"):
        xy, v, g, names = _net_counts(l2n, regions[name], pads, with_names=rail is not None)
        k, _, pad = _locate(xy, base, slot_of)
        pad_v[k, pad], pad_g[k, pad], pad_names[k, pad] = v, g, names
    clock.lap("nets")

    # Hierarchical here: 10x faster than flat regions for this one test.
    via_deep = kdb.Region(top.begin_shapes_rec(index["via"]), dss)
    below_deep = kdb.Region(top.begin_shapes_rec(index["below"]), dss)
    boxes = np.array([(b.left, b.bottom, b.right, b.top) for b in
                      (p.bbox() for p in via_deep.not_interacting(below_deep).each())],
                     np.int64).reshape(-1, 4)
    in_tile = _in_used_tiles(boxes, base, slot_of)
    not_checked = 0
    if not merged:   # route vias land on the base's port pads, which are not drawn here
        not_checked = int((~in_tile).sum())
        boxes, in_tile = boxes[in_tile], in_tile[in_tile]
    clock.lap("vias")
    shapes = {name: region.count() for name, region in regions.items()}
    shapes["fill"] = fill_deep.count()
    return Connectivity(top.name, site_v, site_g, pad_v, pad_g, pad_names, boxes, ~in_tile,
                        not_checked, fill_touching, sum(t.count() for t in texts.values()),
                        shapes, clock.laps)


def _window(base: BaseArray, tiles):
    """The part of a merged die the extraction reads (a kdb.Region, nm): the used tiles with
    half a channel round them, and the supply path from their rails to the labelled spines
    (the tie columns of the used tile columns over the grid's height, the bands below and
    above the grid). A base die holds every tile's landings whether a model uses them or
    not; read flat, a 14 M-site GF180 base needs ~25 GB (measured: 9 GB and rising)."""
    import klayout.db as kdb

    grid, tile, die = base.tile_grid, base.weight_tile, base.die
    gx = (grid.pitch_x_nm - tile.width_nm) // 2
    gy = (grid.pitch_y_nm - tile.height_nm) // 2
    boxes = []
    for column, row in tiles:
        x, y = grid.tile_origin_nm(column, row)
        boxes.append(kdb.Box(x - gx, y - gy, x + tile.width_nm + gx, y + tile.height_nm + gy))
    y0 = grid.origin_nm[1]
    y1 = y0 + grid.rows * grid.pitch_y_nm
    tie_x0 = tile.slot_x_nm(tile.sites_x) - tile.site_pitch_x_nm // 2
    for column in sorted({c for c, _ in tiles}):
        x = grid.tile_origin_nm(column, 0)[0]
        boxes.append(kdb.Box(x + tie_x0, 0, x + tile.width_nm, die.height_nm))
    boxes += [kdb.Box(0, 0, die.width_nm, y0 - gy), kdb.Box(0, y1, die.width_nm, die.height_nm)]
    region = kdb.Region()
    for box in boxes:
        region.insert(box)
    return region.merged()


def _draw_probes(ly, top, index, base: BaseArray, tiles, synthetic: bool) -> None:
    """One cell, placed at every used tile's origin: a probe square on every landing and
    tie pad and, for the custom layers alone, the landings and tie pads themselves."""
    import klayout.db as kdb

    pdk, tile = base.pdk, base.weight_tile
    rules, grid_nm = pdk.rules, pdk.grid_nm
    landings = landing_rects(tile, rules.via_size_nm, rules.via_enclosure_below_nm, grid_nm)
    pads = tie_pad_rects(tile, rules.via_size_nm, rules.via_enclosure_below_nm, grid_nm)
    cell = ly.create_cell("TAALASC_SIGNOFF_PROBES")
    h = PROBE_HALF_NM

    def probe(rects: np.ndarray, layer: int) -> None:
        cx, cy = (rects[:, 0] + rects[:, 2]) // 2, (rects[:, 1] + rects[:, 3]) // 2
        shapes = cell.shapes(layer)
        for x, y in zip(cx.tolist(), cy.tolist()):
            shapes.insert(kdb.Box(x - h, y - h, x + h, y + h))

    probe(landings, index["probe"])
    probe(pads[0::2], index["probe_vpwr"])   # tie_pad_rects: high strap (VPWR) first per row
    probe(pads[1::2], index["probe_vgnd"])
    if synthetic:
        below = cell.shapes(index["below"])
        for r in np.concatenate([landings, pads]).tolist():
            below.insert(kdb.Box(*r))
    for column, row in tiles:
        x, y = base.tile_grid.tile_origin_nm(column, row)
        top.insert(kdb.CellInstArray(cell.cell_index(), kdb.Trans(x, y)))


def _net_counts(l2n, primary, pads: dict, with_names: bool):
    """For every probe of ``primary``: its centre (int64 [n, 2] nm), the VPWR and VGND tie
    pads on its net (int64 [n] each) and the net's label (object [n], "" without). One
    evaluation per net (``evaluate_nets``); the net's probes share its property id."""
    area = (2 * PROBE_HALF_NM) ** 2   # with dbu 0 areas are in nm^2: pads counted exactly
    expression = "put('v', area(pv)); put('g', area(pg))"
    if with_names:
        expression += "; put('n', net.name)"
    result = l2n.evaluate_nets(primary, pads, expression, {}, 0.0)
    memo: dict[int, tuple[int, int, str]] = {}
    n = result.count()
    if n != primary.count():   # probes never touch: one result per probe, or a bug here
        raise MaskError(f"extraction returned {n} probes of {primary.count()}")
    xy = np.empty((n, 2), np.int64)
    ids = np.empty(n, np.int64)
    for k, polygon in enumerate(result.each()):
        pid = polygon.prop_id
        if pid not in memo:
            p = polygon.properties()
            memo[pid] = (round(p["v"] / area), round(p["g"] / area), str(p.get("n") or ""))
        box = polygon.bbox()
        xy[k] = box.left, box.bottom
        ids[k] = pid
    keys = sorted(memo)
    table = np.array([memo[key][:2] for key in keys], np.int64).reshape(-1, 2)
    names = np.array([memo[key][2] for key in keys], dtype=object)
    row = np.searchsorted(np.array(keys, np.int64), ids)
    return xy + PROBE_HALF_NM, table[row, 0], table[row, 1], names[row]


def _in_used_tiles(boxes: np.ndarray, base: BaseArray, slot_of: np.ndarray) -> np.ndarray:
    """Which boxes (int64 [n, 4] nm) have their lower-left corner inside a used tile."""
    grid, tile = base.tile_grid, base.weight_tile
    x, y = boxes[:, 0] - grid.origin_nm[0], boxes[:, 1] - grid.origin_nm[1]
    column, row = x // grid.pitch_x_nm, y // grid.pitch_y_nm
    on = (column >= 0) & (row >= 0) & (column < grid.columns) & (row < grid.rows)
    used = on & (slot_of[np.where(on, row * grid.columns + column, 0)] >= 0)
    return used & (x - column * grid.pitch_x_nm < tile.width_nm) \
        & (y - row * grid.pitch_y_nm < tile.height_nm)


def _locate(xy: np.ndarray, base: BaseArray, slot_of: np.ndarray):
    """(used-tile index, site, tie pad index) of probe centres (int64 [n, 2] nm)."""
    grid, tile = base.tile_grid, base.weight_tile
    x, y = xy[:, 0] - grid.origin_nm[0], xy[:, 1] - grid.origin_nm[1]
    column, row = x // grid.pitch_x_nm, y // grid.pitch_y_nm
    x, y = x - column * grid.pitch_x_nm, y - row * grid.pitch_y_nm
    i, j = x // tile.site_pitch_x_nm, y // tile.site_pitch_y_nm
    high = y - j * tile.site_pitch_y_nm < tile.site_pitch_y_nm // 2
    return (slot_of[row * grid.columns + column], j * tile.sites_x + i,
            2 * j + np.where(high, 0, 1))


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now
