"""A tiny dependency-free PNG writer: 8-bit RGB, filter 0, zlib level 9 (deterministic bytes)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from taalasc.errors import OutputError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG file bytes of an RGB uint8 image of shape [height, width, 3] (row 0 at the top)."""
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 array [height, width, 3], "
                         f"not {img.dtype} {img.shape}")
    height, width = int(img.shape[0]), int(img.shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1 x 1 pixels, not {width} x {height}")
    # Each scanline: filter byte 0 (None), then the raw RGB bytes.
    raw = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    raw[:, 1:] = np.ascontiguousarray(img).reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + _chunk(b"IEND", b""))


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write ``rgb`` as a PNG file; OutputError when the file cannot be written."""
    data = png_bytes(rgb)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write PNG ({exc.strerror or exc})") from None
