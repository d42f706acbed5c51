"""The chip model: exact integer arithmetic, overflow, determinism, closeness to float."""

from types import SimpleNamespace

import numpy as np
import pytest

from taalasc.errors import CheckFailed, ModelError
from taalasc.model.synth import bert_config, bert_shapes, llama_config, llama_shapes
from taalasc.quant import QuantSpec, quantize_tensor
from taalasc.sim import (ArraySource, ChipOps, DequantizedSource, accumulator_bits_needed,
                         compare, group_dot, quantize_activations, run_chip, run_float, tree_sum)
from test_sim_reference import random_weights

DATAPATH = SimpleNamespace(activation_bits=8, accumulator_bits=24)
TOKENS = [3, 17, 0, 42, 9, 33, 5, 11]


def to_chip(W, bits, group_size=16):
    """ChipWeights: 2-D -> codes + fp16 scales, 1-D -> fp16 constants."""
    return {n: quantize_tensor(n, w, QuantSpec(bits, group_size)) if w.ndim == 2
            else w.astype(np.float16) for n, w in W.items()}


def test_group_dot_is_exact_against_python_ints():
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, size=(3, 48))
    codes = rng.integers(-128, 128, size=(5, 48)).astype(np.int8)
    got = group_dot(x, codes, 16)
    assert got.shape == (3, 5, 3) and got.dtype == np.int64
    for s in range(3):
        for o in range(5):
            for g in range(3):
                want = sum(int(x[s, k]) * int(codes[o, k]) for k in range(16 * g, 16 * g + 16))
                assert got[s, o, g] == want


def test_activation_quantization_rounds_half_to_even_and_is_symmetric():
    x = np.array([[-4.0, 2.5 * 4 / 127, 1.5 * 4 / 127, 4.0, 0.0]], dtype=np.float32)
    codes, scale = quantize_activations(x, 8)
    assert scale.dtype == np.float32 and scale[0] == np.float32(4.0) / np.float32(127)
    assert codes.tolist() == [[-127, 2, 2, 127, 0]]
    codes, scale = quantize_activations(np.zeros((1, 4), np.float32), 8)
    assert scale[0] == 0 and not codes.any()


def test_chip_linear_matches_a_step_by_step_reference():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 32)).astype(np.float32)
    qt = quantize_tensor("w", w, QuantSpec(4, 8))
    bias = rng.standard_normal(6).astype(np.float16)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    ops = ChipOps({"w": qt, "b": bias}, 8, 24)
    got = ops.linear(x, "w", "b")
    for s in range(2):
        sa = np.float32(np.abs(x[s]).max()) / np.float32(127)
        xq = [int(np.clip(np.rint(v / sa), -127, 127)) for v in x[s]]
        for o in range(6):
            parts = [np.float32(sum(xq[k] * int(qt.codes[o, k]) for k in range(8 * g, 8 * g + 8)))
                     * np.float32(qt.scales[o, g]) for g in range(4)]
            total = (parts[0] + parts[1]) + (parts[2] + parts[3])  # the adder tree
            assert got[s, o] == np.float32(total * sa) + np.float32(bias[o])


def test_tree_sum_order_is_pairwise():
    x = np.array([1e8, 1.0, -1e8, 1.0, 3.0], dtype=np.float32)
    # ((1e8 + 1) + (-1e8 + 1)) + 3: each inner sum rounds in float32
    want = (np.float32(1e8) + np.float32(1)) + (np.float32(-1e8) + np.float32(1)) + np.float32(3)
    assert tree_sum(x) == want
    assert tree_sum(np.arange(7.0)) == 21.0


def test_accumulator_overflow_saturates_and_counts():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    qt = quantize_tensor("w", w, QuantSpec(8, 64))
    x = rng.standard_normal((3, 64)).astype(np.float32)
    wide = ChipOps({"w": qt}, 8, 24)
    y_wide = wide.linear(x, "w", None)
    assert wide.overflows == {} and 0 < wide.peak["w"] < 2 ** 21
    narrow = ChipOps({"w": qt}, 8, 10)  # -512..511: far too small for 64 products of 8x8 bits
    y_narrow = narrow.linear(x, "w", None)
    assert narrow.overflows["w"] > 0
    assert not np.array_equal(y_wide, y_narrow)
    assert np.abs(y_narrow).max() <= 512 * np.abs(qt.scales.astype(np.float32)).max() \
        * (np.abs(x).max() / 127) * 1.0001
    with pytest.raises(CheckFailed, match=r"^tensor 'w': \d+ group sums overflow the 10-bit "
                                          r"accumulator \(largest \|sum\| \d+ needs \d+ bits\)$"):
        ChipOps({"w": qt}, 8, 10, overflow="raise").linear(x, "w", None)


def test_accumulator_bits_needed():
    assert accumulator_bits_needed(8, 8, 128) == 22
    assert accumulator_bits_needed(8, 4, 32) == 16   # 127*8*32 = 32512 >= 2**14
    worst_x = np.full((1, 128), 127)
    worst_w = np.full((1, 128), -128, dtype=np.int8)
    acc = int(group_dot(worst_x, worst_w, 128)[0, 0, 0])
    assert -(2 ** 21) <= acc < -(2 ** 20)   # fits 22 signed bits, not 21


@pytest.fixture(scope="module")
def llama():
    cfg = llama_config(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, vocab=50)
    return cfg, random_weights(llama_shapes(cfg), seed=5)


def test_chip_is_bit_identical_across_runs(llama):
    cfg, W = llama
    chip = to_chip(W, 8)
    a = run_chip(chip, cfg, "llama", TOKENS, DATAPATH)
    b = run_chip(to_chip(W, 8), cfg, "llama", TOKENS, DATAPATH)
    assert np.array_equal(a.logits, b.logits)
    assert a.overflows == {} and a.accumulator_bits_needed <= 24


def test_chip_8bit_is_close_to_float(llama):
    cfg, W = llama
    chip = to_chip(W, 8)
    ref = run_float(ArraySource(W), cfg, "llama", TOKENS)
    got = run_chip(chip, cfg, "llama", TOKENS, DATAPATH)
    q = compare(ref, got)
    assert q["logit_cosine_min"] > 0.99 and q["kl_mean_nats"] < 0.01
    # against float on the same dequantized codes only the datapath error remains
    deq = run_float(DequantizedSource(chip), cfg, "llama", TOKENS)
    assert compare(deq, got)["logit_cosine_min"] > compare(ref, got)["logit_cosine_min"] - 1e-4
    assert not np.array_equal(deq.logits, got.logits)  # the chip really is not the float path


def test_fewer_bits_lose_quality(llama):
    cfg, W = llama
    ref = run_float(ArraySource(W), cfg, "llama", TOKENS)
    cos = {b: compare(ref, run_chip(to_chip(W, b), cfg, "llama", TOKENS, DATAPATH))
           ["logit_cosine_mean"] for b in (3, 8)}
    assert cos[3] < cos[8]


def test_chip_tied_lm_head_uses_embedding_codes():
    cfg = llama_config(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64, vocab=50,
                       tie_embeddings=True)
    W = random_weights(llama_shapes(cfg), seed=6)
    assert "lm_head.weight" not in W
    ref = run_float(ArraySource(W), cfg, "llama", TOKENS)
    got = run_chip(to_chip(W, 8), cfg, "llama", TOKENS, DATAPATH)
    assert compare(ref, got)["logit_cosine_min"] > 0.99


def test_chip_bert_close_to_float():
    cfg = bert_config(hidden=32, layers=2, heads=4, intermediate=64, vocab=50, max_position=16)
    W = random_weights(bert_shapes(cfg), seed=7)
    ref = run_float(ArraySource(W), cfg, "bert", TOKENS)
    a = run_chip(to_chip(W, 8), cfg, "bert", TOKENS, DATAPATH)
    b = run_chip(to_chip(W, 8), cfg, "bert", TOKENS, DATAPATH)
    assert np.array_equal(a.hidden, b.hidden) and np.array_equal(a.pooled, b.pooled)
    q = compare(ref, a)
    assert q["hidden_cosine_min"] > 0.99 and q["pooled_cosine"] > 0.99


def test_chip_rejects_float_matrix_and_missing_tensor(llama):
    cfg, W = llama
    chip = to_chip(W, 8)
    chip["model.layers.0.self_attn.q_proj.weight"] = W["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(ModelError, match=r"^chip tensor 'model\.layers\.0\.self_attn\."
                                         r"q_proj\.weight' must be quantized codes \+ "
                                         r"scales, not ndarray$"):
        run_chip(chip, cfg, "llama", TOKENS, DATAPATH)
    chip = to_chip(W, 8)
    del chip["model.norm.weight"]
    with pytest.raises(ModelError, match=r"^chip weights have no tensor 'model\.norm\.weight'$"):
        run_chip(chip, cfg, "llama", TOKENS, DATAPATH)
