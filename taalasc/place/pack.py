"""Bits of one segment, in site order, and back (the layout is documented on Segment).

pack_segment gives what the emitter draws (one via per site: 1 high, 0 low);
unpack_segment is what extraction uses to turn sites read from the mask back into values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taalasc.errors import PlacementError
from taalasc.place.plan import FP16_BITS, Segment


def _source_block(segment: Segment, source: Any) -> np.ndarray:
    """The segment's rectangle of the source, as unsigned integers of ``bits`` bits."""
    (r0, r1), (c0, c1) = segment.rows, segment.cols
    name = segment.tensor
    if segment.kind in ("codes", "scales"):
        if getattr(source, "name", name) != name:
            raise PlacementError(f"segment of tensor {name!r} was given tensor {source.name!r}")
        arr = source.codes if segment.kind == "codes" else source.scales
    elif segment.kind == "vector":
        arr = np.asarray(source).reshape(1, -1)
    else:
        raise PlacementError(f"tensor {name!r}: segment kind must be one of codes, scales, "
                             f"vector, not {segment.kind!r}")
    if not (0 <= r0 < r1 <= arr.shape[0] and 0 <= c0 < c1 <= arr.shape[1]):
        raise PlacementError(f"tensor {name!r}: {segment.kind} segment rows {segment.rows} "
                             f"cols {segment.cols} lie outside the array of shape {arr.shape}")
    block = arr[r0:r1, c0:c1]
    if segment.kind == "codes":
        b = segment.bits
        lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
        wide = block.astype(np.int64)
        if wide.size and (wide.min() < lo or wide.max() > hi):
            raise PlacementError(f"tensor {name!r}: codes must lie in [{lo}, {hi}] for "
                                 f"{b} bits, not [{wide.min()}, {wide.max()}]")
        return (wide & ((1 << b) - 1)).astype(np.uint32)
    if segment.bits != FP16_BITS:
        raise PlacementError(f"tensor {name!r}: {segment.kind} segments must be 16 bits wide, "
                             f"not {segment.bits}")
    with np.errstate(over="ignore"):  # overflow is reported below, as a PlacementError
        half = block.astype(np.float16)
    if not np.isfinite(half).all() and np.isfinite(block.astype(np.float64)).all():
        raise PlacementError(f"tensor {name!r}: {segment.kind} values exceed the fp16 range "
                             "(|x| must be <= 65504)")
    return half.view(np.uint16).astype(np.uint32)


def pack_segment(segment: Segment, source: Any) -> np.ndarray:
    """uint8 0/1 array of length ``segment.used_sites``: bit k of element e at e*bits + k.

    ``source`` is a QuantizedTensor for "codes"/"scales" and a 1-D array for "vector".
    """
    values = _source_block(segment, source).reshape(-1)
    shifts = np.arange(segment.bits, dtype=np.uint32)
    return ((values[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)


def unpack_segment(segment: Segment, bits: np.ndarray) -> np.ndarray:
    """Inverse of pack_segment: int8 codes [rows, cols] for "codes", float16 otherwise."""
    flat = np.asarray(bits).reshape(-1)
    if flat.size != segment.used_sites:
        raise PlacementError(f"tensor {segment.tensor!r}: segment needs {segment.used_sites} "
                             f"bits, not {flat.size}")
    if flat.size and flat.max(initial=0) > 1:
        raise PlacementError(f"tensor {segment.tensor!r}: site values must be 0 or 1")
    b = segment.bits
    weights = (np.uint32(1) << np.arange(b, dtype=np.uint32))
    values = (flat.reshape(-1, b).astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32)
    if segment.kind == "codes":
        signed = values.astype(np.int64) - ((values >> (b - 1)) & 1).astype(np.int64) * (1 << b)
        return signed.astype(np.int8).reshape(segment.shape)
    return values.astype(np.uint16).view(np.float16).reshape(segment.shape)
