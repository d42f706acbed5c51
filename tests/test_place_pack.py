"""pack_segment / unpack_segment: exact round trips over every bit width and block."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taalasc.errors import PlacementError
from taalasc.place import Segment, pack_segment, unpack_segment
from taalasc.quant import QuantizedTensor


def _qt(codes: np.ndarray, scales: np.ndarray, bits: int) -> QuantizedTensor:
    return QuantizedTensor(name="w", shape=codes.shape, bits=bits, group_size=1,
                           codes=codes, scales=scales, sqnr_db=0.0)


@st.composite
def _block(draw):
    out = draw(st.integers(1, 12))
    inp = draw(st.integers(1, 12))
    r0 = draw(st.integers(0, out - 1))
    r1 = draw(st.integers(r0 + 1, out))
    c0 = draw(st.integers(0, inp - 1))
    c1 = draw(st.integers(c0 + 1, inp))
    return out, inp, (r0, r1), (c0, c1), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 5, 6, 7, 8]), block=_block())
def test_codes_round_trip(bits, block):
    out, inp, rows, cols, seed = block
    rng = np.random.default_rng(seed)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = rng.integers(lo, hi + 1, size=(out, inp)).astype(np.int8)
    codes.flat[0] = lo  # the extreme negative code is always present
    codes.flat[-1] = hi
    seg = Segment("w", "codes", bits, rows, cols)
    packed = pack_segment(seg, _qt(codes, np.zeros((out, 1), np.float16), bits))
    assert packed.dtype == np.uint8 and packed.shape == (seg.used_sites,)
    assert set(np.unique(packed)) <= {0, 1}
    back = unpack_segment(seg, packed)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, codes[rows[0]:rows[1], cols[0]:cols[1]])


@settings(max_examples=100, deadline=None)
@given(block=_block(), kind=st.sampled_from(["scales", "vector"]))
def test_fp16_round_trip_bit_exact(block, kind):
    out, inp, rows, cols, seed = block
    rng = np.random.default_rng(seed)
    # every fp16 bit pattern except NaNs is fair game (inf, -0, subnormals included)
    pattern = rng.integers(0, 2**16, size=(out, inp), dtype=np.uint32).astype(np.uint16)
    values = pattern.view(np.float16)
    values[np.isnan(values)] = np.float16(-0.0)
    if kind == "vector":
        values = values[:1]
        rows = (0, 1)
        source = values.reshape(-1)
    else:
        source = _qt(np.zeros((out, 1), np.int8), values, 4)
    seg = Segment("w", kind, 16, rows, cols)
    back = unpack_segment(seg, pack_segment(seg, source))
    assert back.dtype == np.float16
    expect = values[rows[0]:rows[1], cols[0]:cols[1]]
    np.testing.assert_array_equal(back.view(np.uint16), expect.view(np.uint16))


def test_layout_is_lsb_first_twos_complement():
    codes = np.array([[-8, 1, 7]], dtype=np.int8)
    seg = Segment("w", "codes", 4, (0, 1), (0, 3))
    bits = pack_segment(seg, _qt(codes, np.zeros((1, 1), np.float16), 4))
    # -8 = 0b1000, 1 = 0b0001, 7 = 0b0111, each written LSB first
    assert bits.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    one = Segment("v", "vector", 16, (0, 1), (0, 1))
    assert pack_segment(one, np.array([1.0], np.float32)).tolist() == \
        [0] * 10 + [1, 1, 1, 1, 0, 0]  # fp16 1.0 = 0x3C00


def test_errors():
    codes = np.array([[5]], dtype=np.int8)
    with pytest.raises(PlacementError, match=r"^tensor 'w': codes must lie in \[-4, 3\] for 3 bits"):
        pack_segment(Segment("w", "codes", 3, (0, 1), (0, 1)), _qt(codes, np.zeros((1, 1), np.float16), 3))
    with pytest.raises(PlacementError, match=r"^tensor 'w': codes segment rows \(0, 2\)"):
        pack_segment(Segment("w", "codes", 4, (0, 2), (0, 1)), _qt(codes, np.zeros((1, 1), np.float16), 4))
    with pytest.raises(PlacementError, match=r"exceed the fp16 range"):
        pack_segment(Segment("v", "vector", 16, (0, 1), (0, 1)), np.array([1e6], np.float32))
    with pytest.raises(PlacementError, match=r"^tensor 'w': segment needs 8 sites, not 7$"):
        unpack_segment(Segment("w", "codes", 4, (0, 1), (0, 2)), np.zeros(7, np.uint8))
