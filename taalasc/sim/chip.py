"""The bit-accurate model of the printed datapath.

What the model assumes the chip does (the datapath contract; change it here and in the docs):

* **Weights** are the integer codes and signed fp16 group scales of ``taalasc.quant`` (the
  vias of the weight tiles and the scale constants). 1-D tensors (norm weights, biases) are
  fp16 constants, used as float32.
* **Linear / lm_head** (``ChipOps.linear``). Each token's input vector x is quantized to
  ``activation_bits`` signed integers with symmetric absmax scales: one per vector, or, when
  the base array sets ``datapath.activation_group_size`` A, one per group of A consecutive
  inputs (the last group may be shorter), so an outlier channel costs precision only in its
  own group: ``s_a = float32(max|x_group|) / (2**(a-1) - 1)`` (float32 division),
  ``x_q = clip(np.rint(x / s_a), -(2**(a-1) - 1), 2**(a-1) - 1)`` (round half to even, the
  most negative code is unused so the range is symmetric). A zero group gets s_a = 0, x_q = 0.
  The inputs split into *blocks* of ``gcd(weight group, A)`` inputs (the weight group alone
  without A); each block lies in one weight group g and one activation group h. Per block the
  tile forms the exact integer dot product ``acc_b = sum_k x_q[k] * u[k]``, where u is the
  code (symmetric) or the unsigned code ``code + 2**(b-1)`` (asymmetric, computed as
  ``sum x_q*code + 2**(b-1) * S_b`` with the block's activation sum ``S_b = sum_k x_q[k]``,
  one extra accumulate per block shared by every output), held in a signed
  ``accumulator_bits`` register: a sum outside [-2**(A-1), 2**(A-1) - 1] saturates to the
  nearest end and is counted per tensor (or raises CheckFailed with overflow="raise").
  ``accumulator_bits_needed`` gives the worst-case width.
  Then, all in float32, ``p_b = float32(acc_b) * scale_g`` (``+ float32(S_b) * min_g`` when
  asymmetric) and ``y = tree_sum_b(p_b) * s_a`` per vector, or
  ``y = tree_sum_b(p_b * s_a[h(b)])`` with activation groups; then ``+ float32(bias)``.
  acc_b is exact in float32 while |acc_b| < 2**24.
* **Weight tiles per encoding** (the base's ``weight_tile.encoding``, digit width d =
  ``bits_per_site``; ``taalasc.sim.encoded``): a b-bit code's two's-complement pattern is
  stored as ceil(b/d) d-bit digits, LSB first, the top one read signed. Every encoding
  forms the same integer acc_b, so everything after it is shared:
  *tie-high-low* and *zero-skip* shift-and-add the bit planes (a zero-skip 0 is no via and
  reads 0), which is exactly ``sum x_q * code`` (computed so); *select* picks, per site,
  one line of the lane's product bank (x_q * every digit value, the top digit's bank
  signed), adds a plane's picked products over the block's lanes and the planes shifted by
  d*k; *ternary* (codes -1, 0, +1 only; a -2 is a ModelError) adds the lanes on the +x
  line and subtracts those on the -x line.
* **Embedding lookup**: the dequantized row ``float32(code) * float32(scale)`` (exact), or
  ``float32(u) * float32(scale) + float32(min)`` for asymmetric codes.
* **Vector unit**: norms, RoPE, attention (q.k and p.v are activation x activation products),
  softmax, SiLU, GELU and tanh run in float32. This is the model's assumption about the
  non-weight part of the chip, not a property of the masks.
* **Fixed order**: every float32 reduction (norm sums, q.k, softmax sum, p.v, the sum over
  groups) is a balanced binary adder tree over the reduced axis (``tree_sum``) built from
  elementwise numpy adds, never BLAS, so the result does not depend on thread count or
  library. Transcendentals (exp, sqrt, cos, sin, tanh, erf) are evaluated in float64 and
  rounded once to float32, so a 1-ulp difference between CPUs' float64 libraries almost
  never shows. The integer part is exact on every machine.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import numpy as np

from taalasc.errors import CheckFailed, ModelError
from taalasc.quant import QuantizedTensor
from taalasc.sim.encoded import (DEFAULT_ENCODING, check_encoding, check_ternary,
                                  encoded_block_sums)
from taalasc.sim.float_ref import erf
from taalasc.sim.graph import SimResult, run_graph

F32 = np.float32
ChipWeights = Mapping[str, Union[QuantizedTensor, np.ndarray]]
OVERFLOW_MODES = ("saturate", "raise")


def accumulator_bits_needed(activation_bits: int, weight_bits: int, group_size: int,
                            asymmetric: bool = False) -> int:
    """Signed accumulator width that holds the worst-case group sum without overflow.

    Asymmetric groups accumulate unsigned codes (up to 2**b - 1) instead of signed ones."""
    code_max = (1 << weight_bits) - 1 if asymmetric else 1 << (weight_bits - 1)
    worst = (2 ** (activation_bits - 1) - 1) * code_max * group_size
    return worst.bit_length() + 1


def tree_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis as a balanced binary tree: pairs (0,1), (2,3), ...; an odd last
    element is carried up unchanged. Fixed order, elementwise adds only."""
    return tree_sum_first(np.moveaxis(np.asarray(x), -1, 0))


def _f64(fn, x: np.ndarray) -> np.ndarray:
    """A transcendental evaluated in float64 and rounded once to float32."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return fn(np.asarray(x, dtype=np.float64)).astype(F32)


def quantize_activations(x: np.ndarray, bits: int,
                         group_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes [..., n], float32 scales) along the last axis.

    ``group_size`` None: one scale per vector, shape [...]. Otherwise one scale per group of
    ``group_size`` consecutive elements (the last group may be shorter), shape [..., groups].
    """
    qmax = 2 ** (bits - 1) - 1
    if group_size is None:
        absmax = np.max(np.abs(x), axis=-1).astype(F32)
        scale = (absmax / F32(qmax)).astype(F32)
        safe = np.where(scale == 0, F32(1), scale)
        codes = np.clip(np.rint(x / safe[..., None]), -qmax, qmax).astype(np.int64)
        return codes, scale
    n = x.shape[-1]
    starts = np.arange(0, n, group_size)
    absmax = np.maximum.reduceat(np.abs(x), starts, axis=-1).astype(F32)
    scale = (absmax / F32(qmax)).astype(F32)
    safe = np.repeat(np.where(scale == 0, F32(1), scale), group_size, axis=-1)[..., :n]
    codes = np.clip(np.rint(x / safe), -qmax, qmax).astype(np.int64)
    return codes, scale


# Output rows per matmul chunk: bounds the [blocks, seq, rows] scratch (an lm_head of 128 k
# rows would otherwise need GBs); chunks do not change any result, every row is independent.
_CHUNK_ELEMENTS = 1 << 22


def block_dot(x_q: np.ndarray, codes: np.ndarray, block: int,
              code_offset: int = 0) -> np.ndarray:
    """Exact integer block sums ``sum_k x_q[s, k] * (codes[o, k] + code_offset)`` over each
    block of ``block`` inputs, as floats holding integers: [blocks, seq, out].

    Computed with a BLAS matmul, which is exact here whatever order it adds in: every
    product and partial sum is an integer of magnitude <= max|x_q| * max|code| * block, so
    float32 is used when that bound is below 2**24 and float64 (exact below 2**53) otherwise.
    """
    seq, n_in = x_q.shape
    n_out = codes.shape[0]
    nb = n_in // block
    code_max = int(np.abs(codes).max(initial=0)) + abs(code_offset)
    bound = int(np.abs(x_q).max(initial=0)) * code_max * block
    dtype = np.float32 if bound < (1 << 24) else np.float64
    # Contiguous operands: numpy hands each block's product to BLAS only then.
    a = np.ascontiguousarray(x_q.astype(dtype).reshape(seq, nb, block).transpose(1, 0, 2))
    w = codes.astype(dtype)
    if code_offset:
        w += dtype(code_offset)
    w = np.ascontiguousarray(w.reshape(n_out, nb, block).transpose(1, 2, 0))       # [B, k, O]
    return np.matmul(a, w)                                                          # [B, S, O]


def group_dot(x_q: np.ndarray, codes: np.ndarray, group_size: int) -> np.ndarray:
    """Exact integer group sums: int64 [seq, out, groups] for x_q [seq, in], codes [out, in]."""
    return block_dot(x_q, codes, group_size).transpose(1, 2, 0).astype(np.int64)


def tree_sum_first(x: np.ndarray) -> np.ndarray:
    """``tree_sum`` over the first axis (the block sums come block-major from the matmul,
    so the adds take whole contiguous slices)."""
    while x.shape[0] > 1:
        n = x.shape[0]
        paired = x[0:n - 1:2] + x[1:n:2]
        x = np.concatenate([paired, x[n - 1:]], axis=0) if n % 2 else paired
    return x[0]


class ChipOps:
    """The graph operators as the printed chip computes them (see the module docstring)."""

    def __init__(self, weights: ChipWeights, activation_bits: int, accumulator_bits: int,
                 overflow: str = "saturate", lora=None, activation_group_size: int | None = None,
                 encoding: str = DEFAULT_ENCODING, site_bits: int = 1):
        check_encoding(encoding, site_bits)
        self.encoding, self.site_bits = encoding, int(site_bits)
        self._checked: set[str] = set()   # tensors whose codes the tiles can hold
        if overflow not in OVERFLOW_MODES:
            raise ModelError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}, "
                             f"not {overflow!r}")
        self.weights = weights
        self.a_bits = int(activation_bits)
        self.acc_bits = int(accumulator_bits)
        if activation_group_size is not None and (
                isinstance(activation_group_size, bool)
                or not isinstance(activation_group_size, (int, np.integer))
                or activation_group_size < 1):
            raise ModelError(f"activation_group_size must be a positive integer or None, "
                             f"not {activation_group_size!r}")
        self.a_group = None if activation_group_size is None else int(activation_group_size)
        self.overflow = overflow
        self.overflows: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.lora = lora  # a taalasc.lora.LoraAdapter held in SRAM, applied at run time

    def names(self) -> list[str]:
        return sorted(self.weights)

    def _matrix(self, name: str) -> QuantizedTensor:
        qt = self.weights.get(name)
        if qt is None:
            raise ModelError(f"chip weights have no tensor {name!r}")
        if not isinstance(qt, QuantizedTensor):
            raise ModelError(f"chip tensor {name!r} must be quantized codes + scales, "
                             f"not {type(qt).__name__}")
        return qt

    def _check_codes(self, name: str, qt: QuantizedTensor) -> None:
        """Once per tensor: a ternary site holds -1, 0 or +1 only (ModelError otherwise)."""
        if self.encoding == "ternary" and name not in self._checked:
            check_ternary(name, qt.codes)
            self._checked.add(name)

    def linear(self, x, weight, bias):
        qt = self._matrix(weight)
        self._check_codes(weight, qt)
        if qt.shape[1] != x.shape[-1]:
            raise ModelError(f"tensor {weight!r}: shape {qt.shape} does not take an input of "
                             f"{x.shape[-1]} features")
        if not np.isfinite(x).all():
            raise ModelError(f"tensor {weight!r}: its input activations are not finite")
        # A block is the inputs that share one weight scale and one activation scale.
        block = qt.group_size if self.a_group is None else math.gcd(qt.group_size, self.a_group)
        x_q, s_a = quantize_activations(x, self.a_bits, self.a_group)
        seq, nb = x_q.shape[0], qt.shape[1] // block
        act_sum = x_q.reshape(seq, nb, block).sum(axis=-1) if qt.asymmetric else None
        y = np.empty((seq, qt.shape[0]), dtype=F32)
        rows = max(1, _CHUNK_ELEMENTS // max(1, seq * nb))
        for r0 in range(0, qt.shape[0], rows):  # rows are independent: chunks change nothing
            r1 = min(r0 + rows, qt.shape[0])
            y[:, r0:r1] = self._linear_rows(weight, qt, r0, r1, x_q, s_a, act_sum, block)
        y = (y + self.vector(bias)).astype(F32) if bias else y
        if self.lora is not None:  # PEFT order: base layer (with bias), then + s·B·A·x
            from taalasc.lora import apply_lora
            y = apply_lora(x, weight, y, self.lora)
        return y

    def _linear_rows(self, weight, qt, r0, r1, x_q, s_a, act_sum, block) -> np.ndarray:
        """Output rows r0..r1 of one linear layer, float32 [seq, r1 - r0].

        Arrays are [blocks, seq, rows]: the block sums as the matmul gives them."""
        acc = encoded_block_sums(x_q, qt.codes[r0:r1], qt.bits, block, qt.code_offset,
                                 self.encoding, self.site_bits, weight)       # exact integers
        acc = self._saturate(weight, acc)
        group_of = np.arange(acc.shape[0]) * block // qt.group_size      # block -> weight group
        scales = qt.scales[r0:r1].T.astype(F32)[group_of][:, None, :]     # [B, 1, rows]
        partial = acc.astype(F32) * scales
        if qt.asymmetric:
            mins = qt.mins[r0:r1].T.astype(F32)[group_of][:, None, :]
            partial += act_sum.T.astype(F32)[:, :, None] * mins
        if self.a_group is None:
            return (tree_sum_first(partial) * s_a[:, None]).astype(F32)
        act_of = np.arange(acc.shape[0]) * block // self.a_group          # block -> a-group
        partial *= s_a.T[act_of][:, :, None]
        return tree_sum_first(partial).astype(F32)

    def _saturate(self, weight: str, acc: np.ndarray) -> np.ndarray:
        """Hold the block sums in the signed accumulator: count (or raise on) overflows."""
        lo, hi = -(1 << (self.acc_bits - 1)), (1 << (self.acc_bits - 1)) - 1
        peak = int(max(acc.max(initial=0), -acc.min(initial=0)))
        self.peak[weight] = max(self.peak.get(weight, 0), peak)
        if peak <= hi:  # the common case: nothing to count or clip
            return acc
        bad = int(np.count_nonzero((acc < lo) | (acc > hi)))
        if self.overflow == "raise":
            raise CheckFailed(
                f"tensor {weight!r}: {bad} group sums overflow the {self.acc_bits}-bit "
                f"accumulator (largest |sum| {peak} needs {peak.bit_length() + 1} bits)")
        self.overflows[weight] = self.overflows.get(weight, 0) + bad
        return np.clip(acc, lo, hi)

    def embed(self, weight, ids):
        qt = self._matrix(weight)
        self._check_codes(weight, qt)
        rows = qt.codes[ids].astype(F32).reshape(len(ids), qt.n_groups, qt.group_size)
        if not qt.asymmetric:
            return (rows * qt.scales[ids].astype(F32)[:, :, None]).reshape(len(ids), -1)
        rows = rows + F32(qt.code_offset)
        return (rows * qt.scales[ids].astype(F32)[:, :, None]
                + qt.mins[ids].astype(F32)[:, :, None]).reshape(len(ids), -1)

    def vector(self, name):
        v = self.weights.get(name)
        if v is None:
            raise ModelError(f"chip weights have no tensor {name!r}")
        if isinstance(v, QuantizedTensor) or np.asarray(v).ndim != 1:
            raise ModelError(f"chip tensor {name!r} must be a 1-D fp16 constant")
        return np.asarray(v, dtype=np.float16).astype(F32)

    def _rsqrt(self, v: np.ndarray) -> np.ndarray:
        return _f64(lambda t: 1.0 / np.sqrt(t), v)

    def rmsnorm(self, x, weight, eps):
        ms = (tree_sum(x * x) / F32(x.shape[-1])).astype(F32)
        return (weight * (x * self._rsqrt(ms + F32(eps))[:, None])).astype(F32)

    def layernorm(self, x, weight, bias, eps):
        n = F32(x.shape[-1])
        d = (x - (tree_sum(x) / n)[:, None]).astype(F32)
        var = (tree_sum(d * d) / n).astype(F32)
        return (d * self._rsqrt(var + F32(eps))[:, None] * weight + bias).astype(F32)

    def attention(self, q, k, v, allowed, scale):
        # q.k: [H, Sq, Sk, D] products, tree over D; p.v: products tree over Sk.
        scores = (tree_sum(q[:, :, None, :] * k[:, None, :, :]) * F32(scale)).astype(F32)
        scores = np.where(allowed[None], scores, F32(-np.inf))
        e = _f64(np.exp, scores - scores.max(axis=-1, keepdims=True))
        probs = (e / tree_sum(e)[..., None]).astype(F32)
        prod = probs[:, :, :, None] * v[:, None, :, :]              # [H, Sq, Sk, D]
        return tree_sum(np.moveaxis(prod, 2, -1)).astype(F32)

    def cos_sin(self, angles):
        return _f64(np.cos, angles), _f64(np.sin, angles)

    def silu(self, x):
        return (x * _f64(lambda t: 1.0 / (1.0 + np.exp(-t)), x)).astype(F32)

    def gelu(self, x):
        return _f64(lambda t: 0.5 * t * (1.0 + erf(t / math.sqrt(2.0))), x)

    def tanh(self, x):
        return _f64(np.tanh, x)


def run_chip(weights: ChipWeights, config: dict | None, architecture: str,
             tokens: Sequence[int], datapath, overflow: str = "saturate", lora=None,
             weight_tile=None) -> SimResult:
    """Run the network on the chip model.

    ``weights``: name -> QuantizedTensor (every 2-D tensor) or fp16 array (1-D constants).
    ``datapath``: anything with ``activation_bits`` and ``accumulator_bits`` (a base array's
    ``.datapath``). ``overflow``: "saturate" (count per tensor in the result) or "raise".
    ``lora``: an optional LoRA adapter applied after each adapted Linear, as the chip does
    with the copy in its SRAM. ``weight_tile``: anything with ``encoding`` and
    ``bits_per_site`` (a base array's ``.weight_tile``); None is a tie-high-low tile.
    """
    ops = ChipOps(weights, datapath.activation_bits, datapath.accumulator_bits, overflow, lora,
                  getattr(datapath, "activation_group_size", None),
                  *encoding_of(weight_tile))
    result = run_graph(ops, config, architecture, tokens)
    result.overflows = dict(sorted(ops.overflows.items()))
    result.peak_accumulator = dict(sorted(ops.peak.items()))
    return result


def encoding_of(weight_tile) -> tuple[str, int]:
    """(encoding, digit width) of a base array's weight tile; None: tie-high-low, 1 bit."""
    if weight_tile is None:
        return DEFAULT_ENCODING, 1
    return weight_tile.encoding, weight_tile.bits_per_site


def chip_weights(ckpt, policy, progress=None) -> dict[str, QuantizedTensor | np.ndarray]:
    """ChipWeights from a checkpoint quantized with ``policy`` (a taalasc.quant.BitPolicy):
    every 2-D tensor as codes + scales, every 1-D tensor as an fp16 constant."""
    from taalasc.quant import quantize_model
    from taalasc.quant.method import TensorQuantizer

    quantizer = TensorQuantizer(ckpt, policy, progress)
    out: dict[str, QuantizedTensor | np.ndarray] = {
        qt.name: qt for qt in quantize_model(ckpt, policy, progress, quantizer=quantizer)}
    for name, info in ckpt.tensors.items():
        if len(info.shape) <= 1:   # with --awq the norms carry the folded scales
            out[name] = quantizer.source.read(name).reshape(-1).astype(np.float16)
    return out


class DequantizedSource:
    """A float WeightSource over ChipWeights: codes * scales, fp16 constants as float32.

    Running the float reference on it separates weight-quantization error from datapath
    (activation and accumulator) error."""

    def __init__(self, weights: ChipWeights):
        self._weights = weights

    def names(self) -> list[str]:
        return sorted(self._weights)

    def get(self, name: str) -> np.ndarray:
        v = self._weights.get(name)
        if v is None:
            raise ModelError(f"chip weights have no tensor {name!r}")
        if isinstance(v, QuantizedTensor):
            return v.dequantize()
        return np.asarray(v, dtype=np.float16).astype(F32)
