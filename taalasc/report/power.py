"""Power: dynamic α·C·V²·f per MAC, the rest of the die per token, clock, leakage, J/token.

A MAC of a constant weight and an a-bit activation costs the adder tree's toggles for that
weight (taalasc/report/encoding.py: a·b shift-and-add, ceil(b/s)·(a+s) select, a + 1
ternary), the accumulator (accumulator_bits flip-flops) clocked once per row, i.e. once per
``input_lanes`` MACs, and the vias of the read row driving their lines across the tile
height (row selection, like a ROM column):
    E_MAC = α · V² · (tree FA per MAC · C_fa + accumulator_bits / lanes · C_dff
                      + vias per weight · c_wire · tile height)
(tie-high-low: a·b̄·C_fa and b̄ lines). A select tile also fills its product bank once per
token: active tiles × bank FA × α·V²·C_fa. The rest of the die per token (attention and
softmax, norms and activations, the embedding lookup, KV-cache reads and writes, the
activation broadcast, I/O) is in taalasc/report/wholedie.py. Mixtures of experts count the
MACs of the k active experts of E (active weights for energy, total weights for area).
Power at the aggregate throughput T: P = E_token · T + P_clock_tree + P_clock + P_leak, with
P_clock = active tiles · DFFs · C_dff · V² · f (the flip-flops' clock pins toggle every cycle;
idle experts' tiles clock-gated) and leakage from every tile and SRAM bit of every die
(unused tiles are not power-gated) at the operating temperature. ``power__dynamic__watts`` is
E_token · T plus the clock tree's wires; ``power__clock__watts`` the flip-flops.
Encoders read the K and V of the whole sequence instead (wholedie.py), and their power is
taken at the encoder's tokens/s. Per-group activation scales and asymmetric weight groups add
α·V²·C_fa per full-adder toggle they cost per token (taalasc/report/datapath.py) and their
logic's leakage.
"""

from __future__ import annotations

from dataclasses import dataclass

from taalasc.report.area import TileMap
from taalasc.report.datapath import DatapathExtras, is_product
from taalasc.report.encoding import formula_text, tile_logic, tree_fa_per_mac, vias_per_weight
from taalasc.report.metrics import Metric, from_base, from_metric, from_model, from_pdk
from taalasc.report.shape import ModelShape, _numel
from taalasc.report.wholedie import clock_tree_metric, energy_metrics, leakage_factor_metric


@dataclass(frozen=True)
class MacMix:
    """MACs per token and MAC-weighted means over them (module docstring)."""

    macs: float
    mean_bits: float
    mean_tree_fa: float   # adder-tree FA toggles per MAC
    mean_vias: float      # vias (lines driven) per weight read


def mac_mix(model: ModelShape, tmap: TileMap, base, zero_bit_ratio: float = 0.0) -> MacMix:
    """Embedding tables are lookups, not products; a tied head (no lm_head tensor) multiplies
    by the embedding table, so it is counted as a product at the table's bits. An expert's
    tensors count at k/E (the router picks k of E experts per token)."""
    tile, a = base.weight_tile, base.datapath.activation_bits
    macs = bits = fa = vias = 0.0
    for name, t in tmap.per_tensor.items():
        if not is_product(model, name):
            continue
        n = _numel(model.tensors[name]) * model.active_fraction(name)
        macs += n
        bits += n * t.bits
        fa += n * tree_fa_per_mac(tile, a, t.bits)
        vias += n * vias_per_weight(tile, t.bits, zero_bit_ratio)
    if not macs:
        return MacMix(0, 0.0, 0.0, 0.0)
    return MacMix(macs, bits / macs, fa / macs, vias / macs)


def served_tokens_per_s(got: dict[str, Metric]) -> Metric:
    """The throughput power and cost are charged at: decode aggregate, or encoder tokens/s."""
    return got.get("throughput__aggregate__tokens_per_s") or \
        got["throughput__encoder__tokens_per_s"]


def power_metrics(model: ModelShape, tmap: TileMap, base, got: dict[str, Metric],
                  context: int, extras: DatapathExtras | None = None,
                  zero_bit_ratio: float = 0.0) -> list[Metric]:
    pdk, tile = base.pdk, base.weight_tile
    extras = extras or DatapathExtras()
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(args[0] if isinstance(args[0], Metric) else Metric(*args, **kw))
        return M[-1]

    mix = mac_mix(model, tmap, base, zero_bit_ratio)
    alpha = from_base(base, "datapath.activity_factor")
    v = from_pdk(pdk, "electrical.supply_v")
    c_fa = from_pdk(pdk, "cells.full_adder_switched_cap_ff")
    c_dff = from_pdk(pdk, "cells.dff_switched_cap_ff")
    a_bits = from_base(base, "datapath.activation_bits")
    acc = from_base(base, "datapath.accumulator_bits")
    lanes = from_base(base, "weight_tile.input_lanes")
    c_wire = from_pdk(pdk, "electrical.top_metal_cap_ff_per_um")
    height_um = tile.height_nm / 1000
    c_col = c_wire[0] * height_um
    e_mac = alpha[0] * v[0] ** 2 * (mix.mean_tree_fa * c_fa[0] + acc[0] / lanes[0] * c_dff[0]
                                    + mix.mean_vias * c_col)
    enc = tile.encoding
    mac_text = formula_text(enc)["mac"].replace("b", "b̄")
    lines_text = "b̄" if enc == "tie-high-low" else "vias per weight"
    mac = add("power__mac__energy_fj", e_mac, "fJ",
              f"α · V² · ({mac_text} · C_fa + accumulator_bits / lanes · C_dff + {lines_text} · "
              "c_wire · tile height)",
              {"activity_factor": alpha, "supply_v": v, "activation_bits": a_bits,
               "top_metal_cap_ff_per_um": c_wire,
               "tile_height_um": (height_um, f"base array {base.name}: weight_tile.sites_y × "
                                  "site_pitch_y_nm"),
               "mean_weight_bits": from_model(mix.mean_bits, "MAC-weighted mean bits"),
               "tree_fa_per_mac": from_model(mix.mean_tree_fa, f"{formula_text(enc)['mac']}, "
                                             "MAC-weighted (taalasc/report/encoding.py)"),
               "vias_per_weight": from_model(mix.mean_vias, formula_text(enc)["vias"]),
               "encoding": from_base(base, "weight_tile.encoding"),
               "full_adder_switched_cap_ff": c_fa, "dff_switched_cap_ff": c_dff,
               "accumulator_bits": acc, "input_lanes": lanes}, higher_is_better=False)
    moe = model.experts
    tok_macs = add("power__token__macs", round(mix.macs), "MAC",
                   "Σ over matrix products of out × in" + (" (experts × k/E)" if moe else ""),
                   {"model": from_model(model.name, model.source),
                    **({"experts_per_token / experts": from_model(
                        f"{moe[1]}/{moe[0]}", "num_experts_per_tok / num_local_experts")}
                       if moe else {})})
    e_fa = alpha[0] * v[0] ** 2 * c_fa[0]  # fJ per full-adder toggle
    terms: list[Metric] = []
    logic = tile_logic(base)
    if logic.bank_fa:
        product_tiles = sum(t.tiles * model.active_fraction(n)
                            for n, t in tmap.per_tensor.items() if is_product(model, n))
        terms.append(add("power__select_bank__energy_per_token",
                         product_tiles * logic.bank_fa * e_fa * 1e-15, "J",
                         "α · V² · C_fa × active product tiles × bank FA per tile × 1e-15  "
                         "[each tile fills its bank once per token]",
                         {"activity_factor": alpha, "supply_v": v,
                          "full_adder_switched_cap_ff": c_fa,
                          "product_tiles": from_model(product_tiles, "tiles of matrix "
                                                      "products (experts × k/E)"),
                          "bank_fa_per_tile": from_model(logic.bank_fa, "lanes·(2^(s−1) − 1)·"
                                                         "(a + s)")},
                         higher_is_better=False, description="select: the product banks"))
    if extras.activation_group:
        terms.append(add(
            "power__activation_groups__energy_per_token", extras.act_fa_per_token * e_fa
            * 1e-15, "J", "α · V² · C_fa × (Σ stage inputs ceil(in/A)·((A−1)·activation"
            "_bits + (m² + e)) + Σ products out·ceil(in / min(A, G))·(m² + e)) × 1e-15",
            {"activity_factor": alpha, "supply_v": v, "full_adder_switched_cap_ff": c_fa,
             "A": from_base(base, "datapath.activation_group_size"),
             "activation_groups": from_model(extras.act_groups, "Σ ceil(in/A) over "
                                             "stage inputs (absmax + scale units)"),
             "extra_multiplies": from_model(extras.act_blocks, "Σ out·ceil(in/min(A, G)) "
                                            "over products"),
             "fa_toggles": from_model(extras.act_fa_per_token, "taalasc/report/"
                                      "datapath.py (estimate)")}, higher_is_better=False,
            description="absmax, scale and extra multiplies of per-group activations"))
    if extras.asym_group:
        terms.append(add(
            "power__asymmetric__energy_per_token", extras.asym_fa_per_token * e_fa
            * 1e-15, "J", "α · V² · C_fa × (Σ stage inputs ceil(in/G)·(G−1)·activation"
            "_bits + Σ asymmetric products out·ceil(in/G)·((m² + e) + (2m + e))) × 1e-15",
            {"activity_factor": alpha, "supply_v": v, "full_adder_switched_cap_ff": c_fa,
             "multiply_adds": from_model(extras.asym_groups, "Σ out·ceil(in/G) over "
                                         "asymmetric products"),
             "fa_toggles": from_model(extras.asym_fa_per_token, "taalasc/report/"
                                      "datapath.py (estimate)")}, higher_is_better=False,
            description="S_g sums and min·S_g multiply-adds of asymmetric weight groups"))
    for m in energy_metrics(model, tmap, base, got, context, zero_bit_ratio):
        terms.append(add(m))
    e_tok = add("power__token__dynamic_joules",
                tok_macs.value * e_mac * 1e-15 + sum(t.value for t in terms), "J",
                "power__token__macs × power__mac__energy_fj × 1e-15 + "
                + " + ".join(t.name for t in terms),
                {"power__token__macs": from_metric(tok_macs),
                 "power__mac__energy_fj": from_metric(mac),
                 **{t.name: from_metric(t) for t in terms}}, higher_is_better=False)
    fas, dffs, sites = logic.full_adders, logic.dffs, logic.sites
    fa_t = from_pdk(pdk, "cells.full_adder_transistors")
    dies = got["design__die__count"]
    per_die = from_base(base, "tile_grid.tiles")
    fa_leak, dff_leak = from_pdk(pdk, "cells.full_adder_leakage_nw"), \
        from_pdk(pdk, "cells.dff_leakage_nw")
    cell_leak = from_pdk(pdk, "sram.bitcell_leakage_pw")
    sram_bits = sum(b.capacity_bytes for b in base.sram) * 8
    site_leak = fa_leak[0] / fa_t[0]  # one row-select transistor ≈ a full adder's per-transistor
    fas += extras.fa_per_tile  # per-group activation and asymmetric logic leaks too
    single = sites + logic.mux_transistors
    leak_die_w = per_die[0] * (fas * fa_leak[0] + dffs * dff_leak[0] + single * site_leak) \
        * 1e-9 + sram_bits * cell_leak[0] * 1e-12
    cold = add("power__leakage_25c__watts", leak_die_w * dies.value, "W",
               "dies × (tiles × (FAs·P_fa + DFFs·P_dff + (sites + mux transistors)·P_fa/T_fa) "
               "+ SRAM bits · P_cell)  [the PDK's 25 °C figures]",
               {"design__die__count": from_metric(dies), "tiles_per_die": per_die,
                "full_adders_per_tile": from_model(fas, "see design__transistors__count"
                                                   + (" (with the activation-format logic)"
                                                      if extras.fa_per_tile else "")),
                "dffs_per_tile": from_model(dffs, "see design__transistors__count"),
                "full_adder_leakage_nw": fa_leak, "dff_leakage_nw": dff_leak,
                "sites_per_tile": from_model(sites, "one row-select transistor per site"),
                "mux_transistors_per_tile": from_model(logic.mux_transistors, "one-hot muxes"),
                "full_adder_transistors": fa_t,
                "bitcell_leakage_pw": cell_leak,
                "sram_bits": (sram_bits, f"base array {base.name}: sram")},
               higher_is_better=False)
    factor = add(leakage_factor_metric())
    leak = add("power__leakage__watts", cold.value * factor.value, "W",
               "power__leakage_25c__watts × power__leakage__temperature_factor  (at the "
               "operating temperature)",
               {"power__leakage_25c__watts": from_metric(cold),
                "power__leakage__temperature_factor": from_metric(factor)},
               higher_is_better=False)
    agg = served_tokens_per_s(got)
    tree = add(clock_tree_metric(model, tmap, base, got))
    dyn = add("power__dynamic__watts", e_tok.value * agg.value + tree.value, "W",
              f"power__token__dynamic_joules × {agg.name} + power__clock_tree__watts",
              {"power__token__dynamic_joules": from_metric(e_tok),
               agg.name: from_metric(agg), "power__clock_tree__watts": from_metric(tree)},
              higher_is_better=False)
    used = got.get("design__tiles__active") or got["design__tiles__used"]
    period = got["timing__clock__period_ps"]
    clock = add("power__clock__watts",
                used.value * dffs * c_dff[0] * 1e-15 * v[0] ** 2 * 1e12 / period.value, "W",
                f"{used.name} × DFFs per tile × C_dff × V² × f  (clock toggles every "
                "cycle; unused tiles are clock-gated, idle used tiles are not)",
                {used.name: from_metric(used),
                 "dffs_per_tile": from_model(dffs, "lanes·activation_bits + accumulator_bits"),
                 "dff_switched_cap_ff": c_dff, "supply_v": v,
                 "timing__clock__period_ps": from_metric(period)}, higher_is_better=False)
    total = add("power__total__watts", dyn.value + clock.value + leak.value, "W",
                "power__dynamic__watts + power__clock__watts + power__leakage__watts",
                {"power__dynamic__watts": from_metric(dyn), "power__clock__watts":
                 from_metric(clock), "power__leakage__watts": from_metric(leak)},
                higher_is_better=False)
    add("power__die__watts", total.value / dies.value, "W",
        "power__total__watts / design__die__count",
        {"power__total__watts": from_metric(total), "design__die__count": from_metric(dies)},
        higher_is_better=False)
    add("power__token__joules", total.value / agg.value, "J",
        f"power__total__watts / {agg.name}",
        {"power__total__watts": from_metric(total),
         agg.name: from_metric(agg)}, higher_is_better=False)
    add("power__tokens__per_joule", agg.value / total.value, "tokens/J",
        f"{agg.name} / power__total__watts  (against the power of every die the model takes, "
        "at the operating temperature; no host, board, memory or cooling)",
        {agg.name: from_metric(agg), "power__total__watts": from_metric(total)},
        higher_is_better=True)
    return M
