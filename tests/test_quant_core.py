"""quantize_tensor: error bounds, code range, determinism, SQNR, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import taalasc.quant.quantize as qmod
from taalasc.errors import QuantizationError
from taalasc.quant import QuantSpec, quantize_tensor, resolve_group_size

FP16_MIN_NORMAL = 2.0 ** -14


def reference(w: np.ndarray, bits: int, gs: int) -> tuple[np.ndarray, np.ndarray]:
    """Element-by-element pure-Python restatement of the documented scheme."""
    qmax = 2 ** (bits - 1)
    out, inp = w.shape
    codes = np.zeros((out, inp), np.int8)
    scales = np.zeros((out, inp // gs), np.float16)
    for r in range(out):
        for g in range(inp // gs):
            vals = [float(v) for v in w[r, g * gs:(g + 1) * gs]]
            hi, lo = max(vals), min(vals)
            ideal = max(abs(hi), abs(lo)) / qmax
            s = np.float16(ideal)
            if float(s) < ideal:
                s = np.nextafter(s, np.float16(np.inf))
            if hi > -lo:
                s = -s
            scales[r, g] = s
            for j, v in enumerate(vals):
                c = 0 if float(s) == 0 else round(v / float(s))  # round() is half-even
                codes[r, g * gs + j] = min(max(c, -qmax), qmax - 1)
    return codes, scales


@st.composite
def matrices(draw):
    bits = draw(st.integers(2, 8))
    out = draw(st.integers(1, 6))
    gs = draw(st.sampled_from([1, 2, 3, 8, 16]))
    ng = draw(st.integers(1, 4))
    magnitude = draw(st.sampled_from([1e-9, 1e-6, 1e-3, 1.0, 1e3, 6e4]))
    w = draw(hnp.arrays(np.float32, (out, ng * gs),
                        elements=st.floats(-1, 1, width=32, allow_subnormal=False)))
    w = (w * np.float32(magnitude)).astype(np.float32)
    kind = draw(st.sampled_from(["plain", "zero_row", "constant_row", "negated"]))
    if kind == "zero_row":
        w[0] = 0
    elif kind == "constant_row":
        w[0] = w[0, 0] if w[0, 0] != 0 else np.float32(magnitude)
    elif kind == "negated":
        w = -w
    group = draw(st.sampled_from([gs, None]))
    return w, bits, group


@settings(max_examples=300, deadline=None)
@given(matrices())
def test_round_trip_error_bounds(case):
    w, bits, group = case
    qt = quantize_tensor("t", w, QuantSpec(bits, group))
    qmax = 2 ** (bits - 1)
    gs = qt.group_size
    assert qt.codes.dtype == np.int8 and qt.scales.dtype == np.float16
    assert qt.codes.min() >= -qmax and qt.codes.max() <= qmax - 1
    assert np.isfinite(qt.scales).all()
    s = np.repeat(qt.scales.astype(np.float64), gs, axis=1)
    w64 = w.astype(np.float64)
    deq = qt.dequantize().astype(np.float64)
    err = np.abs(w64 - deq)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s == 0, 0.0, w64 / s)
    clipped = ratio > qmax - 0.5
    assert (qt.codes[clipped] == qmax - 1).all()
    # unclipped: rounding to nearest (a relative 1e-12 slack for the float64 quotient)
    assert (err[~clipped] <= np.abs(s[~clipped]) * (0.5 + 1e-12)).all()
    # clipped: only the side opposite the group's extreme, and at most one scale away
    assert (err[clipped] <= np.abs(s[clipped])).all()
    assert (ratio >= -qmax).all(), "scale rounded up: the negative end never clips"
    # all-zero groups: scale 0 and codes 0, exact
    zero = ~w64.reshape(w.shape[0], -1, gs).any(axis=2)
    assert (qt.scales[zero] == 0).all() and not np.signbit(qt.scales[zero]).any()
    # the full code range is used: every group with a normal fp16 scale reaches -2**(bits-1)
    normal = np.abs(qt.scales.astype(np.float64)) >= FP16_MIN_NORMAL
    mins = qt.codes.reshape(w.shape[0], -1, gs).min(axis=2)
    assert (mins[normal] == -qmax).all()


@settings(max_examples=60, deadline=None)
@given(matrices())
def test_matches_independent_reference_bit_exactly(case):
    w, bits, group = case
    qt = quantize_tensor("t", w, QuantSpec(bits, group))
    codes, scales = reference(w, bits, qt.group_size)
    np.testing.assert_array_equal(qt.codes, codes)
    assert qt.scales.tobytes() == scales.tobytes()


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_weight_takes_the_most_negative_code_either_sign(bits, sign):
    qmax = 2 ** (bits - 1)
    w = np.array([[0.25, -0.5, 0.75 * sign, 1.0 * sign]], np.float32)
    qt = quantize_tensor("t", w, QuantSpec(bits, None))
    assert qt.codes[0, 3] == -qmax
    assert float(qt.scales[0, 0]) == -sign / qmax
    assert qt.dequantize()[0, 3] == np.float32(sign)  # the extreme weight is exact


def test_symmetric_extremes_keep_a_positive_scale_and_clip_the_positive_one():
    qt = quantize_tensor("t", np.array([[-1.0, 1.0, 0.0, 0.5]], np.float32), QuantSpec(3, None))
    assert float(qt.scales[0, 0]) == 0.25
    assert qt.codes.tolist() == [[-4, 3, 0, 2]]


def test_deterministic_bytes_and_layout_independent():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((48, 96)).astype(np.float32)
    a = quantize_tensor("t", w, QuantSpec(3, 32))
    b = quantize_tensor("t", np.asfortranarray(w.copy()), QuantSpec(3, 32))
    assert a.codes.tobytes() == b.codes.tobytes()
    assert a.scales.tobytes() == b.scales.tobytes()
    assert a.sqnr_db == b.sqnr_db


def test_row_blocks_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((37, 64)).astype(np.float32)
    whole = quantize_tensor("t", w, QuantSpec(4, 16))
    monkeypatch.setattr(qmod, "_BLOCK_ELEMENTS", 64 * 5)
    blocks = quantize_tensor("t", w, QuantSpec(4, 16))
    assert whole.codes.tobytes() == blocks.codes.tobytes()
    assert whole.scales.tobytes() == blocks.scales.tobytes()
    assert math.isclose(whole.sqnr_db, blocks.sqnr_db, rel_tol=1e-12)
    w[30, 9] = np.nan  # in a later block: the index is still the global one
    with pytest.raises(QuantizationError, match=r"^tensor 't': weight \[30, 9\] is nan"):
        quantize_tensor("t", w, QuantSpec(4, 16))


def test_sqnr_rises_about_6db_per_bit_on_gaussian_data():
    w = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    sqnr = {b: quantize_tensor("g", w, QuantSpec(b, 128)).sqnr_db for b in range(3, 9)}
    slope = (sqnr[8] - sqnr[3]) / 5
    assert 4.5 < slope < 7.5, sqnr
    assert all(sqnr[b + 1] > sqnr[b] + 4.0 for b in range(3, 8)), sqnr


def test_sqnr_matches_dequantized_error_and_is_inf_when_exact():
    w = np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)
    qt = quantize_tensor("t", w, QuantSpec(5, 8))
    d = w.astype(np.float64) - qt.dequantize()
    expect = 10 * math.log10(np.square(w.astype(np.float64)).sum() / np.square(d).sum())
    assert math.isclose(qt.sqnr_db, expect, rel_tol=1e-9)
    exact = np.array([[1.0, -2.0, 0.0, 4.0]], np.float32)  # representable on a 4-bit grid
    assert quantize_tensor("t", exact, QuantSpec(4, None)).sqnr_db == math.inf
    assert quantize_tensor("z", np.zeros((2, 4), np.float32), QuantSpec(4, 2)).sqnr_db == math.inf


@pytest.mark.parametrize("bad, where", [(np.nan, "[1, 2]"), (np.inf, "[1, 2]"), (-np.inf, "[1, 2]")])
def test_non_finite_weights_name_tensor_and_index(bad, where):
    w = np.ones((3, 4), np.float32)
    w[1, 2] = bad
    w[2, 0] = bad
    with pytest.raises(QuantizationError, match=r"^tensor 'layer\.w': weight \[1, 2\] is "):
        quantize_tensor("layer.w", w, QuantSpec(4, None))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fp16_scale_overflow_is_an_error_just_past_the_limit(bits):
    limit = 65504.0 * 2 ** (bits - 1)
    ok = np.array([[limit, 1.0]], np.float64)
    assert float(np.abs(quantize_tensor("w", ok, QuantSpec(bits, None)).scales).max()) == 65504.0
    with pytest.raises(QuantizationError, match=r"^tensor 'big': row 0 group 1 .*fp16 maximum"):
        quantize_tensor("big", np.array([[1.0, 2.0, limit * 1.01, 0.0]]), QuantSpec(bits, 2))


def test_group_size_that_does_not_divide_picks_the_largest_divisor_below_it():
    w = np.zeros((2, 96), np.float32)
    # 40 does not divide 96: the largest divisor <= 40 (and >= 8) is 32
    assert quantize_tensor("x", w, QuantSpec(4, 40)).group_size == 32
    assert resolve_group_size("x", 1000, 32) == 25
    assert resolve_group_size("x", 97, 32) == 97          # prime: no divisor >= 8, whole row
    assert resolve_group_size("x", 384, 32) == 32
    # a group at least as long as the row is the whole row
    assert quantize_tensor("x", w, QuantSpec(4, 128)).group_size == 96
    assert quantize_tensor("x", w, QuantSpec(4, None)).scales.shape == (2, 1)


@given(st.integers(1, 5000), st.integers(1, 512))
def test_resolved_group_size_always_divides_the_row(n, g):
    size = resolve_group_size("x", n, g)
    assert n % size == 0 and (size <= g or size == n)


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), ()])
def test_only_2d_tensors_are_quantized(shape):
    with pytest.raises(QuantizationError, match=r"^tensor 'n': only 2-D tensors are quantized"):
        quantize_tensor("n", np.ones(shape, np.float32), QuantSpec(4, None))


@pytest.mark.parametrize("bits", [1, 9, 0, 3.0, True])
def test_bits_out_of_range(bits):
    with pytest.raises(QuantizationError, match=r"^bits must be an integer from 2 to 8, not "):
        QuantSpec(bits, None)


@pytest.mark.parametrize("gs", [0, -8, 2.5])
def test_bad_group_size_spec(gs):
    with pytest.raises(QuantizationError, match=r"^group_size must be a positive integer"):
        QuantSpec(4, gs)


def test_ties_round_half_to_even():
    w = np.array([[-4.0, 0.25, 0.75, 1.25, -0.25, -0.75]], np.float32)  # scale 0.5 at 4 bits
    qt = quantize_tensor("t", w, QuantSpec(4, None))
    assert float(qt.scales[0, 0]) == 0.5
    assert qt.codes.tolist() == [[-8, 0, 2, 2, 0, -2]]
