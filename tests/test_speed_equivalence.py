"""The compile fast paths give the very bytes of the plain paths they replace."""

from __future__ import annotations


import numpy as np
import pytest

from taalasc.config import load_base_array
from taalasc.custom.tiles import render_tile, render_tiles
from taalasc.place.pack import pack_segment
from taalasc.place.plan import Segment
from test_custom_helpers import PREFIX
from taalasc.quant.quantize import QuantizedTensor, QuantSpec, quantize_tensor


def _weights(kind: int, rng) -> np.ndarray:
    shape = (int(rng.integers(1, 40)), 64)
    if kind == 0:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)
    if kind == 1:  # many exact half-way quotients: round-half-even must agree
        return rng.integers(-8, 8, shape).astype(np.float32) * np.float32(0.125)
    if kind == 2:  # tiny groups: fp16 scales round up to the smallest subnormal
        return (rng.standard_normal(shape) * 1e-30).astype(np.float32)
    w = rng.standard_normal(shape).astype(np.float32)
    w[:, ::3] = 0
    w[0] = 0  # all-zero groups
    return w


@pytest.mark.parametrize("kind", range(4))
@pytest.mark.parametrize("bits,group", [(2, 16), (3, None), (4, 32), (8, 16)])
def test_float32_quantize_matches_float64_path(kind, bits, group):
    w = _weights(kind, np.random.default_rng(kind * 10 + bits))
    fast = quantize_tensor("t", w, QuantSpec(bits, group))
    plain = quantize_tensor("t", w.astype(np.float64), QuantSpec(bits, group))
    assert np.array_equal(fast.codes, plain.codes)
    assert fast.scales.tobytes() == plain.scales.tobytes()
    assert fast.sqnr_db == plain.sqnr_db or (np.isinf(fast.sqnr_db) and np.isinf(plain.sqnr_db))


def _reference_bits(values: np.ndarray, bits: int) -> np.ndarray:
    v = values.astype(np.int64).reshape(-1) & ((1 << bits) - 1)
    return ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_segment_codes_and_scales(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (12, 48)).astype(np.int8)
    scales = (rng.standard_normal((12, 3)) * 5).astype(np.float16)
    qt = QuantizedTensor("t", (12, 48), bits, 16, codes, scales, 1.0)
    seg = Segment("t", "codes", bits, (2, 9), (5, 40))
    assert np.array_equal(pack_segment(seg, qt), _reference_bits(codes[2:9, 5:40], bits))
    seg = Segment("t", "scales", 16, (1, 12), (0, 3))
    assert np.array_equal(pack_segment(seg, qt),
                          _reference_bits(scales[1:12].view(np.uint16), 16))


def test_render_tiles_batch_equals_single_tiles():
    base = load_base_array("sky130-demo")
    cap = base.weight_tile.capacity_bits
    rng = np.random.default_rng(0)
    bits = [rng.integers(0, 2, n).astype(np.uint8) for n in (cap, cap, cap - 5, 17, 8)]
    assert render_tiles(base, bits, prefix=PREFIX) == [render_tile(base, b, prefix=PREFIX)
                                                     for b in bits]


