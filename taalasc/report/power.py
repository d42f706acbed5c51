"""Power: dynamic α·C·V²·f per MAC, leakage, watts per die, joules per token.

A MAC with a b-bit constant weight and an a-bit activation reduces a·b partial-product bits,
about one full-adder toggle each, and the accumulator (accumulator_bits flip-flops) is
clocked once per row, i.e. once per ``input_lanes`` MACs; the b selected weight bits reach the
adder tree over column lines that span the tile height (row selection, like a ROM column):
    E_MAC = α · V² · (a·b·C_fa + accumulator_bits / lanes · C_dff + b · c_wire · tile height)
The KV cache is read once per token per past position: E_kv = context · KV bytes/token · 8 ·
E_read/bit. Power at the aggregate throughput T: P = E_token · T + P_clock + P_leak, with
P_clock = used tiles · DFFs · C_dff · V² · f (the clock toggles every cycle), and leakage
from every tile and SRAM bit of every die (unused tiles are not power-gated).
Encoders read the K and V of the whole sequence instead: E_attn = sram__attention__
bytes_per_sequence · 8 · E_read per token, and their power is taken at the encoder's tokens/s.
Per-group activation scales and asymmetric weight groups add α·V²·C_fa per full-adder toggle
they cost per token (taalasc/report/datapath.py) and their logic's leakage.
"""

from __future__ import annotations

from taalasc.report.area import TileMap, transistors_per_tile
from taalasc.report.datapath import DatapathExtras, is_product
from taalasc.report.metrics import Metric, from_base, from_metric, from_model, from_pdk
from taalasc.report.shape import ModelShape, _numel


def macs_per_token(model: ModelShape, tmap: TileMap) -> tuple[int, float]:
    """(MACs per token, bit-weighted mean weight bits over those MACs).

    Embedding tables are lookups, not products; a tied head (no lm_head tensor) multiplies by
    the embedding table, so it is counted as a product at the table's bits.
    """
    macs = 0
    weighted = 0.0
    for name, t in tmap.per_tensor.items():
        n = _numel(model.tensors[name])
        if not is_product(model, name):
            continue
        macs += n
        weighted += n * t.bits
    return macs, (weighted / macs if macs else 0.0)


def served_tokens_per_s(got: dict[str, Metric]) -> Metric:
    """The throughput power and cost are charged at: decode aggregate, or encoder tokens/s."""
    return got.get("throughput__aggregate__tokens_per_s") or \
        got["throughput__encoder__tokens_per_s"]


def power_metrics(model: ModelShape, tmap: TileMap, base, got: dict[str, Metric],
                  context: int, extras: DatapathExtras | None = None) -> list[Metric]:
    pdk = base.pdk
    extras = extras or DatapathExtras()
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(Metric(*args, **kw))
        return M[-1]

    macs, mean_bits = macs_per_token(model, tmap)
    alpha = from_base(base, "datapath.activity_factor")
    v = from_pdk(pdk, "electrical.supply_v")
    c_fa = from_pdk(pdk, "cells.full_adder_switched_cap_ff")
    c_dff = from_pdk(pdk, "cells.dff_switched_cap_ff")
    a_bits = from_base(base, "datapath.activation_bits")
    acc = from_base(base, "datapath.accumulator_bits")
    lanes = from_base(base, "weight_tile.input_lanes")
    c_wire = from_pdk(pdk, "electrical.top_metal_cap_ff_per_um")
    height_um = base.weight_tile.height_nm / 1000
    c_col = c_wire[0] * height_um
    e_mac = alpha[0] * v[0] ** 2 * (a_bits[0] * mean_bits * c_fa[0] + acc[0] / lanes[0] * c_dff[0]
                                    + mean_bits * c_col)
    mac = add("power__mac__energy_fj", e_mac, "fJ",
              "α · V² · (a · b̄ · C_fa + accumulator_bits / lanes · C_dff + b̄ · c_wire · "
              "tile height)",
              {"activity_factor": alpha, "supply_v": v, "activation_bits": a_bits,
               "top_metal_cap_ff_per_um": c_wire,
               "tile_height_um": (height_um, f"base array {base.name}: weight_tile.sites_y × "
                                  "site_pitch_y_nm"),
               "mean_weight_bits": from_model(mean_bits, "MAC-weighted mean bits"),
               "full_adder_switched_cap_ff": c_fa, "dff_switched_cap_ff": c_dff,
               "accumulator_bits": acc, "input_lanes": lanes}, higher_is_better=False)
    tok_macs = add("power__token__macs", macs, "MAC", "Σ over matrix products of out × in",
                   {"model": from_model(model.name, model.source)})
    e_read = from_pdk(pdk, "sram.read_energy_fj_per_bit")
    e_fa = alpha[0] * v[0] ** 2 * c_fa[0]  # fJ per full-adder toggle
    extra_fj, extra_in, extra_terms = 0.0, {}, ""
    if extras.activation_group:
        act = add("power__activation_groups__energy_per_token", extras.act_fa_per_token * e_fa
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
                  description="absmax, scale and extra multiplies of per-group activations")
        extra_fj += extras.act_fa_per_token * e_fa
        extra_in["power__activation_groups__energy_per_token"] = from_metric(act)
        extra_terms += " + power__activation_groups__energy_per_token"
    if extras.asym_group:
        asym = add("power__asymmetric__energy_per_token", extras.asym_fa_per_token * e_fa
                   * 1e-15, "J", "α · V² · C_fa × (Σ stage inputs ceil(in/G)·(G−1)·activation"
                   "_bits + Σ asymmetric products out·ceil(in/G)·((m² + e) + (2m + e))) × 1e-15",
                   {"activity_factor": alpha, "supply_v": v, "full_adder_switched_cap_ff": c_fa,
                    "multiply_adds": from_model(extras.asym_groups, "Σ out·ceil(in/G) over "
                                                "asymmetric products"),
                    "fa_toggles": from_model(extras.asym_fa_per_token, "taalasc/report/"
                                             "datapath.py (estimate)")}, higher_is_better=False,
                   description="S_g sums and min·S_g multiply-adds of asymmetric weight groups")
        extra_fj += extras.asym_fa_per_token * e_fa
        extra_in["power__asymmetric__energy_per_token"] = from_metric(asym)
        extra_terms += " + power__asymmetric__energy_per_token"
    if model.is_decoder():
        kv = got["sram__kv_cache__bytes_per_token"]
        kv_fj = context * kv.value * 8 * e_read[0]
        e_tok = add("power__token__dynamic_joules", (macs * e_mac + kv_fj + extra_fj) * 1e-15,
                    "J", "(power__token__macs × power__mac__energy_fj + context × KV bytes/token "
                    "× 8 × E_read) × 1e-15" + extra_terms,
                    {"power__token__macs": from_metric(tok_macs), "power__mac__energy_fj":
                     from_metric(mac), "context": from_model(context, "--context"),
                     "sram__kv_cache__bytes_per_token": from_metric(kv),
                     "read_energy_fj_per_bit": e_read, **extra_in}, higher_is_better=False)
    else:
        seq = got["sram__attention__bytes_per_sequence"]
        attn_fj = seq.value * 8 * e_read[0]
        e_tok = add("power__token__dynamic_joules", (macs * e_mac + attn_fj + extra_fj) * 1e-15,
                    "J", "(power__token__macs × power__mac__energy_fj + sram__attention__bytes_"
                    "per_sequence × 8 × E_read) × 1e-15" + extra_terms,
                    {"power__token__macs": from_metric(tok_macs), "power__mac__energy_fj":
                     from_metric(mac),
                     "sram__attention__bytes_per_sequence": from_metric(seq),
                     "read_energy_fj_per_bit": e_read, **extra_in}, higher_is_better=False)
    fas, dffs, sites = transistors_per_tile(base)
    fa_t = from_pdk(pdk, "cells.full_adder_transistors")
    dies = got["design__die__count"]
    per_die = from_base(base, "tile_grid.tiles")
    fa_leak, dff_leak = from_pdk(pdk, "cells.full_adder_leakage_nw"), \
        from_pdk(pdk, "cells.dff_leakage_nw")
    cell_leak = from_pdk(pdk, "sram.bitcell_leakage_pw")
    sram_bits = sum(b.capacity_bytes for b in base.sram) * 8
    site_leak = fa_leak[0] / fa_t[0]  # one row-select transistor ≈ a full adder's per-transistor
    fas += extras.fa_per_tile  # per-group activation and asymmetric logic leaks too
    leak_die_w = per_die[0] * (fas * fa_leak[0] + dffs * dff_leak[0] + sites * site_leak) \
        * 1e-9 + sram_bits * cell_leak[0] * 1e-12
    leak = add("power__leakage__watts", leak_die_w * dies.value, "W",
               "dies × (tiles × (FAs·P_fa + DFFs·P_dff + sites·P_fa/T_fa) + SRAM bits · P_cell)",
               {"design__die__count": from_metric(dies), "tiles_per_die": per_die,
                "full_adders_per_tile": from_model(fas, "see design__transistors__count"
                                                   + (" (with the activation-format logic)"
                                                      if extras.fa_per_tile else "")),
                "dffs_per_tile": from_model(dffs, "see design__transistors__count"),
                "full_adder_leakage_nw": fa_leak, "dff_leakage_nw": dff_leak,
                "sites_per_tile": from_model(sites, "one row-select transistor per bit site"),
                "full_adder_transistors": fa_t,
                "bitcell_leakage_pw": cell_leak,
                "sram_bits": (sram_bits, f"base array {base.name}: sram")},
               higher_is_better=False)
    agg = served_tokens_per_s(got)
    dyn = add("power__dynamic__watts", e_tok.value * agg.value, "W",
              f"power__token__dynamic_joules × {agg.name}",
              {"power__token__dynamic_joules": from_metric(e_tok),
               agg.name: from_metric(agg)}, higher_is_better=False)
    used = got["design__tiles__used"]
    period = got["timing__clock__period_ps"]
    clock = add("power__clock__watts",
                used.value * dffs * c_dff[0] * 1e-15 * v[0] ** 2 * 1e12 / period.value, "W",
                "design__tiles__used × DFFs per tile × C_dff × V² × f  (clock toggles every "
                "cycle; unused tiles are clock-gated, idle used tiles are not)",
                {"design__tiles__used": from_metric(used),
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
    return M
