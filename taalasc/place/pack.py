"""Digits of one segment, in site order, and back (the layout is documented on Segment).

pack_segment gives what the emitter draws (a digit per site; for tie-high-low a bit: 1 on
the high strap, 0 on the low one); unpack_segment is what extraction uses to turn the sites
read from the mask back into values.
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
    if segment.kind in ("codes", "scales", "mins"):
        if getattr(source, "name", name) != name:
            raise PlacementError(f"segment of tensor {name!r} was given tensor {source.name!r}")
        arr = getattr(source, segment.kind)
        if arr is None:
            raise PlacementError(f"tensor {name!r}: a mins segment needs asymmetric codes")
    elif segment.kind == "vector":
        arr = np.asarray(source).reshape(1, -1)
    else:
        raise PlacementError(f"tensor {name!r}: segment kind must be one of codes, scales, "
                             f"mins, vector, not {segment.kind!r}")
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


def _source_bytes(segment: Segment, source: Any) -> np.ndarray | None:
    """The segment's values as flat little-endian bytes (1 per code, 2 per fp16), for
    the common cases (int8 codes, 16-bit scales / vectors); None to take the general path.
    Checks and error messages are those of :func:`_source_block`."""
    (r0, r1), (c0, c1) = segment.rows, segment.cols
    if segment.kind == "codes":
        arr = getattr(source, "codes", None)
        if getattr(source, "name", segment.tensor) != segment.tensor or arr is None \
                or arr.dtype != np.int8 or not 0 < segment.bits <= 8:
            return None
    elif segment.kind in ("scales", "mins") and segment.bits == FP16_BITS:
        arr = getattr(source, segment.kind, None)
        if getattr(source, "name", segment.tensor) != segment.tensor or arr is None \
                or arr.dtype != np.float16:
            return None
    elif segment.kind == "vector" and segment.bits == FP16_BITS:
        arr = np.asarray(source)
        if arr.dtype != np.float16:
            return None
        arr = arr.reshape(1, -1)
    else:
        return None
    if not (0 <= r0 < r1 <= arr.shape[0] and 0 <= c0 < c1 <= arr.shape[1]):
        return None  # _source_block raises the error
    block = arr[r0:r1, c0:c1]
    if segment.kind == "codes":
        b = segment.bits
        lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
        if b < 8 and (block.min() < lo or block.max() > hi):
            return None  # _source_block raises the error
        return block.view(np.uint8).reshape(-1)
    return np.ascontiguousarray(block).view(np.uint8).reshape(-1) if _LITTLE else None


_LITTLE = np.little_endian
# _BIT_ROWS[b][v]: the low b bits of byte v, least significant first (a code's sites).
_BIT_ROWS = {b: np.ascontiguousarray(np.unpackbits(np.arange(256, dtype=np.uint8)[:, None],
                                                   axis=1, bitorder="little")[:, :b])
             for b in range(1, 8)}


def pack_segment(segment: Segment, source: Any) -> np.ndarray:
    """uint8 digits, ``segment.used_sites`` of them: digit k of element e (its bits
    k*d .. k*d + d - 1, d = segment.digit_bits) at site e * sites_per_element + k; with
    d = 1 the element's bit k.

    ``source`` is a QuantizedTensor for "codes"/"scales"/"mins" and a 1-D array for "vector".
    """
    d = segment.digit_bits
    if d != 1:
        values = _source_block(segment, source).reshape(-1)
        shifts = np.arange(segment.sites_per_element, dtype=np.uint32) * np.uint32(d)
        return ((values[:, None] >> shifts) & np.uint32((1 << d) - 1)).astype(np.uint8).reshape(-1)
    data = _source_bytes(segment, source)
    if data is not None:  # whole bytes (8 or 16 bits): one unpackbits; else a table look-up
        if segment.bits in (8, FP16_BITS):
            return np.unpackbits(data, bitorder="little")
        return np.take(_BIT_ROWS[segment.bits], data, axis=0).reshape(-1)
    values = _source_block(segment, source).reshape(-1)
    shifts = np.arange(segment.bits, dtype=np.uint32)
    return ((values[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)


def unpack_segment(segment: Segment, digits: np.ndarray) -> np.ndarray:
    """Inverse of pack_segment: int8 codes [rows, cols] for "codes", float16 otherwise."""
    flat = np.asarray(digits).reshape(-1)
    if flat.size != segment.used_sites:
        raise PlacementError(f"tensor {segment.tensor!r}: segment needs {segment.used_sites} "
                             f"sites, not {flat.size}")
    d, b = segment.digit_bits, segment.bits
    if flat.size and flat.max(initial=0) >= 1 << d:
        raise PlacementError(f"tensor {segment.tensor!r}: site digits must be below {1 << d}")
    # digit k of each element shifted into place, one column at a time (numpy's sum over a
    # last axis of 1 to 16 costs more than the decode of the whole tile)
    block = flat.reshape(-1, segment.sites_per_element)
    values = np.zeros(len(block), np.uint32)
    for k in range(segment.sites_per_element):
        values |= block[:, k].astype(np.uint32) << np.uint32(d * k)
    if values.size and values.max() >> b:   # a top digit wider than the value's last bits
        raise PlacementError(f"tensor {segment.tensor!r}: element "
                             f"{int(np.flatnonzero(values >> b)[0])} of a {segment.kind} "
                             f"segment has digits beyond its {b} bits")
    if segment.kind == "codes":
        signed = values.astype(np.int64) - ((values >> (b - 1)) & 1).astype(np.int64) * (1 << b)
        return signed.astype(np.int8).reshape(segment.shape)
    return values.astype(np.uint16).view(np.float16).reshape(segment.shape)
