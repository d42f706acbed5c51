"""Ternary codes (TWN): the quantizer rule, born-ternary exactness, the policy's refusals,
the manifest record, and the born-ternary demo model."""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace

import numpy as np
import pytest

from taalasc.compile import CompileOptions
from taalasc.dieworker import quant_entry
from taalasc.errors import QuantizationError
from taalasc.model import open_checkpoint
from taalasc.model.synth import write_demo
from taalasc.quant import (AutoMixed, BitPolicy, QuantSpec, parse_rule, plan_bits,
                           quantize_tensor)
from taalasc.quant.gptq import gptq_quantize
from taalasc.quant.method import TensorQuantizer, spec_of

TERNARY = QuantSpec(2, 32, ternary=True)


def twn_reference(w: np.ndarray, gs: int) -> tuple[np.ndarray, np.ndarray]:
    """Group-by-group restatement of the TWN rule in the module docstring."""
    codes = np.zeros(w.shape, np.int8)
    scales = np.zeros((w.shape[0], w.shape[1] // gs), np.float16)
    for r in range(w.shape[0]):
        for g in range(w.shape[1] // gs):
            vals = [float(v) for v in w[r, g * gs:(g + 1) * gs]]
            delta = 0.7 * sum(abs(v) for v in vals) / gs
            kept = [abs(v) for v in vals if abs(v) > delta]
            scales[r, g] = np.float16(sum(kept) / len(kept)) if kept else 0
            for k, v in enumerate(vals):
                codes[r, g * gs + k] = (v > 0) - (v < 0) if abs(v) > delta else 0
    return codes, scales


def born_ternary(gamma_per_group: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(weights gamma_g * t, t) for gammas [rows, groups] and groups of 32."""
    rows, groups = gamma_per_group.shape
    t = np.random.default_rng(seed).integers(-1, 2, size=(rows, groups * 32))
    w = t.reshape(rows, groups, 32) * gamma_per_group[:, :, None]
    return w.reshape(rows, -1), t


def test_twn_rule_matches_the_reference_on_random_weights():
    w = np.random.default_rng(1).standard_normal((6, 96)).astype(np.float32) * 0.05
    qt = quantize_tensor("w", w, TERNARY)
    codes, scales = twn_reference(w, 32)
    assert np.array_equal(qt.codes, codes) and np.array_equal(qt.scales, scales)
    assert qt.bits == 2 and qt.ternary and not qt.asymmetric and (qt.scales >= 0).all()
    assert set(np.unique(qt.codes)) <= {-1, 0, 1}
    err = float(np.square(w.astype(np.float64) - qt.dequantize()).sum())
    assert qt.sqnr_db == pytest.approx(10 * math.log10(float(np.square(w.astype(np.float64)).sum())
                                                       / err), rel=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_born_ternary_weights_come_back_exactly_with_fp16_gammas(dtype):
    gammas = np.array([[0.0123, 3.5, 1e-3], [0.25, 7.0e-5, 12.0]]).astype(np.float16)
    w, t = born_ternary(gammas.astype(np.float64))
    qt = quantize_tensor("w", w.astype(dtype), TERNARY)
    assert np.array_equal(qt.codes, t) and np.array_equal(qt.scales, gammas)
    assert np.array_equal(qt.dequantize(), w.astype(np.float32)) and qt.sqnr_db == math.inf


def test_born_ternary_codes_are_exact_whatever_the_gamma():
    gammas = np.array([[0.012345678, 1.0 / 3.0], [2.0 ** 0.5, 1e-2 / 7]])
    w, t = born_ternary(gammas, seed=3)
    qt = quantize_tensor("w", w, TERNARY)
    assert np.array_equal(qt.codes, t)
    assert np.array_equal(qt.scales, gammas.astype(np.float16))   # nearest fp16


def test_zero_groups_and_tiny_groups():
    w = np.zeros((2, 64))
    w[1, 32:] = 1e-9
    qt = quantize_tensor("w", w, TERNARY)
    assert (qt.codes[0] == 0).all() and (qt.scales[0] == 0).all()
    assert (qt.codes[1, 32:] == 1).all() and qt.scales[1, 1] == np.float16(2.0 ** -24)


def test_bad_ternary_specs_are_one_error():
    for kwargs in ({"bits": 4}, {"bits": 2, "asymmetric": True}):
        with pytest.raises(QuantizationError, match="ternary codes are symmetric 2-bit"):
            QuantSpec(group_size=32, ternary=True, **kwargs)
    with pytest.raises(QuantizationError, match="NaN/Inf"):
        quantize_tensor("w", np.full((1, 32), np.nan), TERNARY)
    with pytest.raises(QuantizationError, match="GPTQ makes integer codes"):
        gptq_quantize("w", np.ones((2, 32)), np.eye(32), TERNARY)


def test_a_ternary_policy_gives_every_matrix_the_ternary_spec():
    tensors = {"a.q.weight": np.ones((4, 64)), "a.k.weight": np.ones((4, 32)),
               "a.norm.weight": np.ones(4)}
    specs = plan_bits(tensors, CompileOptions(default_bits=2).bit_policy(ternary=True)).specs
    assert specs == {"a.q.weight": QuantSpec(2, 32, ternary=True),
                     "a.k.weight": QuantSpec(2, 32, ternary=True)}
    assert plan_bits(tensors, BitPolicy(default_bits=2)).specs["a.q.weight"].ternary is False


def test_a_ternary_policy_refuses_other_bits_naming_the_tensor():
    tensors = {"a.q.weight": np.ones((4, 64)), "a.k.weight": np.ones((4, 32))}
    with pytest.raises(QuantizationError, match=r"tensor 'a.q.weight': ternary bases store "
                       r"\{-1, 0, \+1\} weights at --bits 2, but --bits gives it 4 bits"):
        plan_bits(tensors, BitPolicy(default_bits=4, ternary=True))
    with pytest.raises(QuantizationError, match=r"'a.k.weight'.*rule \*.k.\*=3 gives it 3"):
        plan_bits(tensors, BitPolicy(default_bits=2, rules=(parse_rule("*.k.*=3"),),
                                     ternary=True))


@pytest.mark.parametrize("kwargs, named", [
    ({"asymmetric": True}, "--asym"), ({"method": "gptq"}, "--method gptq"),
    ({"awq": True}, "--awq"), ({"auto": AutoMixed()}, "--auto")])
def test_a_ternary_policy_refuses_what_cannot_make_ternary_codes(kwargs, named):
    with pytest.raises(QuantizationError, match=f"ternary bases store .* {named} cannot make"):
        BitPolicy(default_bits=2, ternary=True, **kwargs)


def test_manifest_record_and_spec_round_trip():
    qt = quantize_tensor("w", np.ones((2, 32)), TERNARY)
    assert spec_of(qt) == TERNARY
    assert quant_entry(qt)["ternary"] is True
    plain = quantize_tensor("w", np.ones((2, 32)), QuantSpec(2, 32))
    assert "ternary" not in quant_entry(plain)    # other manifests keep their bytes


def test_verify_requantizes_ternary_from_the_manifest_record(tmp_path):
    from taalasc.verify import _Requantized

    ckpt = open_checkpoint(write_demo(tmp_path, ternary=True))
    name = "model.layers.0.mlp.up_proj.weight"
    record = {name: {"bits": 2, "group_size": 32, "ternary": True}}
    qt = _Requantized(ckpt, record, [name], TensorQuantizer(ckpt, None))[name]
    assert qt.ternary and qt.sqnr_db == math.inf


def test_born_ternary_demo(tmp_path):
    a, b = write_demo(tmp_path / "a", ternary=True), write_demo(tmp_path / "b", ternary=True)
    data = (a / "model.safetensors").read_bytes()
    assert data == (b / "model.safetensors").read_bytes()
    plain = write_demo(tmp_path / "plain")
    assert hashlib.sha256(data).digest() != hashlib.sha256(
        (plain / "model.safetensors").read_bytes()).digest()
    ckpt = open_checkpoint(a)
    assert ckpt.summary() == open_checkpoint(plain).summary()
    group = CompileOptions().group_size
    for name, info in ckpt.tensors.items():
        w = ckpt.read(name)
        if len(info.shape) != 2:
            assert np.array_equal(w, open_checkpoint(plain).read(name))   # norms unchanged
            continue
        qt = quantize_tensor(name, w, QuantSpec(2, group, ternary=True))
        assert qt.sqnr_db == math.inf, name
        assert 0.2 < float((qt.codes == 0).mean()) < 0.6


def test_a_ternary_chip_runs_the_born_ternary_demo_nearly_exactly(tmp_path):
    from taalasc.config import load_base_array
    from taalasc.sim.chip import chip_weights
    from taalasc.sim.run import simulate

    ckpt = open_checkpoint(write_demo(tmp_path, ternary=True))
    weights = chip_weights(ckpt, BitPolicy(default_bits=2, group_size=32, ternary=True))
    tile = SimpleNamespace(encoding="ternary", bits_per_site=2)
    sim = simulate(ckpt, weights, [3, 17, 0, 42, 9, 33, 5, 11], load_base_array("sky130-demo")
                   .datapath, weight_tile=tile)
    assert sim.quality["kl_mean_nats"] < 1e-5 and sim.quality["top1_agreement"] == 1.0
