"""GDSII stream records written directly as bytes (numpy-vectorised where records repeat).

Only what taalasc masks need: BOUNDARY rectangles, SREF, AREF and TEXT labels. Units: 1
database unit = 1 nm = 1 user unit (as gdstk with unit = precision = 1e-9). Timestamps are
fixed so the same layout always gives the same bytes.
"""

from __future__ import annotations

import struct

import numpy as np

TIMESTAMP = (2000, 1, 1, 0, 0, 0)
_RANGE = np.arange(64)


def record(rtype: int, dtype: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HBB", 4 + len(payload), rtype, dtype) + payload


def _ascii(rtype: int, text: str) -> bytes:
    data = text.encode("ascii")
    return record(rtype, 0x06, data + b"\0" * (len(data) % 2))


def real8(value: float) -> bytes:
    """GDSII excess-64 base-16 8-byte real."""
    if value == 0:
        return b"\0" * 8
    sign = 0x80 if value < 0 else 0
    value = abs(value)
    exponent = 64
    while value >= 1:
        value /= 16
        exponent += 1
    while value < 1 / 16:
        value *= 16
        exponent -= 1
    mantissa = int(round(value * (1 << 56)))
    if mantissa >= 1 << 56:
        mantissa >>= 4
        exponent += 1
    return bytes([sign | exponent]) + mantissa.to_bytes(7, "big")


def header(lib_name: str) -> bytes:
    stamp = struct.pack(">12h", *TIMESTAMP, *TIMESTAMP)
    return (record(0x00, 0x02, struct.pack(">h", 600)) + record(0x01, 0x02, stamp)
            + _ascii(0x02, lib_name) + record(0x03, 0x05, real8(1.0) + real8(1e-9)))


def footer() -> bytes:
    return record(0x04, 0x00)


def begin_cell(name: str) -> bytes:
    return record(0x05, 0x02, struct.pack(">12h", *TIMESTAMP, *TIMESTAMP)) + _ascii(0x06, name)


def end_cell() -> bytes:
    return record(0x07, 0x00)


def concat_rows(parts: list[np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]],
                count: int) -> np.ndarray:
    """Bytes of ``count`` records, record k being the concatenation of every part's row k.

    A part is a fixed-width uint8 array [count, L], or ``(table, lengths, index)``: row k is
    ``table[index[k], :lengths[index[k]]]`` (variable-length pieces such as cell names).
    """
    lens = np.zeros(count, np.int64)
    for part in parts:
        lens += part.shape[1] if isinstance(part, np.ndarray) else part[1][part[2]]
    out = np.empty(int(lens.sum()), np.uint8)
    cur = np.cumsum(lens) - lens
    for part in parts:
        if isinstance(part, np.ndarray):
            out[cur[:, None] + _RANGE[:part.shape[1]]] = part
            cur += part.shape[1]
            continue
        table, lengths, index = part
        plen = lengths[index]
        for length in np.unique(plen):
            sel = plen == length
            out[cur[sel][:, None] + _RANGE[:length]] = table[index[sel], :length]
        cur += plen
    return out


def _be32(values: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(values, dtype=">i4")
    return v.view(np.uint8).reshape(len(v), -1)


_BOUNDARY_HEAD = np.frombuffer(record(0x08, 0x00), np.uint8)
_ENDEL = np.frombuffer(record(0x11, 0x00), np.uint8)


def boundaries(rects: np.ndarray, layer: tuple[int, int]) -> bytes:
    """One closed 5-point BOUNDARY per rectangle [x0, y0, x1, y1]."""
    r = np.asarray(rects, np.int64).reshape(-1, 4)
    if not len(r):
        return b""
    head = _BOUNDARY_HEAD.tobytes() + record(0x0D, 0x02, struct.pack(">h", layer[0])) \
        + record(0x0E, 0x02, struct.pack(">h", layer[1])) + struct.pack(">HBB", 44, 0x10, 0x03)
    x0, y0, x1, y1 = r.T
    pts = np.stack([x0, y0, x1, y0, x1, y1, x0, y1, x0, y0], axis=1)
    n = len(r)
    rows = np.concatenate([np.broadcast_to(np.frombuffer(head, np.uint8), (n, len(head))),
                           _be32(pts.ravel()).reshape(n, 40),
                           np.broadcast_to(_ENDEL, (n, 4))], axis=1)
    return rows.tobytes()


def texts(labels, layer: tuple[int, int]) -> bytes:
    """One TEXT element per label ``(text, x, y)`` on ``layer`` (its datatype is the
    TEXTTYPE): no PRESENTATION, no transformation, so readers show the default."""
    if not labels:
        return b""
    head = record(0x0C, 0x00) + record(0x0D, 0x02, struct.pack(">h", layer[0])) \
        + record(0x16, 0x02, struct.pack(">h", layer[1]))
    return b"".join(head + record(0x10, 0x03, struct.pack(">2i", x, y)) + _ascii(0x19, text)
                    + record(0x11, 0x00) for text, x, y in labels)


def name_table(names: list[str], rtype_head: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per-name byte rows ``rtype_head + SNAME(name)`` padded into a table, and their lengths."""
    rows = [rtype_head + _ascii(0x12, n) for n in names]
    width = max(len(r) for r in rows)
    table = np.zeros((len(rows), width), np.uint8)
    for k, row in enumerate(rows):
        table[k, :len(row)] = np.frombuffer(row, np.uint8)
    return table, np.array([len(r) for r in rows], np.int64)


SREF_HEAD = record(0x0A, 0x00)
_XY1 = np.frombuffer(struct.pack(">HBB", 12, 0x10, 0x03), np.uint8)


def srefs(table: np.ndarray, lengths: np.ndarray, index: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """SREF records: cell name k = ``index`` into a :func:`name_table`, origin ``xy`` [n, 2]."""
    n = len(index)
    return concat_rows([(table, lengths, np.asarray(index)),
                        np.broadcast_to(_XY1, (n, 4)), _be32(np.asarray(xy).ravel()).reshape(n, 8),
                        np.broadcast_to(_ENDEL, (n, 4))], n)


def sref(name: str, x: int, y: int) -> bytes:
    return (SREF_HEAD + _ascii(0x12, name) + record(0x10, 0x03, struct.pack(">2i", x, y))
            + record(0x11, 0x00))


def aref(name: str, x: int, y: int, columns: int, rows: int, dx: int, dy: int) -> bytes:
    """Array reference: columns x rows placements at pitch (dx, dy)."""
    xy = struct.pack(">6i", x, y, x + columns * dx, y, x, y + rows * dy)
    return (record(0x0B, 0x00) + _ascii(0x12, name) + record(0x13, 0x02,
            struct.pack(">2h", columns, rows)) + record(0x10, 0x03, xy) + record(0x11, 0x00))
