"""Hand-computed cases for every report formula, and invariants of the area/SRAM models."""

import math

import pytest

from taalasc.config import load_base_array
from taalasc.errors import QuantizationError
from taalasc.report import PlacementFacts, build_report, estimate, header_bits
from taalasc.report.area import tile_map
from taalasc.report.cost import (dies_per_wafer, yield_murphy, yield_negative_binomial,
                                 yield_poisson)
from taalasc.report.shape import ModelShape, shape_from_config, shape_from_preset
from taalasc.report.timing import csa_levels, elmore_ps


@pytest.fixture(scope="module")
def base():
    return load_base_array("sky130-demo")


def tiny_llama(hidden=64, inter=128, layers=2, heads=4, kv=2, vocab=256):
    return shape_from_config({"model_type": "llama", "hidden_size": hidden,
                              "intermediate_size": inter, "num_hidden_layers": layers,
                              "num_attention_heads": heads, "num_key_value_heads": kv,
                              "vocab_size": vocab}, "tiny")


# --- cost -----------------------------------------------------------------------------------

def test_dies_per_wafer_hc1_die_on_300mm():
    side = math.sqrt(815.0)
    # π·150²/815 − π·300/√1630 = 86.73 − 23.34 = 63.4 → 63 gross dies (DESIGN.md: ~63)
    assert dies_per_wafer(side, side, 300, 0, 0) == 63
    # edge exclusion shrinks the usable diameter to 294 mm: 83.30 − 22.88 = 60.4 → 60
    assert dies_per_wafer(side, side, 300, 3, 0) == 60
    # a 0.1 mm scribe grows each die edge: fewer dies, never more
    assert dies_per_wafer(side, side, 300, 3, 0.1) <= 60


def test_yields_at_0p1_per_cm2():
    a = 8.15  # cm², AD = 0.815
    assert yield_poisson(a, 0.1) == pytest.approx(0.44264, abs=1e-4)
    assert yield_murphy(a, 0.1) == pytest.approx(((1 - math.exp(-0.815)) / 0.815) ** 2)
    assert yield_murphy(a, 0.1) == pytest.approx(0.46769, abs=1e-4)
    assert yield_negative_binomial(a, 0.1, 3.0) == pytest.approx(1.27167 ** -3, rel=1e-4)
    # clustering helps: Poisson < Murphy < negative binomial at this AD
    assert yield_poisson(a, 0.1) < yield_murphy(a, 0.1) < yield_negative_binomial(a, 0.1, 3.0)
    assert yield_murphy(a, 0.0) == 1.0


# --- timing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("operands,levels", [(2, 0), (3, 1), (4, 2), (6, 3), (9, 4), (13, 5),
                                              (19, 6), (28, 7), (63, 9), (64, 10), (211, 12), (256, 13)])
def test_csa_levels_follow_the_dadda_sequence(operands, levels):
    assert csa_levels(operands) == levels


def test_elmore_hand_case():
    # 0.5 · 0.01 Ω/µm · 0.2 fF/µm · (1000 µm)² = 1 ps; each via adds R·C_total = 10 Ω · 200 fF
    assert elmore_ps(1000, 0.01, 0.2, 0.0) == pytest.approx(1.0)
    assert elmore_ps(1000, 0.01, 0.2, 10.0) == pytest.approx(1.0 + 2 * 10 * 200e-15 * 1e12)
    # quadratic in length without vias
    assert elmore_ps(2000, 0.01, 0.2, 0.0) == pytest.approx(4.0)


def test_tile_critical_path_hand_case(base):
    report = estimate(tiny_llama(), base, default_bits=4)
    # sky130-demo: 32 lanes × 8 bits = 256 operands → 13 CSA levels; 24-bit accumulator → 5
    assert report.value("timing__tile__adder_depth") == 1 + 13 + 5
    pdk = base.pdk.cells
    assert report.value("timing__tile__critical_path_ps") == pytest.approx(
        19 * pdk.full_adder_delay_ps + pdk.dff_clk_to_q_ps + pdk.dff_setup_ps)


def test_single_stream_is_clock_over_pipeline_depth(base):
    r = estimate(tiny_llama(), base, default_bits=4)
    f_hz = 1e12 / r.value("timing__clock__period_ps")
    assert r.value("throughput__single_stream__tokens_per_s") == pytest.approx(
        f_hz / r.value("timing__pipeline__depth_cycles"))
    r8 = estimate(tiny_llama(), base, default_bits=4, users=8)
    assert r8.value("throughput__aggregate__tokens_per_s") >= \
        r.value("throughput__aggregate__tokens_per_s")
    assert r8.value("throughput__aggregate__tokens_per_s") <= \
        8 * r.value("throughput__single_stream__tokens_per_s") + 1e-6


def test_placement_route_is_used(base):
    facts = PlacementFacts(longest_route_nm=2_000_000)
    model = tiny_llama()
    bits, _ = header_bits(model, 4)
    r = build_report(model, bits, base, facts)
    assert r.value("timing__route__longest_um") == 2000.0
    assert "geometric estimate" not in " ".join(r.notes)


# --- area -----------------------------------------------------------------------------------

def test_tile_map_hand_case(base):
    model = ModelShape("m", {"w": (100, 70)})
    tmap = tile_map(model, {"w": (4, None)}, base)
    # rows per tile = 2048 // (32·4) = 16; ceil(70/32)=3 input blocks; ceil(100/16)=7 row blocks
    t = tmap.per_tensor["w"]
    assert (t.tiles, t.rows_per_tile, t.in_blocks) == (21, 16, 3)
    # one FP16 scale per output row (per-channel): 100 · 16 bits → 1 tile
    assert tmap.constant_tiles == 1 and tmap.weight_bits == 100 * 70 * 4


def test_area_is_the_sum_of_its_parts(base):
    r = estimate(tiny_llama(), base, default_bits=4)
    parts = r.value("design__tile_grid__area") + r.value("design__sram__area") + \
        r.value("design__periphery__area")
    assert parts == pytest.approx(r.value("design__die__area"))
    assert r.value("design__footprint__area") == pytest.approx(
        r.value("design__tiles__used") * r.value("design__tile__area"))
    assert r.value("design__die__total_area") == pytest.approx(
        r.value("design__die__area") * r.value("design__die__count"))


def test_estimated_vias_are_the_bits_plus_one_tie_via_per_strap(base):
    r = estimate(tiny_llama(), base, default_bits=4)
    via = next(m for m in r.metrics if m.name == "design__via__count")
    bits = r.value("design__weights__bits") + via.inputs["constant_bits"][0]
    assert via.value == bits + r.value("design__tiles__used") * 2 * base.weight_tile.sites_y


@pytest.mark.parametrize("low", [2, 3, 4])
def test_twice_the_bits_never_costs_less_area(base, low):
    model = tiny_llama(hidden=96, inter=320, vocab=1000)
    a = estimate(model, base, default_bits=low)
    b = estimate(model, base, default_bits=2 * low)
    assert b.value("design__tiles__used") >= a.value("design__tiles__used")
    assert b.value("design__footprint__area") >= a.value("design__footprint__area")
    assert b.value("design__weights__bits") == 2 * a.value("design__weights__bits")


def test_more_users_never_increase_context_per_user(base):
    model = tiny_llama()
    contexts = [estimate(model, base, users=u).value("sram__kv_cache__max_context_per_user")
                for u in (1, 2, 3, 7, 50)]
    assert contexts == sorted(contexts, reverse=True)
    assert contexts[0] > contexts[-1]


def test_kv_bytes_per_token_llama_8b(base):
    r = estimate(shape_from_preset("llama-3.1-8b"), base)
    # 2 (K,V) · 32 layers · 8 kv heads · 128 head dim · 8 bits / 8
    assert r.value("sram__kv_cache__bytes_per_token") == 2 * 32 * 8 * 128


# --- header-only bits ---------------------------------------------------------------------------

def test_rules_last_match_wins_and_unmatched_rule_fails():
    model = tiny_llama()
    bits, _ = header_bits(model, 4, [("*.v_proj.*", 6), ("*.layers.0.self_attn.v_proj.*", 8)])
    assert bits["model.layers.0.self_attn.v_proj.weight"] == 8
    assert bits["model.layers.1.self_attn.v_proj.weight"] == 6
    assert bits["model.layers.1.self_attn.q_proj.weight"] == 4
    assert "model.norm.weight" not in bits  # 1-D constants are not quantized
    with pytest.raises(QuantizationError, match=r"^--rule \*\.nothing\*: matches no weight"):
        header_bits(model, 4, [("*.nothing*", 6)])


def test_auto_heuristic_respects_the_budget():
    model = shape_from_preset("llama-3.1-8b")
    bits, notes = header_bits(model, 4, [], (3, 6, 3.5))
    total = sum(math.prod(model.tensors[n]) for n in bits)
    mean = sum(b * math.prod(model.tensors[n]) for n, b in bits.items()) / total
    assert 3.3 < mean <= 3.5
    assert bits["lm_head.weight"] == 6 and bits["model.embed_tokens.weight"] == 6
    assert bits["model.layers.0.self_attn.q_proj.weight"] == 3
    assert "heuristic" in notes[0]


def test_route_hops_and_registered_clock(base):
    from taalasc.report.timing import route_hops

    assert route_hops(1) == 0 and route_hops(4) == 4 and route_hops(10) == 8
    r = estimate(tiny_llama(), base)
    hop_um = (base.tile_grid.pitch_x_nm + base.tile_grid.pitch_y_nm) / 1000
    assert r.value("timing__route__hops") == math.ceil(r.value("timing__route__longest_um") / hop_um)
    reg = base.pdk.cells.dff_clk_to_q_ps + base.pdk.cells.dff_setup_ps
    assert r.value("timing__clock__fmax_mhz") == pytest.approx(1e6 / max(
        r.value("timing__tile__critical_path_ps"), r.value("timing__route__hop_elmore_ps") + reg))


def test_users_beyond_the_kv_sram_are_not_served(base):
    model = shape_from_preset("llama-3.1-8b")
    r = estimate(model, base, users=10_000, context=4096)
    fit = r.value("sram__kv_cache__users_at_context")
    assert r.value("throughput__users__served") == min(10_000, max(1, fit))
    assert any("fit the SRAM" in n for n in r.notes)


def test_power_adds_up(base):
    r = estimate(tiny_llama(), base)
    assert r.value("power__total__watts") == pytest.approx(
        r.value("power__dynamic__watts") + r.value("power__clock__watts")
        + r.value("power__leakage__watts"))
    assert r.value("power__token__joules") == pytest.approx(
        r.value("power__total__watts") / r.value("throughput__aggregate__tokens_per_s"))
    # the clock term by hand: used tiles × DFFs × C × V² × f
    t, d, c = base.weight_tile, base.datapath, base.pdk.cells
    dffs = t.input_lanes * d.activation_bits + d.accumulator_bits
    f_hz = 1e12 / r.value("timing__clock__period_ps")
    assert r.value("power__clock__watts") == pytest.approx(
        r.value("design__tiles__used") * dffs * c.dff_switched_cap_ff * 1e-15
        * base.pdk.electrical.supply_v ** 2 * f_hz)
