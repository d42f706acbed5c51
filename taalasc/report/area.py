"""Area: how many weight tiles and dies a model takes, and what the die is made of.

Tile mapping (the estimate; compile's placement may pass exact counts in PlacementFacts):
a weight matrix [out, in] at b bits is cut into blocks of ``input_lanes`` inputs × R rows,
R = floor(capacity_bits / (input_lanes × b)); it takes ceil(in / lanes) × ceil(out / R)
tiles. Constants (norm vectors, biases, unquantized tensors at CONSTANT_BITS) and per-group
scales (SCALE_BITS each; asymmetric codes add an fp16 minimum per group, at SCALE_BITS too)
are packed densely: ceil(bits / capacity_bits) tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taalasc.errors import QuantizationError
from taalasc.report.datapath import DatapathExtras
from taalasc.report.metrics import Metric, assumed, from_base, from_metric, from_model, from_pdk
from taalasc.report.shape import CONSTANT_BITS, SCALE_BITS, ModelShape, _numel


@dataclass(frozen=True)
class PlacementFacts:
    """Facts from an actual placement (compile); any field left None is estimated."""

    tiles_used: int | None = None
    dies: int | None = None
    longest_route_nm: int | None = None
    via_count: int | None = None
    top_metal_shape_count: int | None = None


@dataclass(frozen=True)
class TensorTiles:
    bits: int
    tiles: int
    rows_per_tile: int  # output rows one tile holds (= cycles to stream through them)
    in_blocks: int  # tiles along the input dimension, whose partial sums are added


@dataclass(frozen=True)
class TileMap:
    per_tensor: dict[str, TensorTiles]
    weight_tiles: int
    constant_tiles: int
    weight_bits: int  # quantized weight bits (one via each)
    constant_bits: int  # constants + scales
    quantized_params: int

    @property
    def tiles(self) -> int:
        return self.weight_tiles + self.constant_tiles


def tile_map(model: ModelShape, bits: dict[str, tuple[int, int | None]], base,
             asymmetric: frozenset[str] = frozenset()) -> TileMap:
    """Map every tensor onto weight tiles (formula in the module docstring); tensors named in
    ``asymmetric`` carry a minimum per group beside each scale."""
    tile = base.weight_tile
    lanes, cap = tile.input_lanes, tile.capacity_bits
    per: dict[str, TensorTiles] = {}
    weight_bits = constant_bits = qparams = 0
    for name, shape in sorted(model.tensors.items()):
        if name not in bits:
            constant_bits += _numel(shape) * CONSTANT_BITS
            continue
        b, group = bits[name]
        if not 2 <= b <= tile.max_weight_bits:
            raise QuantizationError(f"{name}: {b} bits is outside 2..{tile.max_weight_bits}, the "
                                    f"widest weight {base.name}'s tiles accept")
        out, fan_in = shape[0], _numel(shape[1:])
        rows = cap // (lanes * b)
        in_blocks = math.ceil(fan_in / lanes)
        tiles = in_blocks * math.ceil(out / rows)
        per[name] = TensorTiles(b, tiles, min(rows, out), in_blocks)
        weight_bits += _numel(shape) * b
        qparams += _numel(shape)
        groups = math.ceil(fan_in / group) if group else 1
        constant_bits += out * groups * SCALE_BITS * (2 if name in asymmetric else 1)
    weight_tiles = sum(t.tiles for t in per.values())
    return TileMap(per, weight_tiles, math.ceil(constant_bits / cap), weight_bits,
                   constant_bits, qparams)


def transistors_per_tile(base) -> tuple[int, int, int]:
    """(full adders, flip-flops, row-select transistors) in one weight tile.

    A constant weight times an activation is a sum of shifted activations, one per weight
    bit, so a tile reduces lanes × max_weight_bits × activation_bits partial-product bits:
    one full adder per bit (a 3:2 counter removes one bit), plus an accumulator-wide final
    adder. Flip-flops: the lanes' activation inputs and the accumulator. Each bit site is
    read through one row-select pass transistor.
    """
    t, d = base.weight_tile, base.datapath
    fas = t.input_lanes * t.max_weight_bits * d.activation_bits + d.accumulator_bits
    dffs = t.input_lanes * d.activation_bits + d.accumulator_bits
    return fas, dffs, t.capacity_bits


def area_metrics(model: ModelShape, tmap: TileMap, base, facts: PlacementFacts,
                 extras: DatapathExtras | None = None) -> list[Metric]:
    pdk, grid = base.pdk, base.tile_grid
    extras = extras or DatapathExtras()
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(Metric(*args, **kw))
        return M[-1]

    add("design__weights__count", model.params, "weights",
        "Σ over tensors of Π shape", {"tensors": from_model(len(model.tensors),
                                                             f"{model.source}")},
        description="parameters of the model (all tensors)")
    wbits = add("design__weights__bits", tmap.weight_bits, "bit",
                "Σ over quantized tensors of numel × bits", {"quantized_params": from_model(
                    tmap.quantized_params, "2-D tensors with a bit width")},
                description="quantized weight bits = vias on the custom via layer")
    add("design__weights__bits_per_weight", tmap.weight_bits / max(tmap.quantized_params, 1),
        "bit", "design__weights__bits / quantized weights",
        {"design__weights__bits": from_metric(wbits),
         "quantized_params": from_model(tmap.quantized_params, "2-D tensors")})
    cap = from_base(base, "weight_tile.capacity_bits")
    lanes = from_base(base, "weight_tile.input_lanes")
    est_tiles = tmap.tiles
    if facts.tiles_used is not None:
        used = add("design__tiles__used", facts.tiles_used, "tiles", "from placement",
                   {"placement.tiles_used": (facts.tiles_used, "compile placement")},
                   higher_is_better=False)
    else:
        used = add("design__tiles__used", est_tiles, "tiles",
                   "Σ ceil(in/lanes)·ceil(out/floor(capacity/(lanes·bits))) + "
                   f"ceil((constants·{CONSTANT_BITS} + scales·{SCALE_BITS}) / capacity)",
                   {"capacity_bits": cap, "input_lanes": lanes,
                    "weight_tiles": from_model(tmap.weight_tiles, "tile mapping"),
                    "constant_tiles": from_model(tmap.constant_tiles, "norms, biases, scales")},
                   higher_is_better=False, description="estimated weight tiles (block mapping)")
    per_die = from_base(base, "tile_grid.tiles")
    if facts.dies is not None:
        dies = add("design__die__count", facts.dies, "dies", "from placement",
                   {"placement.dies": (facts.dies, "compile placement")}, higher_is_better=False)
    else:
        dies = add("design__die__count", max(1, math.ceil(used.value / per_die[0])), "dies",
                   "ceil(design__tiles__used / tiles per die)",
                   {"design__tiles__used": from_metric(used), "tiles_per_die": per_die},
                   higher_is_better=False)
    max_dies = from_base(base, "max_dies")
    add("design__die__fits", dies.value <= max_dies[0], "", "design__die__count ≤ max_dies",
        {"design__die__count": from_metric(dies), "max_dies": max_dies}, higher_is_better=True)
    total = add("design__tiles__total", dies.value * per_die[0], "tiles",
                "design__die__count × tiles per die",
                {"design__die__count": from_metric(dies), "tiles_per_die": per_die})
    add("design__tiles__utilization", used.value / total.value, "fraction",
        "design__tiles__used / design__tiles__total",
        {"design__tiles__used": from_metric(used), "design__tiles__total": from_metric(total)},
        higher_is_better=True)
    die_area = add("design__die__area", base.die.area_mm2, "mm²", "die.width × die.height",
                   {"die.width_nm": from_base(base, "die.width_nm"),
                    "die.height_nm": from_base(base, "die.height_nm")})
    add("design__die__total_area", die_area.value * dies.value, "mm²",
        "design__die__area × design__die__count",
        {"design__die__area": from_metric(die_area), "design__die__count": from_metric(dies)},
        higher_is_better=False)
    tile_area = add("design__tile__area", grid.pitch_x_nm * grid.pitch_y_nm * 1e-12, "mm²",
                    "tile_grid.pitch_x × tile_grid.pitch_y (tile plus its routing channel)",
                    {"pitch_x_nm": from_base(base, "tile_grid.pitch_x_nm"),
                     "pitch_y_nm": from_base(base, "tile_grid.pitch_y_nm")})
    grid_area = add("design__tile_grid__area", tile_area.value * grid.tiles, "mm²",
                    "design__tile__area × tiles per die",
                    {"design__tile__area": from_metric(tile_area), "tiles_per_die": per_die})
    sram_bits = sum(b.capacity_bytes for b in base.sram) * 8
    sram = add("design__sram__area", sram_bits * pdk.sram.bitcell_area_um2
               / pdk.sram.array_efficiency * 1e-6, "mm²",
               "SRAM bytes × 8 × bitcell area / array efficiency (per die)",
               {"sram_bits": (sram_bits, f"base array {base.name}: sram[*].capacity_bytes × 8"),
                "bitcell_area_um2": from_pdk(pdk, "sram.bitcell_area_um2"),
                "array_efficiency": from_pdk(pdk, "sram.array_efficiency")})
    add("design__periphery__area", die_area.value - grid_area.value - sram.value, "mm²",
        "design__die__area − design__tile_grid__area − design__sram__area",
        {"design__die__area": from_metric(die_area), "design__tile_grid__area":
         from_metric(grid_area), "design__sram__area": from_metric(sram)},
        description="I/O ring, clocking, control, attention/normalisation logic (remainder)")
    foot = add("design__footprint__area", used.value * tile_area.value, "mm²",
               "design__tiles__used × design__tile__area",
               {"design__tiles__used": from_metric(used), "design__tile__area":
                from_metric(tile_area)}, higher_is_better=False,
               description="tile area the model occupies")
    add("design__weights__bits_per_mm2", wbits.value / foot.value if foot.value else 0.0,
        "bit/mm²", "design__weights__bits / design__footprint__area",
        {"design__weights__bits": from_metric(wbits), "design__footprint__area":
         from_metric(foot)}, higher_is_better=True)
    if facts.via_count is not None:
        add("design__via__count", facts.via_count, "shapes", "from the emitted via mask",
            {"placement.via_count": (facts.via_count, "compile mask emission")})
    else:
        ties = from_base(base, "weight_tile.sites_y")
        add("design__via__count",
            wbits.value + tmap.constant_bits + used.value * 2 * ties[0], "shapes",
            "one via per programmed bit (tie-high/tie-low encoding): weight + constant bits, "
            "plus one tie via per strap: design__tiles__used × 2 × sites_y",
            {"design__weights__bits": from_metric(wbits),
             "constant_bits": from_model(tmap.constant_bits, "constants and scales"),
             "design__tiles__used": from_metric(used), "sites_y": ties})
    if facts.top_metal_shape_count is not None:
        add("design__top_metal__count", facts.top_metal_shape_count, "shapes",
            "from the emitted top-metal mask",
            {"placement.top_metal_shape_count": (facts.top_metal_shape_count, "compile")})
    else:
        sites_y = from_base(base, "weight_tile.sites_y")
        bus = from_base(base, "datapath.route_bus_bits")
        add("design__top_metal__count", used.value * (2 * sites_y[0] + bus[0]), "shapes",
            "design__tiles__used × (2 straps × sites_y + route_bus_bits routes)",
            {"design__tiles__used": from_metric(used), "sites_y": sites_y,
             "route_bus_bits": bus,
             "routes_per_tile": assumed(1, "one bus per used tile (estimate, no placement)")})
    fas, dffs, sel = transistors_per_tile(base)
    fa_t, dff_t = from_pdk(pdk, "cells.full_adder_transistors"), \
        from_pdk(pdk, "cells.dff_transistors")
    cell_t = from_pdk(pdk, "sram.bitcell_transistors")
    extra_in, formula_fas = {}, "FAs"
    fa_area = from_pdk(pdk, "cells.full_adder_area_um2")
    if extras.activation_group:
        act = add("design__activation_groups__full_adders_per_tile", extras.act_fa_per_tile,
                  "FA", "ceil(lanes / A) × ((min(A, lanes) − 1) × activation_bits + 2 × "
                  "(m² + e))  [absmax comparators, scale unit, extra multiply; estimate]",
                  {"A": from_base(base, "datapath.activation_group_size"), "input_lanes": lanes,
                   "activation_bits": from_base(base, "datapath.activation_bits"),
                   "fp16_multiply_fa": assumed(11 ** 2 + 5, "m² + e FA for an FP16 multiply "
                                               "(m = 11, e = 5; array multiplier)")},
                  higher_is_better=False, description="per-group activation scales: logic "
                  "added to every weight tile (taalasc/report/datapath.py)")
        add("design__activation_groups__area", act.value * fa_area[0] * per_die[0] * 1e-6,
            "mm²", "design__activation_groups__full_adders_per_tile × FA area × tiles per die",
            {"design__activation_groups__full_adders_per_tile": from_metric(act),
             "full_adder_area_um2": fa_area, "tiles_per_die": per_die},
            higher_is_better=False, description="per die, in the logic under the tiles")
        extra_in["activation_group_fas_per_tile"] = from_metric(act)
    if extras.asym_group:
        asym = add("design__asymmetric__full_adders_per_tile", extras.asym_fa_per_tile, "FA",
                   "ceil(lanes / G) × ((min(G, lanes) − 1) × activation_bits + (m² + e) + "
                   "(2m + e))  [S_g accumulators and min·S_g multiply-adds; estimate]",
                   {"G": from_model(extras.asym_group, "smallest asymmetric weight group"),
                    "input_lanes": lanes,
                    "activation_bits": from_base(base, "datapath.activation_bits"),
                    "fp16_multiply_add_fa": assumed(11 ** 2 + 5 + 2 * 11 + 5, "FP16 multiply "
                                                    "m² + e plus add 2m + e (m = 11, e = 5)")},
                   higher_is_better=False, description="asymmetric weight groups: logic "
                   "added to every weight tile (taalasc/report/datapath.py)")
        add("design__asymmetric__area", asym.value * fa_area[0] * per_die[0] * 1e-6, "mm²",
            "design__asymmetric__full_adders_per_tile × FA area × tiles per die",
            {"design__asymmetric__full_adders_per_tile": from_metric(asym),
             "full_adder_area_um2": fa_area, "tiles_per_die": per_die},
            higher_is_better=False, description="per die, in the logic under the tiles")
        extra_in["asymmetric_fas_per_tile"] = from_metric(asym)
    if extra_in:
        formula_fas = "(FAs + " + " + ".join(sorted(extra_in)) + ")"
    add("design__transistors__count",
        grid.tiles * ((fas + extras.fa_per_tile) * fa_t[0] + dffs * dff_t[0] + sel)
        + sram_bits * cell_t[0],
        "transistors", f"tiles per die × ({formula_fas}·T_fa + DFFs·T_dff + sites) + "
        "SRAM bits·T_cell",
        {"full_adders_per_tile": from_model(fas, "lanes·max_weight_bits·activation_bits + "
                                            "accumulator_bits"),
         "dffs_per_tile": from_model(dffs, "lanes·activation_bits + accumulator_bits"),
         "row_select_per_tile": from_model(sel, "one pass transistor per bit site"),
         "T_fa": fa_t, "T_dff": dff_t, "T_cell": cell_t, "tiles_per_die": per_die,
         "sram_bits": (sram_bits, f"base array {base.name}: sram"), **extra_in},
        description="per die; periphery logic not counted")
    return M
