"""Area: how many weight tiles and dies a model takes, and what the die is made of.

Tile mapping (the estimate; compile's placement may pass exact counts in PlacementFacts):
a weight matrix [out, in] at b bits is cut into blocks of ``input_lanes`` inputs × R rows,
R = floor(sites / (input_lanes × sites per weight)); it takes ceil(in / lanes) ×
ceil(out / R) tiles. Sites per weight: b for tie-high-low and zero-skip (one bit per site),
ceil(b / s) for select, 1 for ternary (taalasc/report/encoding.py); for tie-high-low
R = floor(capacity_bits / (input_lanes × b)). Constants (norm vectors, biases, unquantized
tensors at CONSTANT_BITS) and per-group scales (SCALE_BITS each; asymmetric codes add an fp16
minimum per group, at SCALE_BITS too) are packed densely: ceil(bits / (sites × constant bits
per site)) tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taalasc.errors import QuantizationError
from taalasc.report.datapath import DatapathExtras
from taalasc.report.encoding import (formula_text, tile_logic, vias_per_constant_bit,
                                     vias_per_weight)
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
    weight_bits: int  # quantized weight bits
    constant_bits: int  # constants + scales
    quantized_params: int
    active_constant_bits: float = 0.0  # of constant_bits, a token's share (experts at k/E)

    @property
    def tiles(self) -> int:
        return self.weight_tiles + self.constant_tiles


def tile_map(model: ModelShape, bits: dict[str, tuple[int, int | None]], base,
             asymmetric: frozenset[str] = frozenset()) -> TileMap:
    """Map every tensor onto weight tiles (formula in the module docstring); tensors named in
    ``asymmetric`` carry a minimum per group beside each scale."""
    tile = base.weight_tile
    lanes = tile.input_lanes
    per: dict[str, TensorTiles] = {}
    weight_bits = constant_bits = qparams = 0
    active_constant = 0.0
    for name, shape in sorted(model.tensors.items()):
        share = model.active_fraction(name)
        if name not in bits:
            constant_bits += _numel(shape) * CONSTANT_BITS
            active_constant += _numel(shape) * CONSTANT_BITS * share
            continue
        b, group = bits[name]
        if tile.encoding == "ternary" and (b != 2 or name in asymmetric):
            raise QuantizationError(
                f"{name}: weight_tile.encoding 'ternary' of {base.name} stores symmetric "
                "weights {−1, 0, +1} with per-group scales: every weight tensor must be at 2 "
                f"bits (--bits 2), not {b}" + (" with a minimum per group (--asymmetric)"
                                               if b == 2 else ""))
        if not 2 <= b <= tile.max_weight_bits:
            raise QuantizationError(f"{name}: {b} bits is outside 2..{tile.max_weight_bits}, the "
                                    f"widest weight {base.name}'s tiles accept")
        out, fan_in = shape[0], _numel(shape[1:])
        rows = tile.sites // (lanes * tile.sites_per_weight(b))
        in_blocks = math.ceil(fan_in / lanes)
        tiles = in_blocks * math.ceil(out / rows)
        per[name] = TensorTiles(b, tiles, min(rows, out), in_blocks)
        weight_bits += _numel(shape) * b
        qparams += _numel(shape)
        groups = math.ceil(fan_in / group) if group else 1
        scales = out * groups * SCALE_BITS * (2 if name in asymmetric else 1)
        constant_bits += scales
        active_constant += scales * share
    weight_tiles = sum(t.tiles for t in per.values())
    constant_capacity = tile.sites * tile.constant_bits_per_site
    return TileMap(per, weight_tiles, math.ceil(constant_bits / constant_capacity), weight_bits,
                   constant_bits, qparams, active_constant)


def active_tiles(model: ModelShape, tmap: TileMap) -> float:
    """Tiles a token works in: every tile, but an expert's (and the share of the constant
    tiles that holds an expert's scales and biases) only k/E of the time: they are
    clock-gated while the router picks other experts (assumption)."""
    constant = tmap.constant_tiles * (tmap.active_constant_bits / tmap.constant_bits
                                      if tmap.constant_bits else 1.0)
    return constant + sum(t.tiles * model.active_fraction(n)
                          for n, t in tmap.per_tensor.items())


def area_metrics(model: ModelShape, tmap: TileMap, base, facts: PlacementFacts,
                 extras: DatapathExtras | None = None,
                 zero_bits: tuple[float, str] = (0.0, "")) -> list[Metric]:
    """``zero_bits``: (zero-bit ratio, its source), from encoding.zero_bit_input."""
    pdk, grid, tile = base.pdk, base.tile_grid, base.weight_tile
    extras = extras or DatapathExtras()
    enc = tile.encoding
    z = zero_bits[0]
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
                   "Σ ceil(in/lanes)·ceil(out/floor(sites/(lanes·sites per weight))) + "
                   f"ceil((constants·{CONSTANT_BITS} + scales·{SCALE_BITS}) / (sites · "
                   "constant bits per site))  (sites per weight: b, or ceil(b/s) for select, "
                   "1 for ternary)",
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
    total_area = add("design__die__total_area", die_area.value * dies.value, "mm²",
                     "design__die__area × design__die__count",
                     {"design__die__area": from_metric(die_area),
                      "design__die__count": from_metric(dies)}, higher_is_better=False)
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
    enc_in = {"encoding": from_base(base, "weight_tile.encoding")}
    if enc == "zero-skip":
        enc_in["zero_bit_ratio"] = zero_bits
    weight_vias = sum(_numel(model.tensors[n]) * vias_per_weight(tile, t.bits, z)
                      for n, t in tmap.per_tensor.items())
    lines = tile.lines_per_site
    lines_in = (lines, f"base array {base.name}: weight_tile lines per site ({enc}"
                + (", 2^bits_per_site" if enc == "select" else "") + ")")
    if facts.via_count is not None:
        add("design__via__count", facts.via_count, "shapes", "from the emitted via mask",
            {"placement.via_count": (facts.via_count, "compile mask emission")})
    else:
        ties = from_base(base, "weight_tile.sites_y")
        add("design__via__count",
            int(round(weight_vias + tmap.constant_bits * vias_per_constant_bit(tile, z)
                      + used.value * lines * ties[0])), "shapes",
            f"weight vias ({formula_text(enc)['vias']}) + constant vias (one per site of "
            "constant bits) + one line-end via per line into the base (the tie vias of "
            "tie-high-low): design__tiles__used × lines_per_site × sites_y",
            {"weight_vias": from_model(round(weight_vias), "Σ numel × vias per weight"),
             "constant_bits": from_model(tmap.constant_bits, "constants and scales"),
             "design__tiles__used": from_metric(used), "sites_y": ties,
             "lines_per_site": lines_in, **enc_in})
    add("design__via__per_weight", weight_vias / max(tmap.quantized_params, 1), "vias",
        f"Σ numel × vias per weight / quantized weights  ({formula_text(enc)['vias']})",
        {"weight_vias": from_model(round(weight_vias), "Σ numel × vias per weight"),
         "quantized_params": from_model(tmap.quantized_params, "2-D tensors"), **enc_in},
        higher_is_better=False, description="custom vias one weight costs")
    if facts.top_metal_shape_count is not None:
        add("design__top_metal__count", facts.top_metal_shape_count, "shapes",
            "from the emitted top-metal mask",
            {"placement.top_metal_shape_count": (facts.top_metal_shape_count, "compile")})
    else:
        sites_y = from_base(base, "weight_tile.sites_y")
        bus = from_base(base, "datapath.route_bus_bits")
        add("design__top_metal__count", used.value * (lines * sites_y[0] + bus[0]), "shapes",
            "design__tiles__used × (lines_per_site × sites_y lines + route_bus_bits routes)",
            {"design__tiles__used": from_metric(used), "sites_y": sites_y,
             "lines_per_site": lines_in, "route_bus_bits": bus,
             "routes_per_tile": assumed(1, "one bus per used tile (estimate, no placement)")})
    site_um2 = tile.site_pitch_x_nm * tile.site_pitch_y_nm * 1e-6
    add("design__tile__bits_per_um2", tile.bits_per_site / site_um2, "bit/µm²",
        "bits_per_site / (site_pitch_x × site_pitch_y)  (the array of sites; ternary counts "
        "its 2-bit codes)",
        {"bits_per_site": from_base(base, "weight_tile.bits_per_site"),
         "site_pitch_x_nm": from_base(base, "weight_tile.site_pitch_x_nm"),
         "site_pitch_y_nm": from_base(base, "weight_tile.site_pitch_y_nm")},
        higher_is_better=True, description="weight-bit density of the tile's site array")
    add("design__die__bits_per_um2", wbits.value / (total_area.value * 1e6), "bit/µm²",
        "design__weights__bits / (design__die__total_area in µm²)",
        {"design__weights__bits": from_metric(wbits),
         "design__die__total_area": from_metric(total_area)}, higher_is_better=True,
        description="weight bits per µm² of every die the model takes")
    if model.experts is not None:
        experts, active = model.experts
        moe_in = {"experts": from_model(experts, "num_local_experts"),
                  "experts_per_token": from_model(active, "num_experts_per_tok")}
        add("design__weights__active_count", model.active_params, "weights",
            "Σ over tensors of numel × (experts per token / experts for an expert's tensors, "
            "else 1)", moe_in, description="parameters one token touches (mixture of experts)")
        add("design__tiles__active", active_tiles(model, tmap), "tiles",
            "Σ (tensor tiles and its share of the constant tiles) × (k/E for an expert's "
            "tensors, else 1)",
            {"design__tiles__used": from_metric(used), **moe_in}, higher_is_better=False,
            description="tiles one token works in (the others are clock-gated: assumption)")
    logic = tile_logic(base)
    fas, dffs, sel = logic.full_adders, logic.dffs, logic.sites
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
    add("design__tile__full_adders", fas + extras.fa_per_tile, "FA",
        f"{formula_text(enc)['fa']}" + (" + activation-format logic" if extras.fa_per_tile
                                        else ""),
        {"L": lanes, "B": from_base(base, "weight_tile.max_weight_bits"),
         "a": from_base(base, "datapath.activation_bits"),
         "A": from_base(base, "datapath.accumulator_bits"),
         **({"s": from_base(base, "weight_tile.bits_per_site")} if enc == "select" else {}),
         "tree_fa": from_model(logic.tree_fa, "adder tree + final adder"),
         "bank_fa": from_model(logic.bank_fa, "select product bank"), **enc_in},
        higher_is_better=False, description="adders in one weight tile "
        "(taalasc/report/encoding.py)")
    add("design__transistors__count",
        grid.tiles * ((fas + extras.fa_per_tile) * fa_t[0] + dffs * dff_t[0]
                      + logic.mux_transistors + sel)
        + sram_bits * cell_t[0],
        "transistors", f"tiles per die × ({formula_fas}·T_fa + DFFs·T_dff + mux transistors + "
        "sites) + SRAM bits·T_cell",
        {"full_adders_per_tile": from_model(fas, f"{formula_text(enc)['fa']}"),
         "dffs_per_tile": from_model(dffs, "lanes·activation_bits + accumulator_bits"),
         "mux_transistors_per_tile": from_model(logic.mux_transistors, "one-hot pass-gate "
                                                "muxes, 2 per line per product bit"),
         "row_select_per_tile": from_model(sel, "one transistor per site"),
         "T_fa": fa_t, "T_dff": dff_t, "T_cell": cell_t, "tiles_per_die": per_die,
         "sram_bits": (sram_bits, f"base array {base.name}: sram"), **extra_in},
        description="per die; periphery logic not counted")
    return M
