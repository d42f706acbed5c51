"""What a weight costs in each weight-tile encoding: sites, vias, adders, and a MAC's toggles.

The encodings are defined in taalasc/config/base_array.py (weight_tile.encoding). A tile
streams one row of L = input_lanes weights per cycle (every encoding); a = activation_bits,
B = max_weight_bits, b = a weight's bits, s = bits_per_site (select), A = accumulator_bits.

Sites and vias per weight:
  tie-high-low  b sites, b vias (one per bit, on the tie-high or the tie-low strap);
  zero-skip     b sites, b·(1 − z) vias: only 1 bits get a via; z = the zero-bit ratio, an
                input (DEFAULT_ZERO_BIT_RATIO unless given);
  select        ceil(b/s) sites (s-bit digits), ceil(b/s) vias: one per digit;
  ternary       1 site, 1 via (on the +x, 0 or −x line).
Constants (norms, biases, scales) take one site per bits_per_site bits (one bit per
ternary site, floor(log2 3)), one via per site (zero-skip: per 1 bit). Every line also ends
in one via into the base at the tile edge (the tie vias of tie-high-low): lines_per_site ×
sites_y per used tile.

Adders per tile (full adders, FA; the unit of area.py, timing.py and power.py):
  shift-and-add (tie-high-low, zero-skip): a constant weight times an activation is a sum of
    shifted activations, one per weight bit, so the tree reduces L·B operands of a bits:
    L·B·a + A FA (one FA per partial-product bit, a 3:2 counter removes one bit);
  select: per lane a product bank holds x·c for every s-bit code c, computed once per token
    and held while the tile streams its rows: the even multiples are shifts and −x·c is the
    inversion of x·c (its +1 carried into the tree), so the bank needs one (a+s)-bit adder
    per odd multiple 3..2^(s−1)−1: L·(2^(s−1) − 1)·(a + s) FA; each row cycle a one-hot
    2^s:1 mux per lane and digit (the digit's via picks its line) passes one product to the
    tree, which reduces L·ceil(B/s) operands of a + s bits: L·ceil(B/s)·(a + s) + A FA, and
    the muxes cost 2 transistors (a transmission gate) per line per product bit;
  ternary: add or subtract only: a 3:1 one-hot mux of {+x, 0, −x} (a + 1 bits, the sign bit
    added) per lane and a tree of L operands: L·(a + 1) + A FA, mux 2·3·(a + 1) per lane.
Flip-flops per tile: the lanes' activation registers and the accumulator, L·a + A (the select
bank is combinational from the held activations). One transistor per site (the row select;
Taalas's "single transistor" per parameter).

A MAC's toggles (power.py): the tree's FA per MAC is a·b (shift-and-add), ceil(b/s)·(a+s)
(select), a + 1 (ternary); every via on the read row drives its line across the tile height
(vias per weight × line capacitance). The select bank is charged once per token per active
tile (power.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHIFT_AND_ADD = ("tie-high-low", "zero-skip")
# Half the bits of a code are zero when 0 and 1 are equally likely; TOM (arXiv 2602.20662)
# reports 65 % zero bits for its ternary BitNet-2B weights, so real weights can skip more.
DEFAULT_ZERO_BIT_RATIO = 0.5
ZERO_BIT_RATIO_SOURCE = ("assumption: half the bits of a weight code are zero (0 and 1 equally "
                         "likely; TOM, arXiv 2602.20662, measures 65 % on ternary BitNet-2B); "
                         "set it with --zero-bit-ratio")


def zero_bit_input(base, given: float | None) -> tuple[float, str]:
    """(zero-bit ratio, its source) for ``base``: the given ratio or the default on a
    zero-skip base, (0, '') on the others; a ratio for another encoding is an error."""
    from taalasc.errors import ModelError

    encoding = base.weight_tile.encoding
    if given is not None:
        if encoding != "zero-skip":
            raise ModelError(f"--zero-bit-ratio applies to weight_tile.encoding 'zero-skip' "
                             f"only; {base.name} encodes {encoding!r}")
        if not 0 <= given < 1:
            raise ModelError(f"--zero-bit-ratio must be in [0, 1), not {given!r}")
        return given, "--zero-bit-ratio"
    if encoding == "zero-skip":
        return DEFAULT_ZERO_BIT_RATIO, ZERO_BIT_RATIO_SOURCE
    return 0.0, ""


@dataclass(frozen=True)
class TileLogic:
    """The logic of one weight tile, by encoding (module docstring)."""

    tree_operands: int   # adder-tree inputs per row cycle
    operand_bits: int    # width of each operand
    tree_fa: int         # tree_operands · operand_bits + accumulator_bits
    bank_fa: int         # select product bank
    mux_transistors: int  # one-hot pass-gate muxes (select, ternary)
    dffs: int
    sites: int           # one transistor each

    @property
    def full_adders(self) -> int:
        return self.tree_fa + self.bank_fa


def tile_logic(base) -> TileLogic:
    t, d = base.weight_tile, base.datapath
    lanes, a, acc = t.input_lanes, d.activation_bits, d.accumulator_bits
    dffs = lanes * a + acc
    if t.encoding == "select":
        s = t.bits_per_site
        digits = t.sites_per_weight(t.max_weight_bits)
        width = a + s
        return TileLogic(lanes * digits, width, lanes * digits * width + acc,
                         lanes * (2 ** (s - 1) - 1) * width,
                         lanes * digits * 2 ** s * width * 2, dffs, t.sites)
    if t.encoding == "ternary":
        return TileLogic(lanes, a + 1, lanes * (a + 1) + acc, 0, lanes * 3 * (a + 1) * 2, dffs,
                         t.sites)
    operands = lanes * t.max_weight_bits
    return TileLogic(operands, a, operands * a + acc, 0, 0, dffs, t.sites)


def vias_per_weight(tile, bits: int, zero_bit_ratio: float) -> float:
    """Vias one weight of ``bits`` bits costs (module docstring)."""
    if tile.encoding == "zero-skip":
        return bits * (1 - zero_bit_ratio)
    return tile.sites_per_weight(bits)


def vias_per_constant_bit(tile, zero_bit_ratio: float) -> float:
    if tile.encoding == "zero-skip":
        return 1 - zero_bit_ratio
    return 1 / tile.constant_bits_per_site


def tree_fa_per_mac(tile, activation_bits: int, bits: int) -> int:
    """Adder-tree FA toggles one MAC costs (module docstring)."""
    if tile.encoding == "select":
        return tile.sites_per_weight(bits) * (activation_bits + tile.bits_per_site)
    if tile.encoding == "ternary":
        return activation_bits + 1
    return activation_bits * bits


def bank_levels(base) -> int:
    """FA delays of the select bank's (a+s)-bit adders (prefix adders, as timing's final
    adder: ceil(log2 width) + 1 levels); 0 where there is no bank."""
    t = base.weight_tile
    if t.encoding != "select" or t.bits_per_site < 2:
        return 0   # s = 1: the codes 0 and 1 are x·0 and x, no adder
    return math.ceil(math.log2(base.datapath.activation_bits + t.bits_per_site)) + 1


def formula_text(encoding: str) -> dict[str, str]:
    """The per-encoding formulas, as the report prints them."""
    return {
        "tie-high-low": {"vias": "b per weight (one per bit)",
                         "fa": "L·B·a + A  (shift-and-add tree)",
                         "mac": "a·b"},
        "zero-skip": {"vias": "b·(1 − z) per weight (only 1 bits)",
                      "fa": "L·B·a + A  (shift-and-add tree)",
                      "mac": "a·b"},
        "select": {"vias": "ceil(b/s) per weight (one per s-bit digit)",
                   "fa": "L·ceil(B/s)·(a+s) + A tree + L·(2^(s−1)−1)·(a+s) bank",
                   "mac": "ceil(b/s)·(a+s)"},
        "ternary": {"vias": "1 per weight", "fa": "L·(a+1) + A  (add/subtract tree)",
                    "mac": "a + 1"},
    }[encoding]
