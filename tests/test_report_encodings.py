"""Weight-tile encodings as a base-array choice: the schema, the compile refusal, and each
encoding's vias, sites, adders, cycles and energy against hand arithmetic on a small case."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.errors import ConfigError, ModelError, QuantizationError
from taalasc.report import estimate, shape_from_config
from taalasc.report.area import tile_map
from taalasc.report.encoding import DEFAULT_ZERO_BIT_RATIO, tile_logic
from taalasc.report.timing import csa_levels

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256}
# A small tile on sky130-demo's die and grid: 64 x 32 sites, 16 lanes, 8-bit activations,
# a 24-bit accumulator; the site's y pitch holds 8 lines at the sky130 met5 pitch (3.2 um).
SITE_Y = {"tie-high-low": 6400, "zero-skip": 3200, "select": 8 * 3200, "ternary": 3 * 3200}


def tiny_base(tmp_path, encoding: str, **tile) -> Path:
    data = yaml.safe_load((ROOT / "base_array" / "sky130-demo.yaml").read_text(encoding="utf-8"))
    t = data["weight_tile"]
    t.update(encoding=encoding, sites_x=64, sites_y=32, input_lanes=16,
             site_pitch_y_nm=SITE_Y[encoding], max_weight_bits=8)
    t.pop("slots_per_bit")
    if encoding == "select":
        t.update(bits_per_site=3, max_weight_bits=6)
    if encoding == "ternary":
        t.update(bits_per_site=2, max_weight_bits=2)
    t.update(tile)
    data["tile_grid"].update(pitch_x_nm=(64 + 1) * 1600 + 8000,
                             pitch_y_nm=32 * t["site_pitch_y_nm"] + 8000, columns=4, rows=4)
    data["datapath"].update(activation_bits=8, accumulator_bits=24)
    data["name"] = f"tiny-{encoding}"
    path = tmp_path / f"tiny-{encoding}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model():
    return shape_from_config(dict(TINY), "tiny")


# --- the schema --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,encoding,lines", [
    ("hc1-n6", "tie-high-low", 2), ("hc1-n6-select", "select", 8),
    ("hc1-n6-ternary", "ternary", 3), ("hc1-n6-zero-skip", "zero-skip", 1)])
def test_the_builtin_hc1_class_bases_load_in_each_encoding(name, encoding, lines):
    tile = load_base_array(name).weight_tile
    assert (tile.encoding, tile.lines_per_site) == (encoding, lines)
    # every line of a site at the 80 nm custom pitch of n6-class
    assert tile.site_pitch_y_nm == lines * 80


def test_a_select_site_too_narrow_for_its_lines_is_one_clear_error(tmp_path):
    path = tiny_base(tmp_path, "select", site_pitch_y_nm=4 * 3200)
    with pytest.raises(ConfigError) as info:
        load_base_array(path)
    assert info.value.problems == [
        "weight_tile.site_pitch_y_nm: 12800 nm cannot hold the 8 lines of a select site at the "
        "sky130 pitch: 8 × 3200 nm (line 1600 + space 1600, via pitch 1600) = 25600 nm"]


@pytest.mark.parametrize("encoding,tile,problem", [
    ("ternary", {"max_weight_bits": 4},
     "weight_tile.max_weight_bits: must be 2 for encoding 'ternary' (one weight {−1, 0, +1} "
     "per site), not 4"),
    ("ternary", {"bits_per_site": 1}, "weight_tile.bits_per_site: must be 2 for encoding "
     "'ternary', not 1"),
    ("zero-skip", {"slots_per_bit": 2}, "weight_tile.slots_per_bit: must be 1 for encoding "
     "'zero-skip', not 2"),
    ("select", {"slots_per_bit": 2}, "weight_tile.slots_per_bit: does not apply to encoding "
     "'select' (one via per site); leave it out"),
    ("select", {"bits_per_site": 3, "max_weight_bits": 2}, "weight_tile.max_weight_bits: 2 is "
     "below bits_per_site 3: a select digit wider than any weight"),
])
def test_encoding_fields_are_checked(tmp_path, encoding, tile, problem):
    with pytest.raises(ConfigError) as info:
        load_base_array(tiny_base(tmp_path, encoding, **tile))
    assert info.value.problems == [problem]


@pytest.mark.parametrize("argv", [["base", "build", "sky130-demo-select"],
                                  ["compile", "MODEL", "--base", "sky130-demo-select", "--merge"]])
def test_a_base_die_of_another_encoding_is_refused_with_one_line(tmp_path, capsys, argv):
    # compile draws the custom masks of every encoding (tests/test_encodings_masks.py); the
    # base die, and so a merge, is drawn for tie-high-low sites only
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    argv = [str(model) if a == "MODEL" else a for a in argv]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "weight_tile.encoding: the base die is drawn for tie-high-low sites only, not " \
           "'select'" in err[0]
    assert not (tmp_path / "out").exists()


# --- sites, vias and adders by hand -------------------------------------------------------------

def test_tile_logic_by_encoding(tmp_path):
    # L = 16 lanes, a = 8, A = 24
    shift = tile_logic(load_base_array(tiny_base(tmp_path, "tie-high-low")))
    assert (shift.tree_operands, shift.tree_fa, shift.bank_fa, shift.mux_transistors) == \
        (16 * 8, 16 * 8 * 8 + 24, 0, 0)
    select = tile_logic(load_base_array(tiny_base(tmp_path, "select")))
    # s = 3, B = 6: two digits per lane of a + s = 11 bits; bank: odd multiples 3x, 5x, 7x
    assert select.tree_operands == 16 * 2
    assert select.tree_fa == 16 * 2 * 11 + 24
    assert select.bank_fa == 16 * 3 * 11
    assert select.mux_transistors == 16 * 2 * 8 * 11 * 2
    ternary = tile_logic(load_base_array(tiny_base(tmp_path, "ternary")))
    assert (ternary.tree_operands, ternary.tree_fa, ternary.bank_fa, ternary.mux_transistors) \
        == (16, 16 * 9 + 24, 0, 16 * 3 * 9 * 2)
    assert ternary.dffs == select.dffs == shift.dffs == 16 * 8 + 24


@pytest.mark.parametrize("encoding,bits,rows,vias_per_weight", [
    ("tie-high-low", 4, 2048 // (16 * 4), 4),
    ("zero-skip", 4, 2048 // (16 * 4), 4 * (1 - DEFAULT_ZERO_BIT_RATIO)),
    ("select", 4, 2048 // (16 * 2), 2),       # 4 bits = two 3-bit digits
    ("select", 3, 2048 // 16, 1),
    ("ternary", 2, 2048 // 16, 1),
])
def test_rows_and_vias_per_weight(tmp_path, model, encoding, bits, rows, vias_per_weight):
    base = load_base_array(tiny_base(tmp_path, encoding))
    r = estimate(model, base, default_bits=bits, group_size=None)
    q = r["design__weights__bits"].inputs["quantized_params"][0]
    assert r.value("design__via__per_weight") == pytest.approx(vias_per_weight)
    via = r["design__via__count"]
    const = via.inputs["constant_bits"][0]
    per_const = {"ternary": 1, "select": 1 / 3, "zero-skip": 1 - DEFAULT_ZERO_BIT_RATIO}.get(
        encoding, 1)
    lines = {"tie-high-low": 2, "zero-skip": 1, "select": 8, "ternary": 3}[encoding]
    assert via.value == round(q * vias_per_weight + const * per_const
                              + r.value("design__tiles__used") * lines * 32)
    # gate_proj [128, 64]: R = floor(2048 sites / (16 lanes × sites per weight)) rows per tile,
    # 4 input blocks of 16 lanes × ceil(128 / R) row blocks
    t = tile_map(model, {n: (bits, None) for n in model.tensors if len(model.tensors[n]) == 2},
                 base).per_tensor["model.layers.0.mlp.gate_proj.weight"]
    assert (t.rows_per_tile, t.in_blocks, t.tiles) == (min(rows, 128), 4,
                                                        4 * math.ceil(128 / rows))


def test_zero_bit_ratio_sets_the_zero_skip_vias_and_is_refused_elsewhere(tmp_path, model):
    base = load_base_array(tiny_base(tmp_path, "zero-skip"))
    r = estimate(model, base, default_bits=4, zero_bit_ratio=0.65)
    assert r.value("design__via__per_weight") == pytest.approx(4 * 0.35)
    assert r["design__via__count"].inputs["zero_bit_ratio"] == (0.65, "--zero-bit-ratio")
    with pytest.raises(ModelError, match=r"^--zero-bit-ratio applies to weight_tile.encoding "
                                         r"'zero-skip' only; tiny-select encodes 'select'$"):
        estimate(model, load_base_array(tiny_base(tmp_path, "select")), zero_bit_ratio=0.5)
    with pytest.raises(ModelError, match=r"must be in \[0, 1\), not 1.0"):
        estimate(model, base, zero_bit_ratio=1.0)


def test_a_ternary_base_takes_two_bit_symmetric_weights_only(tmp_path, model):
    base = load_base_array(tiny_base(tmp_path, "ternary"))
    with pytest.raises(QuantizationError, match=r"weight_tile.encoding 'ternary' of tiny-ternary "
                                                r"stores symmetric weights .*must be at 2 bits "
                                                r"\(--bits 2\), not 3$"):
        estimate(model, base, default_bits=3)
    with pytest.raises(QuantizationError, match=r"not 2 with a minimum per group"):
        estimate(model, base, default_bits=2, asymmetric=True)


def test_adder_depth_mac_energy_and_bank_by_hand(tmp_path, model):
    pdk_base = load_base_array(tiny_base(tmp_path, "select"))
    cells, el = pdk_base.pdk.cells, pdk_base.pdk.electrical
    alpha = pdk_base.datapath.activity_factor
    r = estimate(model, pdk_base, default_bits=3, group_size=None)
    # 32 operands → 8 CSA levels (Dadda: 28 < 32 ≤ 42); 24-bit accumulator → 5 prefix levels;
    # + 1 mux level
    assert csa_levels(32) == 8
    assert r.value("timing__tile__adder_depth") == 1 + 8 + 5
    # bank: ceil(log2 11) + 1 = 5 FA delays, within one period
    assert r.value("timing__select_bank__cycles_per_stage") == math.ceil(
        5 * cells.full_adder_delay_ps / r.value("timing__clock__period_ps"))
    # E_MAC at 3 bits: one digit of 11 bits, one via on a line across the tile height
    height_um = 32 * SITE_Y["select"] / 1000
    e_mac = alpha * el.supply_v ** 2 * (11 * cells.full_adder_switched_cap_ff
                                         + 24 / 16 * cells.dff_switched_cap_ff
                                         + 1 * el.top_metal_cap_ff_per_um * height_um)
    assert r.value("power__mac__energy_fj") == pytest.approx(e_mac)
    # the bank: every product tile fills 16 lanes × 3 adders × 11 FA once per token
    tiles = r["power__select_bank__energy_per_token"].inputs["product_tiles"][0]
    assert r.value("power__select_bank__energy_per_token") == pytest.approx(
        tiles * 16 * 3 * 11 * alpha * el.supply_v ** 2 * cells.full_adder_switched_cap_ff
        * 1e-15)
    assert r.value("design__tile__full_adders") == 16 * 2 * 11 + 24 + 16 * 3 * 11


def test_densities_tile_and_die(tmp_path, model):
    for encoding, bits_per_um2 in (("tie-high-low", 1 / (1.6 * 6.4)),
                                   ("select", 3 / (1.6 * 25.6)), ("ternary", 2 / (1.6 * 9.6)),
                                   ("zero-skip", 1 / (1.6 * 3.2))):
        base = load_base_array(tiny_base(tmp_path, encoding))
        r = estimate(model, base, default_bits=2, group_size=None)
        assert r.value("design__tile__bits_per_um2") == pytest.approx(bits_per_um2)
        assert r.value("design__die__bits_per_um2") == pytest.approx(
            r.value("design__weights__bits") / (r.value("design__die__total_area") * 1e6))


# --- the rest of the die, by hand ---------------------------------------------------------------

def test_whole_die_terms_by_hand(model):
    from taalasc.report.wholedie import leakage_temperature_factor

    base = load_base_array("sky130-demo")
    cells, el, dp = base.pdk.cells, base.pdk.electrical, base.datapath
    r = estimate(model, base, default_bits=4, context=100)
    e_fa = dp.activity_factor * el.supply_v ** 2 * cells.full_adder_switched_cap_ff
    a, mul, add = dp.activation_bits, 11 ** 2 + 5, 2 * 11 + 5
    # attention: 2 layers, q width 64, 4 heads, 100 positions
    assert r.value("power__attention__energy_per_token") == pytest.approx(
        e_fa * (2 * 2 * 64 * 100 * (a * a + 2 * a) + 2 * 4 * 100 * 5 * (mul + add)) * 1e-15)
    # KV: 100 past positions read, this token written, both at the read energy
    bpt = r.value("sram__kv_cache__bytes_per_token")
    assert r.value("power__kv_cache__energy_per_token") == pytest.approx(
        101 * bpt * 8 * base.pdk.sram.read_energy_fj_per_bit * 1e-15)
    # I/O: one die, token ids of ceil(log2 256) = 8 bits in and out at 5 pJ/bit
    assert r.value("power__io__energy_per_token") == pytest.approx(16 * 5e-12)
    # clock tree: H-tree 1.5·S·√N + N tile spines, N = used tiles on one die
    n = r.value("design__tiles__used")
    side_um = math.sqrt(base.die.area_mm2) * 1000
    tile = base.weight_tile
    length_um = 1.5 * side_um * math.sqrt(n) + n * (tile.width_nm + tile.height_nm) / 1000
    f_hz = 1e12 / r.value("timing__clock__period_ps")
    assert r.value("power__clock_tree__watts") == pytest.approx(
        el.top_metal_cap_ff_per_um * length_um * 1e-15 * el.supply_v ** 2 * f_hz)
    # leakage at 85 °C: (358.15/298.15)² · exp(q/(1.1·k) · (0.30/298.15 − 0.258/358.15))
    factor = (358.15 / 298.15) ** 2 * math.exp(11604.518 / 1.1 * (0.30 / 298.15
                                                                   - 0.258 / 358.15))
    assert leakage_temperature_factor(85.0) == pytest.approx(factor)
    assert 25 < factor < 35
    assert r.value("power__leakage__watts") == pytest.approx(
        r.value("power__leakage_25c__watts") * factor)
    terms = [m for m in r["power__token__dynamic_joules"].inputs if m.startswith("power__")]
    assert r.value("power__token__dynamic_joules") == pytest.approx(
        r.value("power__token__macs") * r.value("power__mac__energy_fj") * 1e-15
        + sum(r.value(t) for t in terms if t != "power__token__macs"
              and t != "power__mac__energy_fj"))
    assert r.value("power__tokens__per_joule") == pytest.approx(
        r.value("throughput__aggregate__tokens_per_s") / r.value("power__total__watts"))
