"""The rest of the die's energy: everything a token costs besides the weight tiles' MACs.

Energy per token, each a metric with its inputs (α = datapath.activity_factor, V = supply,
e_fa = α·V²·C_fa per full-adder toggle, a = activation_bits, A = accumulator_bits, P =
positions attended: --context for a decoder, the sequence length for an encoder):
  attention   2·layers·q_width·P activation × activation MACs (QKᵀ and the weighted sum of V
              over P positions) at a² + 2a FA each (an a × a array multiplier and a 2a-bit
              accumulate), plus layers·heads·P softmax scores at EXP_FMA + 1 FP16 multiplies
              and as many FP16 adds each (exp by range reduction and a degree-3 polynomial
              in Horner form, the running sum, the normalising multiply);
  vector      norms: Σ norm-vector widths × (3 FP16 multiplies + 1 add: square, accumulate,
              × rsqrt, × weight); residual adds: 2·layers·hidden FP16 adds; the MLP
              activation (SiLU·up, GELU): one per input of the down projection (experts at
              k/E), exp + add + reciprocal (RECIPROCAL_FMA Newton multiply-adds) + 2
              multiplies, i.e. EXP_FMA + RECIPROCAL_FMA + 2 multiplies and EXP_FMA + 1 +
              RECIPROCAL_FMA adds;
  embedding   a lookup reads one row of the table: width × (vias per weight × α·V²·c_wire·
              tile height + one FP16 multiply by the scale);
  kv_cache    reads: P·KV bytes per token·8·E_read (every past position's K and V, as
              before); writes: KV bytes per token·8·E_read (this token's K and V; a write is
              counted at the read energy: full-swing bit lines either way, estimate);
  broadcast   every matrix product moves bits over registered hops (timing.py: one hop =
              pitch_x + pitch_y, a register at each tile): the input vector down the column
              of out-tiles of each input block (in·a·out_tiles), the partial sums across the
              input blocks (out·A·(in_blocks − 1)) and the output to the next stage
              (out·a·ceil(√tiles)); each bit-hop costs α·V²·(c_wire·hop + C_dff); experts at
              k/E;
  io          token ids in and out (2·ceil(log2 vocab) bits) and the hidden state across each
              die boundary ((dies − 1)·hidden·a bits) at IO_PJ_PER_BIT.
Power (W), not per token:
  clock tree  the wires from the clock root to the active tiles' registers, per die an
              H-tree 1.5·S·√N long (S = die side, N = active tiles on the die; each of the
              log4 N H levels adds 3 segments per H, Σ = 1.5·S·√N) plus one spine of tile
              width + height per active tile; P = c_wire·length·V²·f (every cycle; buffers'
              own input capacitance not counted: a lower bound);
  leakage at operating temperature: the PDK's 25 °C leakage × F, the subthreshold current's
              ratio I(T)/I(25 °C) = (T/T0)²·exp(q/(n·k)·(Vth(T0)/T0 − Vth(T)/T)),
              Vth(T) = Vth(T0) + dVth/dT·(T − T0).
Not modelled: the attention unit's width and cycles (folded into
pipeline_stages_per_layer), sliding-window layers (attend and cache every position), SerDes
idle power, the host.
"""

from __future__ import annotations

import math

from taalasc.report.area import TileMap, active_tiles
from taalasc.report.datapath import fp_add_fa, fp_multiply_fa, is_lookup, is_product
from taalasc.report.encoding import vias_per_weight
from taalasc.report.metrics import Metric, assumed, from_base, from_metric, from_model, from_pdk
from taalasc.report.shape import CONSTANT_BITS, ModelShape, _numel, stage_of

# Unit costs, in FP16 multiply-adds (estimates; see the module docstring).
EXP_FMA = 4          # range reduction + a degree-3 polynomial, Horner form
RECIPROCAL_FMA = 2   # two Newton-Raphson steps from a table seed
# Off-die signalling, per bit: long-reach SerDes links (PCIe-class) are a few pJ/bit.
IO_PJ_PER_BIT = 5.0
IO_WHY = "~5 pJ/bit, a long-reach SerDes link (PCIe class, a few pJ/bit)"
# Leakage at operating temperature (estimates for an N7-class FinFET; every PDK gets them).
OPERATING_TEMP_C = 85.0
OPERATING_TEMP_WHY = "85 °C junction, a card under load in an air-cooled server"
VTH_V = 0.30
VTH_WHY = "threshold of a standard-Vt FinFET at a ~0.75 V supply"
SUBTHRESHOLD_N = 1.10
SUBTHRESHOLD_N_WHY = "~65 mV/decade FinFET swing at 25 °C = n·ln10·kT/q, n = 65 / 59.2"
DVTH_DT_V_PER_K = -0.7e-3
DVTH_DT_WHY = "Vth falls ~0.5–1 mV/K in bulk and FinFET devices"
H_TREE_FACTOR = 1.5
_Q_OVER_K = 11604.518  # K/V, elementary charge / Boltzmann constant


def leakage_temperature_factor(temp_c: float, ref_c: float = 25.0, vth_v: float = VTH_V,
                               n: float = SUBTHRESHOLD_N,
                               dvth_dt: float = DVTH_DT_V_PER_K) -> float:
    """I_sub(T) / I_sub(T0) = (T/T0)²·exp(q/(n·k)·(Vth(T0)/T0 − Vth(T)/T))."""
    t0, t = ref_c + 273.15, temp_c + 273.15
    vth_t = vth_v + dvth_dt * (t - t0)
    return (t / t0) ** 2 * math.exp(_Q_OVER_K / n * (vth_v / t0 - vth_t / t))


def attended_positions(model: ModelShape, context: int) -> tuple[int, str]:
    if model.is_decoder():
        return context, "--context (every past position)"
    seq, source = model.sequence_length()
    return seq, f"sequence length ({source})"


def _first_rows(model: ModelShape, suffixes: tuple[str, ...]) -> int:
    for name in sorted(model.tensors):
        if name.endswith(suffixes):
            return model.tensors[name][0]
    return 0


def _hidden(model: ModelShape) -> int:
    value = (model.config or {}).get("hidden_size")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return max((s[-1] for n, s in model.tensors.items() if is_lookup(n) and len(s) == 2),
               default=0)


def energy_metrics(model: ModelShape, tmap: TileMap, base, got: dict[str, Metric],
                   context: int, zero_bit_ratio: float) -> list[Metric]:
    """The per-token energy terms (J), in the order of the module docstring."""
    pdk, dp, grid = base.pdk, base.datapath, base.tile_grid
    alpha, v = from_base(base, "datapath.activity_factor"), from_pdk(pdk, "electrical.supply_v")
    c_fa = from_pdk(pdk, "cells.full_adder_switched_cap_ff")
    c_dff = from_pdk(pdk, "cells.dff_switched_cap_ff")
    c_wire = from_pdk(pdk, "electrical.top_metal_cap_ff_per_um")
    a_bits = from_base(base, "datapath.activation_bits")
    a = a_bits[0]
    e_fa = alpha[0] * v[0] ** 2 * c_fa[0]  # fJ per FA toggle
    fa_in = {"activity_factor": alpha, "supply_v": v, "full_adder_switched_cap_ff": c_fa}
    mul, add_fa = fp_multiply_fa(), fp_add_fa()
    fp_in = {"fp16_multiply_fa": assumed(mul, "m² + e, m = 11, e = 5 (datapath.py)"),
             "fp16_add_fa": assumed(add_fa, "2m + e (datapath.py)")}
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(Metric(*args, **kw))
        return M[-1]

    positions, p_source = attended_positions(model, context)
    layers = model.layers
    q_width = _first_rows(model, ("q_proj.weight", "attention.self.query.weight"))
    heads = (model.config or {}).get("num_attention_heads") or 0
    attn_macs = 2 * layers * q_width * positions
    scores = layers * heads * positions
    per_score = (EXP_FMA + 1) * (mul + add_fa)
    add("power__attention__energy_per_token",
        e_fa * (attn_macs * (a * a + 2 * a) + scores * per_score) * 1e-15, "J",
        "α·V²·C_fa × (2·layers·q_width·P × (a² + 2a) + layers·heads·P × (EXP_FMA + 1)·(FP16 "
        "multiply + add)) × 1e-15  [QKᵀ and AV MACs, softmax; estimate]",
        {**fa_in, **fp_in, "layers": from_model(layers, "num_hidden_layers"),
         "q_width": from_model(q_width, "q_proj output rows (heads × head_dim)"),
         "heads": from_model(heads, "num_attention_heads"), "P": from_model(positions, p_source),
         "activation_bits": a_bits,
         "EXP_FMA": assumed(EXP_FMA, "exp = range reduction + degree-3 polynomial (Horner)")},
        higher_is_better=False, description="attention scores, softmax and the weighted sum")

    hidden = _hidden(model)
    norm_elems = sum(_numel(s) for n, s in model.tensors.items()
                     if len(s) == 1 and "norm" in n.lower() and n.endswith("weight"))
    act_elems = sum(_numel(model.tensors[n][1:]) * model.active_fraction(n)
                    for n in tmap.per_tensor if stage_of(n) == "mlp_out")
    residual = 2 * layers * hidden
    act_mul, act_add = EXP_FMA + RECIPROCAL_FMA + 2, EXP_FMA + 1 + RECIPROCAL_FMA
    add("power__vector__energy_per_token",
        e_fa * (norm_elems * (3 * mul + add_fa) + residual * add_fa
                + act_elems * (act_mul * mul + act_add * add_fa)) * 1e-15, "J",
        "α·V²·C_fa × (norm elements × (3 multiplies + 1 add) + 2·layers·hidden adds + MLP "
        "activations × ((EXP_FMA + RECIPROCAL_FMA + 2) multiplies + (EXP_FMA + 1 + "
        "RECIPROCAL_FMA) adds)) × 1e-15  [FP16 units; estimate]",
        {**fa_in, **fp_in, "norm_elements": from_model(norm_elems, "Σ widths of the norm "
                                                       "vectors (…norm….weight)"),
         "residual_adds": from_model(residual, "2 per layer × hidden_size"),
         "mlp_activations": from_model(act_elems, "Σ down-projection inputs (experts at k/E)"),
         "EXP_FMA": assumed(EXP_FMA, "exp = range reduction + degree-3 polynomial"),
         "RECIPROCAL_FMA": assumed(RECIPROCAL_FMA, "two Newton-Raphson steps")},
        higher_is_better=False, description="norms, residual adds and the MLP activation")

    tile = base.weight_tile
    col_fj = alpha[0] * v[0] ** 2 * c_wire[0] * tile.height_nm / 1000
    lookup_fj = 0.0
    for name, shape in model.tensors.items():
        if len(shape) == 2 and is_lookup(name) and not is_product(model, name):
            bits = tmap.per_tensor[name].bits if name in tmap.per_tensor else CONSTANT_BITS
            lookup_fj += shape[1] * (vias_per_weight(tile, bits, zero_bit_ratio) * col_fj
                                     + mul * e_fa)
    add("power__embedding__energy_per_token", lookup_fj * 1e-15, "J",
        "Σ lookup tables width × (vias per weight × α·V²·c_wire·tile height + FP16 multiply "
        "× α·V²·C_fa) × 1e-15  [one row read and scaled]",
        {**fa_in, **fp_in, "top_metal_cap_ff_per_um": c_wire,
         "tile_height_um": (tile.height_nm / 1000, f"base array {base.name}: weight_tile")},
        higher_is_better=False, description="the embedding lookup")

    e_read = from_pdk(pdk, "sram.read_energy_fj_per_bit")
    write_in = {"write_energy_fj_per_bit": assumed(e_read[0], "a write counted at the read "
                                                   "energy (full-swing bit lines)")}
    if model.is_decoder():
        kv = got["sram__kv_cache__bytes_per_token"]
        add("power__kv_cache__energy_per_token",
            (context * kv.value * 8 * e_read[0] + kv.value * 8 * e_read[0]) * 1e-15, "J",
            "(context × KV bytes/token × 8 × E_read  [reads] + KV bytes/token × 8 × E_write "
            "[writes]) × 1e-15",
            {"context": from_model(context, "--context"),
             "sram__kv_cache__bytes_per_token": from_metric(kv), "read_energy_fj_per_bit":
             e_read, **write_in}, higher_is_better=False,
            description="KV-cache SRAM reads and writes")
    else:
        seq = got["sram__attention__bytes_per_sequence"]
        add("power__kv_cache__energy_per_token",
            (seq.value * 8 * e_read[0] + seq.value / positions * 8 * e_read[0]) * 1e-15, "J",
            "(sram__attention__bytes_per_sequence × 8 × E_read  [reads] + its share per token "
            "× 8 × E_write  [writes]) × 1e-15",
            {"sram__attention__bytes_per_sequence": from_metric(seq),
             "sequence_length": from_model(positions, p_source),
             "read_energy_fj_per_bit": e_read, **write_in}, higher_is_better=False,
            description="attention-buffer SRAM reads and writes")

    acc = dp.accumulator_bits
    bit_hops = 0.0
    for name, t in tmap.per_tensor.items():
        if not is_product(model, name):
            continue
        shape = model.tensors[name]
        out, fan_in = shape[0], _numel(shape[1:])
        out_tiles = t.tiles // t.in_blocks
        bit_hops += model.active_fraction(name) * (
            fan_in * a * out_tiles + out * acc * (t.in_blocks - 1)
            + out * a * math.ceil(math.sqrt(t.tiles)))
    hop_um = (grid.pitch_x_nm + grid.pitch_y_nm) / 1000
    add("power__broadcast__energy_per_token",
        alpha[0] * v[0] ** 2 * (c_wire[0] * hop_um + c_dff[0]) * bit_hops * 1e-15, "J",
        "α·V²·(c_wire·hop + C_dff) × Σ products (in·a·out_tiles + out·A·(in_blocks − 1) + "
        "out·a·ceil(√tiles)) × 1e-15  [registered hops; experts at k/E]",
        {"activity_factor": alpha, "supply_v": v, "top_metal_cap_ff_per_um": c_wire,
         "dff_switched_cap_ff": c_dff,
         "hop_um": (hop_um, f"base array {base.name}: tile_grid.pitch_x_nm + pitch_y_nm"),
         "bit_hops": from_model(round(bit_hops), "Σ over matrix products"),
         "activation_bits": a_bits, "accumulator_bits": from_base(base,
                                                                  "datapath.accumulator_bits")},
        higher_is_better=False, description="activations and partial sums across the die")

    dies = got["design__die__count"]
    vocab = (model.config or {}).get("vocab_size") or 2
    host_bits = 2 * math.ceil(math.log2(max(vocab, 2)))
    io_bits = host_bits + (dies.value - 1) * hidden * a
    add("power__io__energy_per_token", io_bits * IO_PJ_PER_BIT * 1e-12, "J",
        "(2·ceil(log2 vocab) + (design__die__count − 1)·hidden·a) bits × IO_PJ_PER_BIT × 1e-12"
        "  [token ids in and out, the hidden state across each die boundary]",
        {"vocab_size": from_model(vocab, "vocab_size"), "hidden": from_model(hidden, "hidden_size"),
         "design__die__count": from_metric(dies), "activation_bits": a_bits,
         "IO_PJ_PER_BIT": assumed(IO_PJ_PER_BIT, IO_WHY)},
        higher_is_better=False, description="off-die signalling (SerDes idle power not "
        "modelled)")
    return M


def clock_tree_metric(model: ModelShape, tmap: TileMap, base, got: dict[str, Metric]) -> Metric:
    pdk, tile = base.pdk, base.weight_tile
    dies, period = got["design__die__count"], got["timing__clock__period_ps"]
    c_wire = from_pdk(pdk, "electrical.top_metal_cap_ff_per_um")
    v = from_pdk(pdk, "electrical.supply_v")
    per_die = active_tiles(model, tmap) / dies.value
    side_um = math.sqrt(base.die.area_mm2) * 1000
    length_um = H_TREE_FACTOR * side_um * math.sqrt(per_die) + \
        per_die * (tile.width_nm + tile.height_nm) / 1000
    watts = dies.value * c_wire[0] * length_um * 1e-15 * v[0] ** 2 * 1e12 / period.value
    return Metric("power__clock_tree__watts", watts, "W",
                  "design__die__count × c_wire × (1.5·die side·√(active tiles per die) + active "
                  "tiles per die × (tile width + height)) × V² × f  [H-tree and tile spines; "
                  "buffers not counted]",
                  {"design__die__count": from_metric(dies),
                   "active_tiles_per_die": from_model(per_die, "design__tiles__used (active "
                                                      "experts only) / dies"),
                   "die_side_um": (side_um, f"base array {base.name}: √(die area)"),
                   "tile_width_plus_height_um": ((tile.width_nm + tile.height_nm) / 1000,
                                                 f"base array {base.name}: weight_tile"),
                   "top_metal_cap_ff_per_um": c_wire, "supply_v": v,
                   "timing__clock__period_ps": from_metric(period),
                   "H_tree_factor": assumed(H_TREE_FACTOR, "H-tree over N leaves in a square "
                                            "of side S is 1.5·S·√N long")},
                  higher_is_better=False, description="clock distribution wires")


def leakage_factor_metric() -> Metric:
    return Metric("power__leakage__temperature_factor",
                  leakage_temperature_factor(OPERATING_TEMP_C), "×",
                  "(T/T0)²·exp(q/(n·k)·(Vth/T0 − (Vth + dVth/dT·(T − T0))/T)), T0 = 25 °C  "
                  "[subthreshold current at T over the PDK's 25 °C figures]",
                  {"T_c": assumed(OPERATING_TEMP_C, OPERATING_TEMP_WHY),
                   "Vth_v": assumed(VTH_V, VTH_WHY), "n": assumed(SUBTHRESHOLD_N,
                                                                 SUBTHRESHOLD_N_WHY),
                   "dVth_dT_v_per_k": assumed(DVTH_DT_V_PER_K, DVTH_DT_WHY)},
                  higher_is_better=False, description="leakage at operating temperature over "
                  "leakage at 25 °C")
