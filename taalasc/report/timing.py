"""Timing: the weight tile's critical path, the longest top-metal route, Fmax, tokens/s.

Tile path = FA delay × (1 product-selection level + 3:2 carry-save levels for the
lanes × max_weight_bits partial products + ceil(log2(accumulator_bits)) prefix-adder levels)
+ DFF clock-to-Q + setup. Route = distributed RC, Elmore: 0.5·r·c·L² + 2·R_via·c·L
(r = top-metal sheet R / route width). Dataflow buses are registered at every tile they cross
(assumption: the base array's tiles carry a register on each bus port), so the clock is bound by
one hop (pitch_x + pitch_y), and a route costs one cycle per hop. Decode is sequential: one token leaves the pipeline
before the next of the same stream enters, so single-stream tokens/s = f / cycles per token.
Concurrent users fill the pipeline: aggregate = min(users × single, f / busiest stage cycles).
Encoders (BERT family) have no decode loop: a full-sequence forward streams the L tokens of a
sequence through every stage back to back, so tokens/s = f / busiest stage cycles and
sequences/s = tokens/s / L, with L = max_position_embeddings (else 128). A sequence's latency
adds, per layer, the wait for its last token (bidirectional attention needs every token's K
and V): depth + layers × (L − 1) × busiest stage cycles.
Per-group activation scales and asymmetric weight groups add cycles on every matrix stage
(taalasc/report/datapath.py). The adder tree's operands depend on the weight-tile encoding
(taalasc/report/encoding.py): lanes × max_weight_bits (shift-and-add), lanes × ceil(B/s)
(select), lanes (ternary); a select tile first fills its product bank, ceil(bank adder levels
× FA delay / period) cycles on every matrix stage.
"""

from __future__ import annotations

import math

from taalasc.report.area import PlacementFacts, TileMap
from taalasc.report.datapath import (DatapathExtras, extra_cycles, is_lookup, is_product,
                                     stage_key)
from taalasc.report.encoding import bank_levels, tile_logic
from taalasc.report.metrics import Metric, assumed, from_base, from_metric, from_model, from_pdk
from taalasc.report.shape import ModelShape


def csa_levels(operands: int) -> int:
    """3:2 carry-save levels that reduce ``operands`` rows to two (Wallace/Dadda count)."""
    levels = 0
    while operands > 2:
        operands = 2 * (operands // 3) + operands % 3
        levels += 1
    return levels


def elmore_ps(length_um: float, r_ohm_per_um: float, c_ff_per_um: float, via_ohm: float) -> float:
    """Distributed RC line, Elmore delay 0.5·r·c·L², plus a via at each end driving the line."""
    c_total_f = c_ff_per_um * length_um * 1e-15
    return (0.5 * r_ohm_per_um * length_um * c_total_f + 2 * via_ohm * c_total_f) * 1e12


def route_hops(tiles: int) -> int:
    """Registered hops across a square region of ``tiles`` tiles: in along one side, out along
    the other (2·ceil(√tiles)); a tensor on one tile needs none."""
    return 0 if tiles <= 1 else 2 * math.ceil(math.sqrt(tiles))


def token_cycles(model: ModelShape, tmap: TileMap, base) -> tuple[int, int]:
    """(cycles for one token through the whole pipeline, cycles of the busiest stage).

    A matrix stage takes rows_per_tile cycles (every tile streams its rows, one per cycle,
    all tiles in parallel) + ceil(log2(in_blocks)) cycles to add the tiles' partial sums
    + route_hops(tiles) registered hops to bring the inputs in and the sums out.
    Parallel tensors of a stage (q/k/v, gate/up) overlap. Each layer adds the base array's
    pipeline_stages_per_layer (norm, attention, residual registers).
    """
    stages: dict[tuple[int, str], int] = {}
    for name, t in tmap.per_tensor.items():
        if is_lookup(name):
            cycles = 1  # a lookup, not a matrix product
        else:
            cycles = t.rows_per_tile + math.ceil(math.log2(t.in_blocks)) + route_hops(t.tiles)
        key = stage_key(model, name)
        stages[key] = max(stages.get(key, 0), cycles)
    per_layer = base.clock.pipeline_stages_per_layer
    total = sum(stages.values()) + per_layer * model.layers
    busiest = max(list(stages.values()) + [per_layer])
    return total, busiest


def timing_metrics(model: ModelShape, tmap: TileMap, base, facts: PlacementFacts,
                   users: int, got: dict[str, Metric],
                   extras: DatapathExtras | None = None) -> list[Metric]:
    pdk, tile, dp = base.pdk, base.weight_tile, base.datapath
    extras = extras or DatapathExtras()
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(Metric(*args, **kw))
        return M[-1]

    operands = tile_logic(base).tree_operands
    csa = csa_levels(operands)
    cpa = math.ceil(math.log2(dp.accumulator_bits))
    operand_text = {"select": "lanes × ceil(max_weight_bits / bits_per_site)",
                    "ternary": "lanes"}.get(tile.encoding, "lanes × max_weight_bits")
    depth = add("timing__tile__adder_depth", 1 + csa + cpa, "FA levels",
                f"1 (product selection) + csa_levels({operand_text}) + "
                "ceil(log2(accumulator_bits))",
                {"input_lanes": from_base(base, "weight_tile.input_lanes"),
                 "max_weight_bits": from_base(base, "weight_tile.max_weight_bits"),
                 "encoding": from_base(base, "weight_tile.encoding"),
                 "accumulator_bits": from_base(base, "datapath.accumulator_bits"),
                 "csa_levels": from_model(csa, f"3:2 levels for {operands} operands"),
                 "product_selection": assumed(1, "an AND/mux level, counted as one FA delay"),
                 "prefix_levels": assumed(cpa, "final adder as a prefix adder, one FA delay "
                                          "per level")}, higher_is_better=False)
    fa_d = from_pdk(pdk, "cells.full_adder_delay_ps")
    clk_q, setup = from_pdk(pdk, "cells.dff_clk_to_q_ps"), from_pdk(pdk, "cells.dff_setup_ps")
    reg = clk_q[0] + setup[0]
    tile_ps = add("timing__tile__critical_path_ps", depth.value * fa_d[0] + reg, "ps",
                  "timing__tile__adder_depth × FA delay + clk→Q + setup",
                  {"timing__tile__adder_depth": from_metric(depth), "full_adder_delay_ps": fa_d,
                   "dff_clk_to_q_ps": clk_q, "dff_setup_ps": setup}, higher_is_better=False)
    grid = base.tile_grid
    if facts.longest_route_nm is not None:
        length = add("timing__route__longest_um", facts.longest_route_nm / 1000, "µm",
                     "from placement (longest top-metal dataflow route)",
                     {"placement.longest_route_nm": (facts.longest_route_nm, "compile placement")},
                     higher_is_better=False)
    else:
        biggest = max((t.tiles for t in tmap.per_tensor.values()), default=1)
        side = math.ceil(math.sqrt(min(biggest, grid.tiles)))
        span_nm = side * (grid.pitch_x_nm + grid.pitch_y_nm)
        half_perimeter = base.die.width_nm + base.die.height_nm
        est = min(span_nm + max(grid.pitch_x_nm, grid.pitch_y_nm), half_perimeter)
        length = add("timing__route__longest_um", est / 1000, "µm",
                     "min(ceil(√tiles of the largest tensor) × (pitch_x + pitch_y) + one pitch, "
                     "die half-perimeter)  [geometric estimate, no placement]",
                     {"largest_tensor_tiles": from_model(biggest, "tile mapping"),
                      "pitch_x_nm": from_base(base, "tile_grid.pitch_x_nm"),
                      "pitch_y_nm": from_base(base, "tile_grid.pitch_y_nm"),
                      "die_half_perimeter_nm": (half_perimeter, f"base array {base.name}: die")},
                     higher_is_better=False)
    sheet = from_pdk(pdk, "electrical.top_metal_sheet_res_ohm_per_sq")
    width = from_base(base, "datapath.route_width_nm")
    r_um = sheet[0] / (width[0] / 1000)
    cap, via = from_pdk(pdk, "electrical.top_metal_cap_ff_per_um"), from_pdk(pdk,
                                                                             "electrical.via_res_ohm")
    add("timing__route__elmore_ps", elmore_ps(length.value, r_um, cap[0], via[0]), "ps",
        "0.5·(sheet_R / width)·c·L² + 2·R_via·c·L  (distributed RC, Elmore) of the longest "
        "route as one unregistered wire, for reference only: not in the clock period, routes "
        "are pipelined with a register at every tile they cross (timing__route__hops cycles; "
        "the clock holds one hop, timing__route__hop_elmore_ps)",
        {"L_um": from_metric(length), "top_metal_sheet_res_ohm_per_sq": sheet,
         "route_width_nm": width, "top_metal_cap_ff_per_um": cap, "via_res_ohm": via},
        higher_is_better=False, description="the longest route if it were not registered "
        "(for reference; the clock is bound by one hop)")
    hop_um = (grid.pitch_x_nm + grid.pitch_y_nm) / 1000
    hop = add("timing__route__hop_elmore_ps", elmore_ps(hop_um, r_um, cap[0], via[0]), "ps",
              "Elmore delay of one registered hop, L = pitch_x + pitch_y",
              {"hop_um": (hop_um, f"base array {base.name}: tile_grid.pitch_x_nm + pitch_y_nm"),
               "top_metal_sheet_res_ohm_per_sq": sheet, "route_width_nm": width,
               "top_metal_cap_ff_per_um": cap, "via_res_ohm": via,
               "registered_hops": assumed(True, "dataflow buses are registered at every tile "
                                          "they cross")}, higher_is_better=False)
    add("timing__route__hops", math.ceil(length.value / hop_um), "cycles",
        "ceil(timing__route__longest_um / hop length)",
        {"timing__route__longest_um": from_metric(length), "hop_um": (hop_um, "pitch_x + pitch_y")},
        higher_is_better=False, description="latency of the longest route, one cycle per hop")
    crit = max(tile_ps.value, hop.value + reg)
    add("timing__clock__fmax_mhz", 1e6 / crit, "MHz",
        "1e6 / max(timing__tile__critical_path_ps, timing__route__hop_elmore_ps + clk→Q + setup)",
        {"timing__tile__critical_path_ps": from_metric(tile_ps),
         "timing__route__hop_elmore_ps": from_metric(hop), "register_overhead_ps": (reg,
                                                                                    "clk→Q + setup")},
        higher_is_better=True)
    target = from_base(base, "clock.target_period_ps")
    add("timing__setup__ws", target[0] - crit, "ps", "clock.target_period_ps − critical path",
        {"target_period_ps": target, "critical_path_ps": (crit, "max of tile and route paths")},
        higher_is_better=True, description="worst setup slack at the target clock")
    period = add("timing__clock__period_ps", max(float(target[0]), crit), "ps",
                 "max(clock.target_period_ps, critical path)",
                 {"target_period_ps": target, "critical_path_ps": (crit, "tile or route")},
                 higher_is_better=False)
    total, busiest = token_cycles(model, tmap, base)
    stages = from_base(base, "clock.pipeline_stages_per_layer")
    pipe_formula = ("Σ stages (rows_per_tile + ceil(log2 in_blocks) + 2·ceil(√tiles) hops) + "
                    "layers × pipeline_stages_per_layer")
    pipe_inputs = {"layers": from_model(model.layers, "num_hidden_layers"),
                   "pipeline_stages_per_layer": stages}
    act_cycles, asym_cycles = extra_cycles(extras, fa_d[0], period.value)
    if extras.activation_group:
        act = add("timing__activation_groups__cycles_per_stage", act_cycles, "cycles",
                  "ceil((ceil(log2 A)·comparator levels + FP16 multiply levels) × FA delay / "
                  "period) + ceil(FP16 multiply levels × FA delay / period)  [absmax tree and "
                  "scale, then the extra multiply; estimate]",
                  {"A": from_base(base, "datapath.activation_group_size"),
                   "scale_levels": from_model(extras.act_scale_levels, "FA delays, "
                                              "taalasc/report/datapath.py"),
                   "multiply_levels": from_model(extras.act_multiply_levels, "FA delays"),
                   "full_adder_delay_ps": fa_d,
                   "timing__clock__period_ps": from_metric(period)}, higher_is_better=False)
        total += act_cycles * extras.act_stages
        pipe_formula += " + grouped stages × timing__activation_groups__cycles_per_stage"
        pipe_inputs["timing__activation_groups__cycles_per_stage"] = from_metric(act)
        pipe_inputs["grouped_stages"] = from_model(extras.act_stages, "matrix stages")
    levels = bank_levels(base)
    if levels:
        bank = add("timing__select_bank__cycles_per_stage",
                   math.ceil(levels * fa_d[0] / period.value), "cycles",
                   "ceil((ceil(log2(activation_bits + bits_per_site)) + 1) × FA delay / period)"
                   "  [the product bank's prefix adders, once per stage input; estimate]",
                   {"bank_levels": from_model(levels, "taalasc/report/encoding.py"),
                    "full_adder_delay_ps": fa_d,
                    "timing__clock__period_ps": from_metric(period)}, higher_is_better=False)
        matrix_stages = len({stage_key(model, n) for n in tmap.per_tensor
                             if is_product(model, n)})
        total += bank.value * matrix_stages
        pipe_formula += " + matrix stages × timing__select_bank__cycles_per_stage"
        pipe_inputs["timing__select_bank__cycles_per_stage"] = from_metric(bank)
        pipe_inputs["matrix_stages"] = from_model(matrix_stages, "stages with a product")
    if extras.asym_group:
        asym = add("timing__asymmetric__cycles_per_stage", asym_cycles, "cycles",
                   "ceil((FP16 multiply + FP16 add levels) × FA delay / period)  [min·S_g "
                   "multiply-add; S_g is summed beside the dot product; estimate]",
                   {"levels": from_model(extras.asym_levels, "FA delays, "
                                         "taalasc/report/datapath.py"),
                    "full_adder_delay_ps": fa_d,
                    "timing__clock__period_ps": from_metric(period)}, higher_is_better=False)
        total += asym_cycles * extras.asym_stages
        pipe_formula += " + asymmetric stages × timing__asymmetric__cycles_per_stage"
        pipe_inputs["timing__asymmetric__cycles_per_stage"] = from_metric(asym)
        pipe_inputs["asymmetric_stages"] = from_model(extras.asym_stages, "matrix stages")
    pipe = add("timing__pipeline__depth_cycles", total, "cycles", pipe_formula, pipe_inputs,
               higher_is_better=False, description="cycles for one token, end to end")
    busy = add("timing__pipeline__stage_cycles", busiest, "cycles",
               "max over stages of their cycles", {"stages": from_model(total, "pipeline")},
               higher_is_better=False, description="the busiest stage bounds the throughput")
    if not model.is_decoder():
        return M + _encoder_throughput(model, pipe, busy, period)
    latency = add("timing__token__latency_us", total * period.value * 1e-6, "µs",
                  "timing__pipeline__depth_cycles × timing__clock__period_ps",
                  {"timing__pipeline__depth_cycles": from_metric(pipe),
                   "timing__clock__period_ps": from_metric(period)}, higher_is_better=False)
    single = add("throughput__single_stream__tokens_per_s", 1e6 / latency.value, "tokens/s",
                 "1 / timing__token__latency_us (decode is sequential)",
                 {"timing__token__latency_us": from_metric(latency)}, higher_is_better=True)
    inflight = add("throughput__pipeline__max_streams", max(1, total // busiest), "streams",
                   "floor(timing__pipeline__depth_cycles / timing__pipeline__stage_cycles)",
                   {"timing__pipeline__depth_cycles": from_metric(pipe),
                    "timing__pipeline__stage_cycles": from_metric(busy)}, higher_is_better=True)
    fit = got.get("sram__kv_cache__users_at_context")
    served = min(users, max(1, int(fit.value))) if fit is not None and fit.value else users
    active = add("throughput__users__served", served, "users",
                 "min(--users, max(1, sram__kv_cache__users_at_context))",
                 {"users": from_model(users, "--users (concurrent streams)"),
                  **({"sram__kv_cache__users_at_context": from_metric(fit)} if fit else {})},
                 higher_is_better=True,
                 description="streams whose KV cache fits on chip at --context")
    add("throughput__aggregate__tokens_per_s",
        min(served * single.value, 1e12 / (busiest * period.value)), "tokens/s",
        "min(throughput__users__served × single-stream, 1 / (stage_cycles × period))",
        {"throughput__users__served": from_metric(active),
         "throughput__single_stream__tokens_per_s": from_metric(single),
         "timing__pipeline__stage_cycles": from_metric(busy),
         "timing__clock__period_ps": from_metric(period),
         "throughput__pipeline__max_streams": from_metric(inflight)}, higher_is_better=True)
    return M


def _encoder_throughput(model: ModelShape, pipe: Metric, busy: Metric,
                        period: Metric) -> list[Metric]:
    """Full-sequence forward of an encoder: no decode loop, no KV cache (module docstring)."""
    seq, seq_source = model.sequence_length()
    L = from_model(seq, seq_source)
    tokens = Metric("throughput__encoder__tokens_per_s", 1e12 / (busy.value * period.value),
                    "tokens/s", "1 / (timing__pipeline__stage_cycles × timing__clock__period_ps)"
                    "  (full-sequence forward: tokens stream back to back)",
                    {"timing__pipeline__stage_cycles": from_metric(busy),
                     "timing__clock__period_ps": from_metric(period)}, higher_is_better=True)
    sequences = Metric("throughput__encoder__sequences_per_s", tokens.value / seq,
                       "sequences/s", "throughput__encoder__tokens_per_s / sequence_length",
                       {"throughput__encoder__tokens_per_s": from_metric(tokens),
                        "sequence_length": L}, higher_is_better=True)
    cycles = pipe.value + model.layers * (seq - 1) * busy.value
    latency = Metric("timing__sequence__latency_us", cycles * period.value * 1e-6, "µs",
                     "(timing__pipeline__depth_cycles + layers × (sequence_length − 1) × "
                     "timing__pipeline__stage_cycles) × timing__clock__period_ps  (each layer "
                     "waits for the sequence's last token: bidirectional attention)",
                     {"timing__pipeline__depth_cycles": from_metric(pipe),
                      "layers": from_model(model.layers, "num_hidden_layers"),
                      "sequence_length": L, "timing__pipeline__stage_cycles": from_metric(busy),
                      "timing__clock__period_ps": from_metric(period)}, higher_is_better=False)
    return [latency, tokens, sequences]
