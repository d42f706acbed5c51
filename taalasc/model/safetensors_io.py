"""Our own safetensors reader: a strict header parser and a one-tensor-at-a-time reader.

We do not lean on the ``safetensors`` package for validation: a checkpoint is untrusted input,
and we want every problem reported as one ModelError line that names the file and the tensor.

Format: 8 bytes little-endian u64 ``N``; ``N`` bytes of UTF-8 JSON (an object mapping tensor
name -> {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional ``__metadata__``
str->str map); then the data area. Offsets are relative to the start of the data area.

Rules (they follow huggingface/safetensors ``Metadata::validate`` and ``read_metadata``):
  * N <= 100_000_000 and 8 + N <= file size (checked before anything is allocated);
  * tensors sorted by offsets must tile the data area exactly: no hole, no overlap, no
    trailing bytes after the last tensor (the reference rejects these as InvalidOffset /
    MetadataIncompleteBuffer, and so do we);
  * ``end - begin == prod(shape) * itemsize``.
Stricter than the reference, on purpose: duplicate JSON keys, unknown keys inside a tensor
entry, booleans/floats where integers belong, and NaN/Infinity literals are all errors.

Dtypes: every dtype of the reference is *listed*; ``read_tensor`` converts to float32 only
when that is exact or a plain rounding (F32, F16, BF16, F64, I8, U8, I16, U16, BOOL). I32,
U32, I64, U64 and the F8 types are refused by ``read_tensor`` (they are not weights in the
checkpoints we target and do not round-trip through float32); ``read_tensor_raw`` returns any
dtype as stored. Integer buffers that real checkpoints carry (BERT's I64 position_ids) are
recognised by ``checkpoint.buffer_reason`` and never reach ``read_tensor``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from taalasc.errors import ModelError
from taalasc.inputfile import no_duplicate_keys

MAX_HEADER_BYTES = 100_000_000  # same cap as the reference implementation

# name -> (bytes per element, little-endian numpy dtype for the stored values)
DTYPES: dict[str, tuple[int, np.dtype]] = {
    "BOOL": (1, np.dtype(np.bool_)),
    "U8": (1, np.dtype(np.uint8)),
    "I8": (1, np.dtype(np.int8)),
    "F8_E5M2": (1, np.dtype(ml_dtypes.float8_e5m2)),
    "F8_E4M3": (1, np.dtype(ml_dtypes.float8_e4m3fn)),
    "I16": (2, np.dtype("<i2")),
    "U16": (2, np.dtype("<u2")),
    "F16": (2, np.dtype("<f2")),
    "BF16": (2, np.dtype(ml_dtypes.bfloat16)),
    "I32": (4, np.dtype("<i4")),
    "U32": (4, np.dtype("<u4")),
    "F32": (4, np.dtype("<f4")),
    "F64": (8, np.dtype("<f8")),
    "I64": (8, np.dtype("<i8")),
    "U64": (8, np.dtype("<u8")),
}
# dtypes whose conversion to float32 is exact (or, for F64, a plain round to nearest)
FLOAT32_READABLE = ("F32", "F16", "BF16", "F64", "I8", "U8", "I16", "U16", "BOOL")
# integer dtypes: weights only when float32-readable; I32..U64 only as known buffers (such as
# BERT's I64 position_ids), which open_checkpoint leaves off the chip (see checkpoint.BUFFERS)
INTEGER_DTYPES = ("I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64")
_ENTRY_KEYS = ("dtype", "shape", "data_offsets")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: enough to estimate with, and to read it alone later."""

    name: str
    dtype: str  # "F32" | "F16" | "BF16" | ... (a key of DTYPES)
    shape: tuple[int, ...]
    file: str  # path of the .safetensors file holding the data
    offset: int  # absolute byte offset of the first data byte in ``file``
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    """A parsed, validated safetensors header. ``tensors`` is in file-offset order."""

    file: str
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    data_start: int  # 8 + N
    file_size: int


def read_header(path: str | Path) -> Header:
    """Parse and validate the header of one .safetensors file; never reads tensor data."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return read_header_from(f, size, source)
    except OSError as exc:
        raise ModelError(f"{source}: cannot read: {exc.strerror or exc}") from None


def read_header_from(f: IO[bytes], file_size: int, source: str) -> Header:
    """Parse a header from an open binary file of ``file_size`` bytes (``source`` names it).

    Allocates at most min(N, file_size) bytes: N is checked against the cap and the real
    file size before the header is read.
    """
    if file_size < 8:
        raise ModelError(f"{source}: not a safetensors file: {file_size} bytes is shorter "
                         "than the 8-byte header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES:
        raise ModelError(f"{source}: header length must be at most {MAX_HEADER_BYTES} bytes, "
                         f"not {n}")
    if 8 + n > file_size:
        raise ModelError(f"{source}: header length {n} runs past the end of the "
                         f"{file_size}-byte file (truncated or not safetensors)")
    raw = f.read(n)
    if len(raw) != n:
        raise ModelError(f"{source}: file ended while reading the {n}-byte header")
    return parse_header_json(raw, file_size, source)


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_header_json(raw: bytes, file_size: int, source: str) -> Header:
    """Validate the JSON header bytes of a file of ``file_size`` bytes."""
    n = len(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{source}: header is not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=no_duplicate_keys,
                         parse_constant=_no_constants)
    except RecursionError:
        raise ModelError(f"{source}: header JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError, so is a duplicate key
        raise ModelError(f"{source}: header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{source}: header must be a JSON object, not {type(doc).__name__}")

    metadata = doc.pop("__metadata__", None)
    if metadata is None:  # absent or null: the reference reads both as "no metadata"
        metadata = {}
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values()):
        raise ModelError(f"{source}: __metadata__ must be a map of strings to strings, "
                         f"not {_short(metadata)}")

    data_start = 8 + n
    data_len = file_size - data_start
    spans: list[tuple[int, int, str]] = []
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, entry in doc.items():
        where = f"{source}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise ModelError(f"{where}: entry must be an object, not {_short(entry)}")
        missing = [k for k in _ENTRY_KEYS if k not in entry]
        if missing:
            raise ModelError(f"{where}: entry is missing {', '.join(missing)}")
        extra = sorted(k for k in entry if k not in _ENTRY_KEYS)
        if extra:
            raise ModelError(f"{where}: unknown key {extra[0]!r} (expected dtype, shape, "
                             "data_offsets)")
        dtype = entry["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ModelError(f"{where}: dtype must be one of {', '.join(DTYPES)}, "
                             f"not {_short(dtype)}")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise ModelError(f"{where}: shape must be a list of integers, not {_short(shape)}")
        if any(d < 0 for d in shape):
            raise ModelError(f"{where}: shape must not have negative dimensions, not {shape}")
        offsets = entry["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) for o in offsets)):
            raise ModelError(f"{where}: data_offsets must be [begin, end] integers, "
                             f"not {_short(offsets)}")
        begin, end = offsets
        if begin < 0 or end < begin:
            raise ModelError(f"{where}: data_offsets must satisfy 0 <= begin <= end, "
                             f"not {offsets}")
        numel = 1
        for d in shape:
            numel *= d
        expected = numel * DTYPES[dtype][0]
        if end - begin != expected:
            raise ModelError(f"{where}: data_offsets span {end - begin} bytes, but "
                             f"{dtype} {shape} needs {expected}")
        if end > data_len:
            raise ModelError(f"{where}: data_offsets {offsets} run past the end of the "
                             f"{data_len}-byte data area (file truncated?)")
        spans.append((begin, end, name))
        entries[name] = (dtype, tuple(shape), begin, end)

    # The data area must be tiled exactly, as the reference demands: sorted by offsets,
    # each tensor starts where the previous one ended, the last one ends at end of file.
    spans.sort()
    cursor = 0
    previous = None
    for begin, end, name in spans:
        if begin < cursor:
            raise ModelError(f"{source}: tensor {name!r} overlaps tensor {previous!r} "
                             f"(bytes {begin}..{cursor} of the data area)")
        if begin > cursor:
            raise ModelError(f"{source}: tensor {name!r} leaves a hole of {begin - cursor} "
                             f"bytes before it in the data area (at byte {cursor})")
        cursor = end
        previous = name
    if cursor != data_len:
        raise ModelError(f"{source}: {data_len - cursor} trailing bytes after the last "
                         "tensor (the data area must end with the last tensor)")

    tensors = {
        name: TensorInfo(name=name, dtype=entries[name][0], shape=entries[name][1],
                         file=source, offset=data_start + entries[name][2],
                         nbytes=entries[name][3] - entries[name][2])
        for _, _, name in spans
    }
    return Header(file=source, metadata=dict(metadata), tensors=tensors,
                  data_start=data_start, file_size=file_size)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_tensor_raw(info: TensorInfo) -> np.ndarray:
    """Read one tensor in its stored dtype (a fresh C-contiguous array; BF16 as ml_dtypes).

    Reads exactly ``info.nbytes`` bytes at ``info.offset`` and nothing else. We use
    seek + readinto rather than a memory map so that a file that shrank since its header
    was parsed gives a short read (an error) instead of a SIGBUS.
    """
    dtype = DTYPES[info.dtype][1]
    out = np.empty(info.shape, dtype=dtype)
    if info.nbytes == 0:
        return out
    buf = out.reshape(-1).view(np.uint8)
    try:
        with open(info.file, "rb") as f:
            f.seek(info.offset)
            got = f.readinto(memoryview(buf))
    except OSError as exc:
        raise ModelError(f"{info.file}: cannot read tensor {info.name!r}: "
                         f"{exc.strerror or exc}") from None
    if got != info.nbytes:
        raise ModelError(f"{info.file}: tensor {info.name!r} is truncated: read {got} of "
                         f"{info.nbytes} bytes")
    if info.dtype == "BOOL" and np.any(buf > 1):
        raise ModelError(f"{info.file}: tensor {info.name!r} is BOOL but holds bytes "
                         "other than 0 and 1")
    return out


# Elements converted per read: the float32 result plus this much, not the stored copy and a
# widened temporary beside it (an 8 B model's lm_head: 1 GB of BF16 read as 2.1 GB of float32
# peaked at 5.2 GB that way).
_READ_CHUNK = 1 << 22


def read_tensor(info: TensorInfo) -> np.ndarray:
    """Read one tensor as a float32 C-contiguous copy (see module docstring for dtypes),
    converted chunk by chunk as it is read."""
    if info.dtype not in FLOAT32_READABLE:
        raise ModelError(f"{info.file}: tensor {info.name!r} has dtype {info.dtype}; weights "
                         f"must be one of {', '.join(FLOAT32_READABLE)}")
    if info.dtype == "BOOL" or info.numel <= _READ_CHUNK:
        raw = read_tensor_raw(info)
        return np.ascontiguousarray(_as_float32(raw, info.dtype).reshape(info.shape))
    dtype = DTYPES[info.dtype][1]
    out = np.empty(info.numel, np.float32)
    buf = np.empty(_READ_CHUNK, dtype=dtype)
    try:
        with open(info.file, "rb") as f:
            f.seek(info.offset)
            for start in range(0, info.numel, _READ_CHUNK):
                n = min(_READ_CHUNK, info.numel - start)
                want = n * buf.itemsize
                got = f.readinto(memoryview(buf[:n].view(np.uint8)))
                if got != want:
                    raise ModelError(f"{info.file}: tensor {info.name!r} is truncated: read "
                                     f"{start * buf.itemsize + got} of {info.nbytes} bytes")
                out[start:start + n] = _as_float32(buf[:n], info.dtype)
    except OSError as exc:
        raise ModelError(f"{info.file}: cannot read tensor {info.name!r}: "
                         f"{exc.strerror or exc}") from None
    return out.reshape(info.shape)


def _as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":   # exact: a bfloat16 is the top half of a float32
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)
