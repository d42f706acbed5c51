"""What per-group activation scales and asymmetric weight groups add to the datapath.

Counted in full-adder equivalents (FA), the unit of the area, power and timing models
(area.transistors_per_tile, power.E_MAC, timing's FA-delay levels). The unit costs are
ESTIMATES from textbook structures, not from a synthesised netlist:
  * comparator of b bits = b FA (a b-bit subtractor's carry chain; the select mux folded in),
    delay ceil(log2 b) + 1 FA levels (a prefix comparator, like timing's prefix adder);
  * FP16 multiply = m² + e FA with m = 11 significand bits, e = 5 exponent bits (an m × m
    array multiplier is about m² adders, Weste & Harris 11.9; plus the exponent adder),
    delay csa_levels(m) + ceil(log2 2m) FA levels (carry-save rows, then a prefix adder);
  * FP16 add = 2m + e FA (alignment shifter ≈ m, significand adder m, exponent compare e),
    delay ceil(log2 m) + 1 FA levels; a multiply-add is a multiply then an add.

Activation groups of A inputs (base array datapath.activation_group_size), a-bit activations:
  * per group: one absmax = a comparator tree of A − 1 comparators (depth ceil(log2 A)), and
    one FP16 scale computation (≈ one FP16 multiply: absmax × 1/qmax);
  * per output, per block of min(A, G) inputs (G = the weight group; the blocks where one
    weight group and one activation group overlap): one extra FP16 multiply by the
    activation scale.
  Area: every tile carries a quantizer for its ceil(lanes / A) input groups and one extra
  multiplier per group for the row it streams each cycle (a base array cannot know which
  tiles share an input). Energy per token: the scale is computed once per stage input and
  broadcast (parallel tensors q/k/v or gate/up share it); the extra multiplies are counted
  per output and block. Cycles: absmax + scale, then the extra multiply, each rounded up to
  whole clock periods, on every matrix stage.
Asymmetric weight groups of G inputs (w = scale·u + min, GGUF Q4_1 style), used by a compile:
  * per group: S_g = Σ x_q over the group, an extra accumulate of G − 1 a-bit additions,
    shared by all outputs of the stage (computed beside the dot product: no extra cycle);
  * per output, per group: one FP16 multiply-add, min·S_g added to the group's sum.
  Area per tile: ceil(lanes / G) S_g accumulators and multiply-adders; cycles: the
  multiply-add, rounded up to whole periods, on every stage with asymmetric tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taalasc.report.shape import ModelShape, _numel, stage_of

FP16_SIGNIFICAND_BITS = 11
FP16_EXPONENT_BITS = 5


def comparator_fa(bits: int) -> int:
    return bits


def comparator_levels(bits: int) -> int:
    return math.ceil(math.log2(bits)) + 1


def fp_multiply_fa() -> int:
    return FP16_SIGNIFICAND_BITS ** 2 + FP16_EXPONENT_BITS


def fp_add_fa() -> int:
    return 2 * FP16_SIGNIFICAND_BITS + FP16_EXPONENT_BITS


def fp_multiply_levels() -> int:
    from taalasc.report.timing import csa_levels

    m = FP16_SIGNIFICAND_BITS
    return csa_levels(m) + math.ceil(math.log2(2 * m))


def fp_add_levels() -> int:
    return math.ceil(math.log2(FP16_SIGNIFICAND_BITS)) + 1


def is_lookup(name: str) -> bool:
    return "embed" in name or "position_embeddings" in name or "token_type" in name


def is_product(model: ModelShape, name: str) -> bool:
    """A matrix product per token (not a table lookup). A tied head (no lm_head tensor)
    multiplies by the embedding table, so that table counts as a product."""
    if not is_lookup(name):
        return True
    tied = bool((model.config or {}).get("tie_word_embeddings", False))
    return tied and ("embed_tokens" in name or "word_embeddings" in name)


@dataclass(frozen=True)
class DatapathExtras:
    """Full-adder equivalents and FA-delay levels the activation format adds."""

    activation_group: int | None = None
    act_fa_per_tile: int = 0
    act_fa_per_token: int = 0  # FA toggles per token (scale units once per stage input)
    act_scale_levels: int = 0  # absmax tree + scale computation, FA delays
    act_multiply_levels: int = 0  # the extra multiply per block, FA delays
    act_stages: int = 0  # matrix stages that quantize their input in groups
    act_blocks: int = 0  # Σ over products of out × ceil(in / min(A, G)) (extra multiplies)
    act_groups: int = 0  # Σ over stage inputs of ceil(in / A) (absmax + scale units)
    asym_group: int | None = None  # the smallest asymmetric weight group
    asym_fa_per_tile: int = 0
    asym_fa_per_token: int = 0
    asym_levels: int = 0
    asym_stages: int = 0
    asym_groups: int = 0  # Σ over asymmetric products of out × ceil(in / G) (multiply-adds)

    @property
    def fa_per_tile(self) -> int:
        return self.act_fa_per_tile + self.asym_fa_per_tile


def stage_key(model: ModelShape, name: str) -> tuple[int, str]:
    layer = model.layer_of(name)
    return (layer if layer is not None else -1, stage_of(name) or name)


def datapath_extras(model: ModelShape, bits: dict[str, tuple[int, int | None]], base,
                    asymmetric: frozenset[str] = frozenset()) -> DatapathExtras:
    """The extras for ``model`` at ``bits`` (name -> (bits, group or None)) on ``base``."""
    lanes, a_bits = base.weight_tile.input_lanes, base.datapath.activation_bits
    A = getattr(base.datapath, "activation_group_size", None)
    products = [n for n in sorted(bits) if is_product(model, n)]

    def fan_in(name: str) -> int:
        return _numel(model.tensors[name][1:])

    def group_of(name: str) -> int:
        g = bits[name][1]
        return fan_in(name) if g is None else min(g, fan_in(name))

    out: dict = {}
    if A:
        stage_in: dict[tuple[int, str], int] = {}
        for n in products:
            key = stage_key(model, n)
            stage_in[key] = max(stage_in.get(key, 0), fan_in(n))
        groups = sum(math.ceil(f / A) for f in stage_in.values())
        blocks = sum(model.tensors[n][0] * math.ceil(fan_in(n) / min(A, group_of(n)))
                     for n in products)
        per_tile_groups = math.ceil(lanes / A)
        out.update(
            activation_group=A,
            act_fa_per_tile=per_tile_groups * ((min(A, lanes) - 1) * comparator_fa(a_bits)
                                               + 2 * fp_multiply_fa()),
            act_fa_per_token=sum(math.ceil(f / A) * (min(A, f) - 1) * comparator_fa(a_bits)
                                 for f in stage_in.values())
            + groups * fp_multiply_fa() + blocks * fp_multiply_fa(),
            act_scale_levels=math.ceil(math.log2(A)) * comparator_levels(a_bits)
            + fp_multiply_levels(),
            act_multiply_levels=fp_multiply_levels(),
            act_stages=len(stage_in), act_blocks=blocks, act_groups=groups)
    asym = [n for n in products if n in asymmetric]
    if asym:
        g_min = min(group_of(n) for n in asym)
        stage_g: dict[tuple[int, str], tuple[int, int]] = {}
        for n in asym:
            key = stage_key(model, n)
            f, g = stage_g.get(key, (0, fan_in(n)))
            stage_g[key] = (max(f, fan_in(n)), min(g, group_of(n)))
        fma = fp_multiply_fa() + fp_add_fa()
        mults = sum(model.tensors[n][0] * math.ceil(fan_in(n) / group_of(n)) for n in asym)
        sums = sum(math.ceil(f / g) * (g - 1) * a_bits for f, g in stage_g.values())
        per_tile_groups = math.ceil(lanes / min(g_min, lanes))
        out.update(
            asym_group=g_min,
            asym_fa_per_tile=per_tile_groups * ((min(g_min, lanes) - 1) * a_bits + fma),
            asym_fa_per_token=sums + mults * fma,
            asym_levels=fp_multiply_levels() + fp_add_levels(),
            asym_stages=len(stage_g), asym_groups=mults)
    return DatapathExtras(**out)


def extra_cycles(extras: DatapathExtras, fa_delay_ps: float, period_ps: float) -> tuple[int, int]:
    """(cycles per grouped stage, cycles per asymmetric stage) at ``period_ps``."""
    act = 0
    if extras.activation_group:
        act = math.ceil(extras.act_scale_levels * fa_delay_ps / period_ps) + \
            math.ceil(extras.act_multiply_levels * fa_delay_ps / period_ps)
    asym = math.ceil(extras.asym_levels * fa_delay_ps / period_ps) if extras.asym_group else 0
    return act, asym
