"""Symmetric integer quantization of one 2-D weight matrix, with per-group fp16 scales.

The scheme (one scale per group of ``group_size`` consecutive inputs of one output row):

    scale  = ±absmax / 2**(bits-1), rounded *up* in magnitude to the next IEEE fp16 value
    code   = clip(rint(w / scale), -2**(bits-1), 2**(bits-1) - 1)      # round half to even
    w_hat  = code * scale

Why the sign of the scale: a b-bit two's-complement code has one more negative value than
positive ones. We give the scale the sign that maps the group's largest-magnitude weight onto
the most negative code -2**(bits-1), so that weight is represented exactly (up to the fp16
rounding of the scale) and the whole code range is used. The scale is negative when the
largest magnitude is a positive weight (``max(w) > -min(w)``), positive otherwise (a tie
keeps the positive scale). Consumers must treat scales as *signed* fp16 values; dequantizing
is always the plain product ``code * scale``.

Why round the scale up: then |w / scale| <= 2**(bits-1) for every weight of the group, so the
negative end never clips, and the chip's fp16 scale is exactly the one used for the codes.

Error bound, with s = |stored fp16 scale| and q = 2**(bits-1):
  * an element is *clipped* when w / scale > q - 1/2 (it would need the code +q, which
    does not exist); only weights of the opposite sign to the group's extreme can be;
  * unclipped elements: |w - w_hat| <= s / 2 (rounding to nearest);
  * clipped elements:   |w - w_hat| <= s      (since |w| <= q*s and w_hat = (q-1)*s in magnitude).
  The property tests check both bounds.

Asymmetric codes (``QuantSpec(asymmetric=True)``, GGUF Q4_1 style, one fp16 minimum per group):

    min    = the group minimum, rounded *down* to an fp16 value (so min <= every weight)
    scale  = (max - min) / (2**bits - 1), rounded *up* to the next fp16 value (>= 0)
    u      = clip(rint((w - min) / scale), 0, 2**bits - 1)                   # unsigned code
    code   = u - 2**(bits-1)                            # stored offset by half the range
    w_hat  = scale * u + min

The stored code is the unsigned code with its top bit flipped (offset binary), so codes keep
one int8 range and one site layout for both kinds; ``unsigned_codes`` gives u back. The chip
computes ``scale * sum(x * u) + min * sum(x)`` per group (one extra accumulate of the
activations per group, shared by every output row).

Ternary codes (``QuantSpec(bits=2, ternary=True)``, for ternary base arrays), the post-training
rule of Ternary Weight Networks (F. Li, B. Zhang, B. Liu, "Ternary Weight Networks",
arXiv:1605.04711, 2016: its approximate threshold and optimal scale), per group:

    delta  = 0.7 * mean|w|                           # the TWN threshold
    code   = sign(w) * [|w| > delta]                 # in {-1, 0, +1}
    scale  = mean |w| over the elements with code != 0 (0 when none), rounded to the nearest
             fp16 value (>= 0; a positive mean below the smallest fp16 subnormal is stored as
             that subnormal, as for the other codes)
    w_hat  = code * scale

A weight that is already gamma * {-1, 0, +1} per group (a "born-ternary" checkpoint, BitNet
b1.58's) comes back exactly: delta < gamma, so every code is kept, and the mean is gamma.

All-zero groups get scale 0 and codes 0: exact, no NaN. Scales smaller than the smallest fp16
subnormal (~6e-8) are rounded up to it, so tiny groups lose relative precision but stay
inside the bound (it is stated in terms of the stored scale). A scale above the largest fp16
(65504) is an error: the chip could not store it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from taalasc.errors import QuantizationError

MIN_BITS = 2
MAX_BITS = 8
FP16_MAX = 65504.0
# Rows are processed in blocks of about this many elements so that the float64 temporaries
# stay small (a 128k x 4k embedding would otherwise need several GB of scratch).
_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor: bits per code and group size along the input dimension."""

    bits: int
    group_size: int | None  # None = one group per output channel (the whole row)
    asymmetric: bool = False  # True: unsigned codes with an fp16 minimum per group
    ternary: bool = False     # True: codes in {-1, 0, +1} (TWN, see the module docstring)

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) \
                or not MIN_BITS <= self.bits <= MAX_BITS:
            raise QuantizationError(
                f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, not {self.bits!r}")
        if self.ternary and (self.bits != 2 or self.asymmetric):
            raise QuantizationError(
                f"ternary codes are symmetric 2-bit codes {{-1, 0, +1}}, not "
                f"{'asymmetric ' if self.asymmetric else ''}{self.bits}-bit ones")
        if self.group_size is not None and (
                isinstance(self.group_size, bool) or not isinstance(self.group_size, int)
                or self.group_size < 1):
            raise QuantizationError(
                f"group_size must be a positive integer or None (per-channel), "
                f"not {self.group_size!r}")


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Integer codes and fp16 scales of one 2-D weight matrix ([out_features, in_features])."""

    name: str
    shape: tuple[int, int]
    bits: int
    group_size: int          # resolved: in_features when per-channel
    codes: np.ndarray        # int8 [out, in], two's complement in [-2**(bits-1), 2**(bits-1)-1]
    scales: np.ndarray       # float16 [out, n_groups], signed (>= 0 when asymmetric)
    sqnr_db: float           # 10*log10(sum(w^2) / sum((w - w_hat)^2)); inf when exact
    mins: np.ndarray | None = None   # float16 [out, n_groups] when asymmetric, else None
    ternary: bool = False            # codes in {-1, 0, +1} only (bits 2, scales >= 0)

    @property
    def asymmetric(self) -> bool:
        return self.mins is not None

    @property
    def n_groups(self) -> int:
        return self.shape[1] // self.group_size

    @property
    def code_offset(self) -> int:
        """What the chip adds to a stored code before multiplying: 2**(bits-1) when
        asymmetric (offset binary back to unsigned), 0 when symmetric."""
        return 1 << (self.bits - 1) if self.asymmetric else 0

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def dequantize(self) -> np.ndarray:
        """float32 weights ``codes * scales``; exact in float32 (8-bit x 11-bit mantissas)."""
        out, inp = self.shape
        s = self.scales.astype(np.float32)[:, :, None]
        c = self.codes.reshape(out, self.n_groups, self.group_size).astype(np.float32)
        if self.mins is None:
            return (c * s).reshape(out, inp)
        u = c + np.float32(self.code_offset)
        return (u * s + self.mins.astype(np.float32)[:, :, None]).reshape(out, inp)


MIN_AUTO_GROUP = 8


def resolve_group_size(name: str, in_features: int, group_size: int | None) -> int:
    """The group size actually used for a row of ``in_features`` inputs.

    None (per-channel) gives the whole row. A group never spans rows, so a group size at
    least as large as the row also gives the whole row. When the requested size does not
    divide the row (a checkpoint with, say, 1,000 inputs under the default 32), the group is
    the largest divisor of the row that is <= the requested size and >= ``MIN_AUTO_GROUP``;
    with no such divisor, the whole row. The choice depends only on the two numbers, so
    every command makes the same one, and the manifest records the size used per tensor.
    """
    if group_size is None or group_size >= in_features:
        return in_features
    if in_features % group_size == 0:
        return group_size
    for size in range(group_size, MIN_AUTO_GROUP - 1, -1):
        if in_features % size == 0:
            return size
    return in_features


def check_matrix(name: str, w: np.ndarray) -> tuple[int, int]:
    """(out_features, in_features) of a weight matrix; QuantizationError unless it is a
    non-empty 2-D array."""
    if w.ndim != 2:
        raise QuantizationError(
            f"tensor {name!r}: only 2-D tensors are quantized, not shape {tuple(w.shape)}")
    out_f, in_f = (int(n) for n in w.shape)
    if out_f == 0 or in_f == 0:
        raise QuantizationError(f"tensor {name!r}: cannot quantize an empty tensor {w.shape}")
    return out_f, in_f


def sqnr_db(signal: float, error: float) -> float:
    """10·log10(signal / error) of sums of squares; inf when the codes are exact."""
    return math.inf if error == 0.0 else 10.0 * math.log10(signal / error)


def grid_values(codes: np.ndarray, scales: np.ndarray, mins: np.ndarray | None,
                bits: int) -> np.ndarray:
    """float64 values of stored codes on their grid: ``code * scale`` (symmetric) or
    ``(code + 2**(bits-1)) * scale + min`` (asymmetric). ``scales``/``mins`` broadcast
    against ``codes`` as given."""
    if mins is None:
        return np.asarray(codes, np.float64) * np.asarray(scales, np.float64)
    values = (np.asarray(codes, np.float64) + (1 << (bits - 1))) * np.asarray(scales, np.float64)
    return values + np.asarray(mins, np.float64)


def check_finite(name: str, block: np.ndarray, w: np.ndarray, row0: int) -> None:
    """QuantizationError naming the first NaN/Inf weight of ``block`` (rows from ``row0``)."""
    if not np.isfinite(block).all():
        r, c = np.argwhere(~np.isfinite(block))[0]
        r, c = int(r) + row0, int(c)
        raise QuantizationError(f"tensor {name!r}: weight [{r}, {c}] is {float(w[r, c])!r}; "
                                "NaN/Inf weights cannot be quantized")


def _group_scales(name: str, groups: np.ndarray, bits: int, row0: int) -> np.ndarray:
    """Signed fp16 scales for ``groups`` [rows, n_groups, group_size] (float64)."""
    return _scales_from_extremes(name, groups.max(axis=2), groups.min(axis=2), bits, row0)


def _scales_from_extremes(name: str, gmax: np.ndarray, gmin: np.ndarray, bits: int,
                          row0: int) -> np.ndarray:
    """Signed fp16 scales from each group's max and min (float64, [rows, n_groups])."""
    qmax = 2 ** (bits - 1)
    absmax = np.maximum(np.abs(gmax), np.abs(gmin))  # abs: an all -0.0 group gets +0.0
    ideal = absmax / qmax
    if (ideal > FP16_MAX).any():
        r, g = np.argwhere(ideal > FP16_MAX)[0]
        raise QuantizationError(
            f"tensor {name!r}: row {int(r) + row0} group {int(g)} has |w| = {absmax[r, g]:.6g}; "
            f"its {bits}-bit scale exceeds the fp16 maximum {FP16_MAX:g} "
            f"(|w| must be <= {FP16_MAX * qmax:g})")
    mag = ideal.astype(np.float16)
    short = mag.astype(np.float64) < ideal  # rounded down: step up one fp16 ulp
    if short.any():
        mag[short] = np.nextafter(mag[short], np.float16(np.inf))
    return np.where(gmax > -gmin, -mag, mag)


def fp16_scales_symmetric(gmax: np.ndarray, gmin: np.ndarray, bits: int,
                          name: str = "weights") -> np.ndarray:
    """Signed fp16 scales of symmetric groups from each group's max and min (float64)."""
    return _scales_from_extremes(name, np.asarray(gmax, np.float64),
                                 np.asarray(gmin, np.float64), bits, 0)


def fp16_scale_min_asymmetric(gmax: np.ndarray, gmin: np.ndarray, bits: int,
                              name: str = "weights") -> tuple[np.ndarray, np.ndarray]:
    """(scale, min) fp16 arrays of asymmetric groups: min is the group minimum rounded down
    to fp16, scale is (max - min) / (2**bits - 1) rounded up, so no weight clips."""
    gmax = np.asarray(gmax, np.float64)
    gmin = np.asarray(gmin, np.float64)
    if (np.abs(gmin) > FP16_MAX).any():
        raise QuantizationError(
            f"tensor {name!r}: a group minimum {float(gmin[np.abs(gmin) > FP16_MAX][0]):.6g} "
            f"is beyond the fp16 range (+-{FP16_MAX:g}) of the stored minimum")
    mins = gmin.astype(np.float16)
    high = mins.astype(np.float64) > gmin
    if high.any():
        mins[high] = np.nextafter(mins[high], np.float16(-np.inf))
    ideal = (gmax - mins.astype(np.float64)) / ((1 << bits) - 1)
    if (ideal > FP16_MAX).any():
        raise QuantizationError(
            f"tensor {name!r}: a group spans {float(ideal.max() * ((1 << bits) - 1)):.6g}; its "
            f"{bits}-bit scale exceeds the fp16 maximum {FP16_MAX:g}")
    scales = ideal.astype(np.float16)
    short = scales.astype(np.float64) < ideal
    if short.any():
        scales[short] = np.nextafter(scales[short], np.float16(np.inf))
    return scales, mins


def codes_from_scales(groups: np.ndarray, scales: np.ndarray, mins: np.ndarray | None,
                      bits: int) -> np.ndarray:
    """Stored int8 codes of ``groups`` [..., n_groups, group_size] on a given grid.

    ``scales``/``mins`` are fp16 [..., n_groups]; ``mins`` None means symmetric. Rounding is
    to nearest, half to even, in float64; a zero scale gives code 0 (symmetric) or the
    lowest code (asymmetric: the group is all equal to its minimum)."""
    g = np.asarray(groups, dtype=np.float64)
    s = np.asarray(scales).astype(np.float64)[..., None]
    safe = np.where(s == 0.0, 1.0, s)
    if mins is None:
        qmax = 1 << (bits - 1)
        return np.clip(np.rint(g / safe), -qmax, qmax - 1).astype(np.int8)
    m = np.asarray(mins).astype(np.float64)[..., None]
    u = np.clip(np.rint((g - m) / safe), 0, (1 << bits) - 1)
    u = np.where(s == 0.0, 0.0, u)
    return (u - (1 << (bits - 1))).astype(np.int8)


def _float64_groups(name: str, w: np.ndarray, gs: int):
    """(first row, float64 groups [rows, n_groups, gs]) of ``w`` in blocks of about
    _BLOCK_ELEMENTS, each checked for NaN/Inf: the row loop of every float64 path."""
    out_f, in_f = w.shape
    rows = max(1, _BLOCK_ELEMENTS // in_f)
    for r0 in range(0, out_f, rows):
        block = np.asarray(w[r0:r0 + rows], dtype=np.float64)
        check_finite(name, block, w, r0)
        yield r0, block.reshape(block.shape[0], in_f // gs, gs)


def _quantize_asymmetric(name: str, w: np.ndarray, spec: QuantSpec, gs: int) -> QuantizedTensor:
    out_f, in_f = (int(n) for n in w.shape)
    ng = in_f // gs
    codes = np.empty((out_f, in_f), dtype=np.int8)
    scales = np.empty((out_f, ng), dtype=np.float16)
    mins = np.empty((out_f, ng), dtype=np.float16)
    err = sig = 0.0
    for r0, groups in _float64_groups(name, w, gs):
        r1 = r0 + len(groups)
        s16, m16 = fp16_scale_min_asymmetric(groups.max(axis=2), groups.min(axis=2),
                                             spec.bits, name)
        q = codes_from_scales(groups, s16, m16, spec.bits)
        deq = grid_values(q, s16[:, :, None], m16[:, :, None], spec.bits)
        err += float(np.square(groups - deq).sum())
        sig += float(np.square(groups).sum())
        codes[r0:r1] = q.reshape(len(groups), in_f)
        scales[r0:r1] = s16
        mins[r0:r1] = m16
    sqnr = sqnr_db(sig, err)
    return QuantizedTensor(name=name, shape=(out_f, in_f), bits=spec.bits, group_size=gs,
                           codes=codes, scales=scales, sqnr_db=sqnr, mins=mins)


def _quantize_ternary(name: str, w: np.ndarray, gs: int) -> QuantizedTensor:
    """TWN codes {-1, 0, +1} and fp16 scales >= 0 per group (see the module docstring)."""
    out_f, in_f = (int(n) for n in w.shape)
    ng = in_f // gs
    codes = np.empty((out_f, in_f), dtype=np.int8)
    scales = np.empty((out_f, ng), dtype=np.float16)
    err = sig = 0.0
    for r0, groups in _float64_groups(name, w, gs):
        r1 = r0 + len(groups)
        mag = np.abs(groups)
        delta = 0.7 * mag.mean(axis=2, keepdims=True)
        kept = mag > delta
        count = kept.sum(axis=2)
        alpha = np.where(kept, mag, 0.0).sum(axis=2) / np.maximum(count, 1)
        if (alpha > FP16_MAX).any():
            r, g = np.argwhere(alpha > FP16_MAX)[0]
            raise QuantizationError(
                f"tensor {name!r}: row {int(r) + r0} group {int(g)} has a ternary scale "
                f"{alpha[r, g]:.6g} beyond the fp16 maximum {FP16_MAX:g}")
        s16 = alpha.astype(np.float16)   # round to nearest: the TWN scale is a mean
        s16[(s16 == 0) & (alpha > 0)] = np.float16(2.0 ** -24)
        q = np.where(kept, np.sign(groups), 0.0)
        deq = q * s16.astype(np.float64)[:, :, None]
        err += float(np.square(groups - deq).sum())
        sig += float(np.square(groups).sum())
        codes[r0:r1] = q.reshape(len(groups), in_f).astype(np.int8)
        scales[r0:r1] = s16
    return QuantizedTensor(name=name, shape=(out_f, in_f), bits=2, group_size=gs, codes=codes,
                           scales=scales, sqnr_db=sqnr_db(sig, err), ternary=True)


def quantize_tensor(name: str, weights: np.ndarray, spec: QuantSpec) -> QuantizedTensor:
    """Quantize a 2-D weight matrix ([out_features, in_features]) to ``spec``.

    Raises QuantizationError for a non-2-D tensor, NaN/Inf weights (naming the first bad
    index), or a scale (or minimum) beyond fp16 range.
    """
    w = np.asarray(weights)
    out_f, in_f = check_matrix(name, w)
    bits = spec.bits
    qmax = 2 ** (bits - 1)
    gs = resolve_group_size(name, in_f, spec.group_size)
    if spec.asymmetric:
        return _quantize_asymmetric(name, w, spec, gs)
    if spec.ternary:
        return _quantize_ternary(name, w, gs)
    ng = in_f // gs
    codes = np.empty((out_f, in_f), dtype=np.int8)
    scales = np.empty((out_f, ng), dtype=np.float16)
    err = 0.0
    sig = 0.0
    if w.dtype == np.float32:
        rows = max(1, _BLOCK_ELEMENTS // in_f)
        for r0 in range(0, out_f, rows):
            e, g = _block_f32(name, w, r0, rows, bits, gs, codes, scales)
            err += e
            sig += g
    else:
        for r0, groups in _float64_groups(name, w, gs):
            r1 = r0 + len(groups)
            s16 = _group_scales(name, groups, bits, r0)
            s = s16.astype(np.float64)[:, :, None]
            safe = np.where(s == 0.0, 1.0, s)  # all-zero groups: 0/1 = 0 -> code 0
            q = np.clip(np.rint(groups / safe), -qmax, qmax - 1)
            deq = q * s
            err += float(np.square(groups - deq).sum())
            sig += float(np.square(groups).sum())
            codes[r0:r1] = q.reshape(len(groups), in_f).astype(np.int8)
            scales[r0:r1] = s16
    sqnr = sqnr_db(sig, err)
    return QuantizedTensor(name=name, shape=(out_f, in_f), bits=bits, group_size=gs,
                           codes=codes, scales=scales, sqnr_db=sqnr)


# Float32 fast path. It gives the same codes, scales and error sums as the float64 path
# above, bit for bit, at about a third of the memory traffic:
#  * max / min are exact in any precision, so the scales come from the same float64 extremes;
#  * w / s in float32 is within 2**-24 relative of the true quotient (|w / s| <= 2**(bits-1)),
#    so rint agrees with the float64 quotient's rint unless the float32 quotient lies within
#    _NEAR_HALF of a half-integer; those few elements are divided again in float64;
#  * code * s is exact in float32 (8-bit code x 11-bit fp16 scale), and w - code * s is exact
#    too (Sterbenz: w and code * s have the same sign and are within a factor 2 whenever the
#    code is not 0), so the float64 squares and their sums see the very same values.
_NEAR_HALF = np.float32(2.0 ** -12)


def _block_f32(name: str, w: np.ndarray, r0: int, rows: int, bits: int, gs: int,
               codes: np.ndarray, scales: np.ndarray) -> tuple[float, float]:
    """Quantize rows r0 .. r0+rows of float32 ``w`` into ``codes`` / ``scales``; returns the
    block's (error, signal) sums of squares exactly as the float64 path computes them."""
    qmax = 2 ** (bits - 1)
    block = np.ascontiguousarray(w[r0:r0 + rows])
    check_finite(name, block, w, r0)
    nr = block.shape[0]
    groups = block.reshape(nr, -1, gs)
    s16 = _scales_from_extremes(name, groups.max(axis=2).astype(np.float64),
                                groups.min(axis=2).astype(np.float64), bits, r0)
    s = s16.astype(np.float32)[:, :, None]
    safe = np.where(s == 0, np.float32(1), s)  # all-zero groups: 0/1 = 0 -> code 0
    quot = groups / safe
    q = np.rint(quot)
    np.subtract(quot, q, out=quot)                  # exact; |quot| <= 0.5
    np.abs(quot, out=quot)
    mask = quot > np.float32(0.5) - _NEAR_HALF
    if mask.any():  # redo these few in float64, as the float64 path would
        near = np.flatnonzero(mask)
        full = np.broadcast_to(safe, groups.shape).reshape(-1)
        q.reshape(-1)[near] = np.rint(groups.reshape(-1)[near].astype(np.float64)
                                      / full[near].astype(np.float64))
    np.clip(q, -qmax, qmax - 1, out=q)
    codes[r0:r0 + nr] = q.reshape(nr, -1).astype(np.int8)
    scales[r0:r0 + nr] = s16
    np.multiply(q, s, out=q)                        # dequantized, exact
    np.subtract(groups, q, out=q)                   # error, exact
    err = float(np.square(q, dtype=np.float64).sum())
    sig = float(np.square(groups, dtype=np.float64).sum())
    return err, sig
