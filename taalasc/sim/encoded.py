"""The weight tile's arithmetic per encoding: block sums from the sites' stored digits.

A weight tile of digit width d (the base's ``weight_tile.bits_per_site``: 1 for tie-high-low
and zero-skip, 2 for ternary, s for select) stores a b-bit code, pattern
p = code & (2**b - 1), as K = ceil(b / d) sites, LSB digit first: digit k is
(p >> (d*k)) & (2**d - 1). Its value is

    sum_{k < K-1} digit_k * 2**(d*k)  +  signed_top * 2**(d*(K-1))

where the top digit has width d' = b - d*(K-1) and is read signed (t - 2**d' when
t >= 2**(d'-1)). That is two's complement read in base 2**d, so the value is the code.
Every function returns the same block sums as ``chip.block_dot(x_q, codes, block,
code_offset)``: [blocks, seq, out] floats holding exact integers.

* **tie-high-low, zero-skip** (d = 1): the tile is a shift-and-add over bit planes, each
  plane summing x_i * bit over a block's lanes (zero-skip: a 0 bit has no via and reads 0,
  the same bit). With ``digit_block_sums`` at d = 1 that is
  sum_k 2**k * sum_i x_i * bit_k(p_i) - 2**(b-1) * sum_i x_i * bit_{b-1}(p_i), and
  exchanging the two finite integer sums gives sum_i x_i * code_i: the very integer
  ``block_dot`` forms in one matmul. Integer addition is associative, so the order of the
  adds cannot change it; ``block_dot`` is used (tests/test_sim_encoded.py checks the two on
  random codes).
* **select**: per input lane i a shared product bank holds x_i * j for every digit value j
  (0 .. 2**d - 1; the top digit's bank signed, -2**(d'-1) .. 2**(d'-1) - 1); each site's
  via picks one product line; the tile adds the picked products of a digit plane over the
  block's lanes, then adds the planes shifted by d*k (``digit_block_sums``).
* **ternary**: codes in {-1, 0, +1}, one site each; the three lines carry +x_i, 0, -x_i, so
  the tile adds the activation, skips it or subtracts it (``ternary_block_sums``: the sum
  of the lanes on the +x line minus the sum of those on the -x line, each a 0/1-masked
  ``block_dot``, exact by its bound). A code -2 (the fourth 2-bit pattern) cannot be
  stored: ModelError.

Asymmetric codes add ``code_offset * S_b`` (S_b the block's activation sum) as block_dot does.
The select sums are int64 (exact: |sum| <= 2**(a-1) * 2**b * block, far below 2**63) and
converted to float64 at the end, exact while |sum| < 2**53 (a 16-bit activation times an
8-bit code over a block of 2**22 lanes is 2**45); the ternary difference of two block_dot
sums is exact in float64 by the same bound. Memory is bounded: the picked products are made
for a chunk of output rows at a time (``_PICK_ELEMENTS``), and ChipOps passes row chunks.
"""

from __future__ import annotations

import numpy as np

from taalasc.config.base_array import ENCODINGS, MAX_SELECT_BITS
from taalasc.errors import ModelError

DEFAULT_ENCODING = "tie-high-low"
# Picked products held at once (int64): [seq, rows, in] per chunk, 32 MB.
_PICK_ELEMENTS = 1 << 22


def check_encoding(encoding: str, site_bits: int) -> None:
    """ModelError unless ``encoding`` and its digit width go together."""
    if encoding not in ENCODINGS:
        raise ModelError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    want = {"tie-high-low": (1,), "zero-skip": (1,), "ternary": (2,)}.get(
        encoding, tuple(range(1, MAX_SELECT_BITS + 1)))
    if isinstance(site_bits, bool) or not isinstance(site_bits, (int, np.integer)) \
            or site_bits not in want:
        raise ModelError(f"a {encoding} tile stores {' or '.join(map(str, want))}-bit digits "
                         f"per site, not {site_bits!r}")


def digits(codes: np.ndarray, bits: int, site_bits: int) -> list[np.ndarray]:
    """The K digit planes of ``bits``-bit codes (int64, LSB digit first), the top one signed."""
    pattern = np.asarray(codes, np.int64) & ((1 << bits) - 1)
    count = -(-bits // site_bits)
    top = bits - site_bits * (count - 1)
    planes = [(pattern >> (site_bits * k)) & ((1 << site_bits) - 1) for k in range(count - 1)]
    t = pattern >> (site_bits * (count - 1))
    planes.append(np.where(t >= 1 << (top - 1), t - (1 << top), t))
    return planes


def digit_block_sums(x_q: np.ndarray, codes: np.ndarray, bits: int, block: int,
                     site_bits: int, code_offset: int = 0) -> np.ndarray:
    """Block sums as a select tile forms them (module docstring): per digit plane, each lane's
    product bank x_i * j is indexed by the site's digit, the picked products are added over
    the block's lanes, and the planes are added shifted by ``site_bits * k``."""
    x = np.asarray(x_q, np.int64)
    seq, n_in = x.shape
    n_out, nb = codes.shape[0], n_in // block
    count = -(-bits // site_bits)
    top = bits - site_bits * (count - 1)
    banks = []   # per plane: (first digit value, [seq, in * lines] products x_i * j)
    for k in range(count):
        low, width = (-(1 << (top - 1)), top) if k == count - 1 else (0, site_bits)
        values = np.arange(low, low + (1 << width))
        banks.append((low, len(values), (x[:, :, None] * values).reshape(seq, -1)))
    lane = np.arange(n_in)
    out = np.zeros((nb, seq, n_out), np.int64)
    rows = max(1, _PICK_ELEMENTS // max(1, seq * n_in))
    for r0 in range(0, n_out, rows):
        planes = digits(codes[r0:r0 + rows], bits, site_bits)
        for k, (plane, (low, lines, bank)) in enumerate(zip(planes, banks)):
            picked = bank[:, lane * lines + (plane - low)]   # [seq, rows, in]: via -> line
            sums = picked.reshape(seq, plane.shape[0], nb, block).sum(axis=-1)
            out[:, :, r0:r0 + rows] += sums.transpose(2, 0, 1) << (site_bits * k)
    if code_offset:
        out += code_offset * x.reshape(seq, nb, block).sum(axis=-1).T[:, :, None]
    return out.astype(np.float64)


def check_ternary(name: str, codes: np.ndarray) -> None:
    """ModelError naming the first code a ternary site cannot hold (anything but -1, 0, +1)."""
    bad = (codes < -1) | (codes > 1)
    if bad.any():
        index = [int(i) for i in np.argwhere(bad)[0]]
        raise ModelError(f"tensor {name!r}: code {int(codes[tuple(index)])} at {index} on a "
                         "ternary base, whose sites store -1, 0 or +1 only")


def ternary_block_sums(x_q: np.ndarray, codes: np.ndarray, block: int,
                       name: str = "weights") -> np.ndarray:
    """Block sums as a ternary tile forms them: + x_i where the code is +1, - x_i where it is
    -1, nothing where it is 0. ModelError for any other code."""
    from taalasc.sim.chip import block_dot

    codes = np.asarray(codes)
    check_ternary(name, codes)

    # the lanes on the +x line, minus those on the -x line; the 0 line adds nothing
    plus, minus = (codes == 1).astype(np.int8), (codes == -1).astype(np.int8)
    return (block_dot(x_q, plus, block).astype(np.float64)
            - block_dot(x_q, minus, block).astype(np.float64))


def encoded_block_sums(x_q: np.ndarray, codes: np.ndarray, bits: int, block: int,
                       code_offset: int, encoding: str, site_bits: int,
                       name: str = "weights") -> np.ndarray:
    """The block sums of ``encoding``'s tile: [blocks, seq, out], equal to block_dot's."""
    from taalasc.sim.chip import block_dot

    if encoding == "ternary":
        if code_offset:
            raise ModelError(f"tensor {name!r}: asymmetric codes on a ternary base, whose "
                             "sites store -1, 0 or +1 only")
        return ternary_block_sums(x_q, codes, block, name)
    if encoding == "select":
        return digit_block_sums(x_q, codes, bits, block, site_bits, code_offset)
    return block_dot(x_q, codes, block, code_offset)
