"""The weight tile's arithmetic per encoding (taalasc.sim.encoded): every encoding's block
sums equal block_dot's exactly, and the chip model runs each encoding to the same outputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import taalasc.sim.encoded as enc
from taalasc.errors import ModelError
from taalasc.quant import QuantSpec, quantize_tensor
from taalasc.sim import ChipOps
from taalasc.sim.chip import block_dot, encoding_of

TILES = [("tie-high-low", 1), ("zero-skip", 1), ("select", 1), ("select", 2), ("select", 3),
         ("select", 4)]


def random_codes(rng, bits: int, shape) -> np.ndarray:
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape).astype(np.int8)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("site_bits", [1, 2, 3, 4])
def test_digits_are_the_code_in_base_two_to_the_d(bits, site_bits):
    codes = np.arange(-(1 << (bits - 1)), 1 << (bits - 1)).astype(np.int8)
    planes = enc.digits(codes, bits, site_bits)
    assert len(planes) == -(-bits // site_bits)
    value = sum(p << (site_bits * k) for k, p in enumerate(planes))
    assert np.array_equal(value, codes)
    for p in planes[:-1]:
        assert p.min() >= 0 and p.max() < 1 << site_bits


@pytest.mark.parametrize("bits", range(2, 9))
def test_bit_plane_shift_and_add_is_the_single_integer_dot(bits):
    """tie-high-low and zero-skip: the bit planes shifted and added (the d = 1 digit sums,
    the top bit weighted -2**(b-1)) equal block_dot's one exact dot, symmetric and
    asymmetric."""
    rng = np.random.default_rng(bits)
    x = rng.integers(-127, 128, size=(3, 96))
    codes = random_codes(rng, bits, (7, 96))
    for offset in (0, 1 << (bits - 1)):
        want = block_dot(x, codes, 32, offset)
        got = enc.digit_block_sums(x, codes, bits, 32, 1, offset)
        assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("encoding, site_bits", TILES)
@pytest.mark.parametrize("bits", range(2, 9))
def test_every_encoding_gives_block_dots_sums(encoding, site_bits, bits):
    rng = np.random.default_rng(100 * bits + site_bits)
    x = rng.integers(-32767, 32768, size=(4, 64))    # 16-bit activations: float64 in block_dot
    codes = random_codes(rng, bits, (9, 64))
    for offset, block in ((0, 16), (1 << (bits - 1), 8)):
        got = enc.encoded_block_sums(x, codes, bits, block, offset, encoding, site_bits)
        assert np.array_equal(got, block_dot(x, codes, block, offset))


def test_ternary_tile_adds_subtracts_or_skips():
    rng = np.random.default_rng(7)
    x = rng.integers(-127, 128, size=(5, 64))
    codes = rng.integers(-1, 2, size=(11, 64)).astype(np.int8)
    got = enc.encoded_block_sums(x, codes, 2, 16, 0, "ternary", 2)
    assert np.array_equal(got, block_dot(x, codes, 16))


def test_a_code_minus_two_on_a_ternary_base_is_an_error():
    codes = np.zeros((3, 32), np.int8)
    codes[2, 5] = -2
    with pytest.raises(ModelError, match=r"tensor 'w': code -2 at \[2, 5\] on a ternary base"):
        enc.encoded_block_sums(np.ones((1, 32), np.int64), codes, 2, 32, 0, "ternary", 2, "w")
    with pytest.raises(ModelError, match="asymmetric codes on a ternary base"):
        enc.encoded_block_sums(np.ones((1, 32), np.int64), codes * 0, 2, 32, 2, "ternary", 2)


def test_select_sums_are_chunked_without_changing_them(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.integers(-127, 128, size=(3, 64))
    codes = random_codes(rng, 6, (13, 64))
    want = enc.digit_block_sums(x, codes, 6, 32, 4)
    monkeypatch.setattr(enc, "_PICK_ELEMENTS", 3 * 64 * 2)    # two output rows per chunk
    assert np.array_equal(enc.digit_block_sums(x, codes, 6, 32, 4), want)


@pytest.mark.parametrize("encoding, site_bits", [("unknown", 1), ("select", 5), ("select", 0),
                                                 ("ternary", 1), ("tie-high-low", 2),
                                                 ("zero-skip", True)])
def test_bad_tiles_are_one_error(encoding, site_bits):
    with pytest.raises(ModelError, match="encoding must be one of|digits per site"):
        ChipOps({}, 8, 24, encoding=encoding, site_bits=site_bits)


def test_encoding_of_a_weight_tile():
    assert encoding_of(None) == ("tie-high-low", 1)
    assert encoding_of(SimpleNamespace(encoding="select", bits_per_site=4)) == ("select", 4)


def _linear(encoding, site_bits, qt, x, a_group=None):
    ops = ChipOps({"w": qt}, 8, 32, activation_group_size=a_group, encoding=encoding,
                  site_bits=site_bits)
    return ops.linear(x, "w", None)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_chip_linear_outputs_are_the_same_in_every_encoding(asymmetric):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((24, 64)).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    qt = quantize_tensor("w", w, QuantSpec(5, 16, asymmetric=asymmetric))
    for a_group in (None, 8):
        want = _linear("tie-high-low", 1, qt, x, a_group)
        for encoding, site_bits in TILES[1:]:
            got = _linear(encoding, site_bits, qt, x, a_group)
            assert got.tobytes() == want.tobytes(), (encoding, site_bits, a_group)


def test_chip_on_a_ternary_base():
    rng = np.random.default_rng(12)
    qt = quantize_tensor("w", rng.standard_normal((8, 64)), QuantSpec(2, 32, ternary=True))
    x = rng.standard_normal((3, 64)).astype(np.float32)
    assert _linear("ternary", 2, qt, x).tobytes() == _linear("tie-high-low", 1, qt, x).tobytes()
    plain = quantize_tensor("w", rng.standard_normal((8, 64)), QuantSpec(2, 32))
    assert (plain.codes == -2).any()
    with pytest.raises(ModelError, match="code -2 at .* on a ternary base"):
        _linear("ternary", 2, plain, x)
    ops = ChipOps({"w": plain}, 8, 32, encoding="ternary", site_bits=2)
    with pytest.raises(ModelError, match="code -2"):
        ops.embed("w", [0, 1])


def test_simulate_takes_the_encoding_from_the_base(tmp_path):
    """`taalasc simulate --base` quantizes for a ternary base and runs its tiles; a select
    base gives the tie-high-low outputs (same integers), other bits are one error line."""
    import json
    import subprocess
    import sys

    from taalasc.model.synth import write_demo

    model = write_demo(tmp_path / "t", ternary=True)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "taalasc", "simulate", str(model),
                               "--tokens", "1 2 3", "--json", *args],
                              capture_output=True, text=True)

    ok = run("--base", "hc1-n6-ternary", "--bits", "2")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["quality"]["kl_mean_nats"] < 1e-5   # born ternary: exact
    bad = run("--base", "hc1-n6-ternary")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == ("error: tensor 'model.embed_tokens.weight': ternary bases store "
                          "{-1, 0, +1} weights at --bits 2, but --bits gives it 4 bits\n")
    select, plain = run("--base", "hc1-n6-select"), run("--base", "hc1-n6")
    assert select.returncode == 0 and select.stdout == plain.stdout
