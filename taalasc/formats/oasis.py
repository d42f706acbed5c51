"""OASIS records written directly as bytes (streamable: no name tables, names defined by
CELLNAME records with explicit reference numbers before their first use, or given inline:
``cell_named``, a placement by name and ``text`` carry their strings, as the merge's base die
does so that its cells need no reference numbers).

Units: 1000 database units per micron (1 dbu = 1 nm). Cell bodies may be wrapped in a CBLOCK
(raw deflate, fixed level) so the same content always gives the same bytes.
"""

from __future__ import annotations

import zlib

import numpy as np

MAGIC = b"%SEMI-OASIS\r\n"
LEVEL = 1  # tile bodies are ~2 kB of near-identical records: level 1 is 3x faster, 3% larger


def uint(v: int) -> bytes:
    if v < 0:
        raise ValueError(f"OASIS unsigned integer must be >= 0, not {v}")
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sint(v: int) -> bytes:
    return uint((-v << 1) | 1 if v < 0 else v << 1)


def nstring(text: str) -> bytes:
    data = text.encode("ascii")
    return uint(len(data)) + data


def uvarints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised unsigned varints: (table [n, 5] uint8, lengths [n]) for values < 2**35."""
    v = np.asarray(values, np.int64)
    if (v < 0).any() or (v >= 1 << 35).any():
        raise ValueError("OASIS varint out of range")
    table = np.empty((len(v), 5), np.uint8)
    lengths = np.ones(len(v), np.int64)
    for k in range(5):
        part = (v >> (7 * k)) & 0x7F
        more = (v >> (7 * (k + 1))) != 0
        table[:, k] = part | (more * 0x80)
        lengths += more
    return table, lengths


def svarints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, np.int64)
    return uvarints(np.where(v < 0, ((-v) << 1) | 1, v << 1))


def start() -> bytes:
    # version "1.0", unit 1000 dbu/um (real type 0), offset-flag 0 with all 6 tables absent.
    return MAGIC + b"\x01" + nstring("1.0") + b"\x00" + uint(1000) + b"\x00" + b"\x00" * 12


def end() -> bytes:
    # END must be 256 bytes: id, padding b-string (length 252 -> 2-byte varint), scheme 0.
    return b"\x02" + uint(252) + b"\0" * 252 + b"\x00"


def cellname(name: str, refnum: int) -> bytes:
    return b"\x04" + nstring(name) + uint(refnum)


def cell(refnum: int) -> bytes:
    return b"\x0d" + uint(refnum)


XY_RELATIVE = b"\x10"


def cblock(body: bytes) -> bytes:
    """Wrap records in a CBLOCK (raw deflate) when that is shorter."""
    comp = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    data = comp.compress(body) + comp.flush()
    wrapped = b"\x22\x00" + uint(len(body)) + uint(len(data)) + data
    return wrapped if len(wrapped) < len(body) else body


def rectangles(rects: np.ndarray, layer: tuple[int, int]) -> bytes:
    """RECTANGLE records (absolute xy mode). The first names layer, datatype, width and
    height; later ones leave out what equals the modal value (same layer; same w / h as the
    record before), so a cell of equal vias costs ~7 bytes per via."""
    from taalasc.formats.gdsii import concat_rows

    r = np.asarray(rects, np.int64).reshape(-1, 4)
    n = len(r)
    if not n:
        return b""
    w, h = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    new_w = np.ones(n, bool)
    new_h = np.ones(n, bool)
    new_w[1:] = w[1:] != w[:-1]
    new_h[1:] = h[1:] != h[:-1]
    head = np.empty((n, 2), np.uint8)
    head[:, 0] = 0x14
    head[:, 1] = 0x18 | new_w * 0x40 | new_h * 0x20  # X, Y always; W, H when they change
    head[0, 1] |= 0x03                                  # layer and datatype on the first
    lay = np.frombuffer(uint(layer[0]) + uint(layer[1]), np.uint8)
    lay_t = np.zeros((2, len(lay)), np.uint8)
    lay_t[0] = lay                                     # row 0: layer bytes, row 1: nothing
    idx = np.arange(n)
    first = np.minimum(idx, 1)
    wt, wl = uvarints(w)
    ht, hl = uvarints(h)
    parts = [head, (lay_t, np.array([len(lay), 0]), first), (wt, wl * new_w, idx),
             (ht, hl * new_h, idx)]
    for table, lengths in (svarints(r[:, 0]), svarints(r[:, 1])):
        parts.append((table, lengths, idx))
    return concat_rows(parts, n).tobytes()


def repetition(columns: int, rows: int, dx: int, dy: int) -> bytes:
    """A grid repetition (types 1-3; ``b""`` for 1 x 1). Pitches must be >= 0."""
    if dx < 0 or dy < 0:
        raise ValueError(f"OASIS grid repetition pitch must be >= 0, not ({dx}, {dy})")
    if columns > 1 and rows > 1:
        return b"\x01" + uint(columns - 2) + uint(rows - 2) + uint(dx) + uint(dy)
    if columns > 1:
        return b"\x02" + uint(columns - 2) + uint(dx)
    if rows > 1:
        return b"\x03" + uint(rows - 2) + uint(dy)
    return b""


def texts(labels, layer: tuple[int, int]) -> bytes:
    """One TEXT record (:func:`text`) per label ``(text, x, y)`` on ``layer`` (its datatype
    is the texttype), in the cell's xy mode: absolute unless an XYRELATIVE record came
    before."""
    return b"".join(text(string, x, y, layer) for string, x, y in labels)


def placement(cell: int | str, x: int, y: int, columns: int = 1, rows: int = 1, dx: int = 0,
              dy: int = 0, *, flip: bool = False, quarter_turns: int = 0) -> bytes:
    """PLACEMENT of a cell by reference number or by name (absolute mode), with a grid
    repetition if > 1 x 1; ``flip`` mirrors about the x axis before rotating by
    ``quarter_turns`` x 90 degrees (GDSII's STRANS order)."""
    rep = repetition(columns, rows, dx, dy)
    by_number = isinstance(cell, int)
    info = (0xF0 if by_number else 0xB0) | (0x08 if rep else 0) | (quarter_turns % 4) << 1 \
        | (0x01 if flip else 0)
    return (b"\x11" + bytes([info]) + (uint(cell) if by_number else nstring(cell))
            + sint(x) + sint(y) + rep)


def cell_named(name: str) -> bytes:
    """CELL record naming its cell directly (no CELLNAME record, no reference number)."""
    return b"\x0e" + nstring(name)


def _gdeltas(points: np.ndarray) -> bytes:
    """Point list type 4 (general): g-deltas in form 2 from each point to the next."""
    d = np.diff(np.asarray(points, np.int64).reshape(-1, 2), axis=0)
    return b"\x04" + uint(len(d)) + b"".join(
        uint(abs(int(x)) << 2 | (2 if x < 0 else 0) | 1) + sint(int(y)) for x, y in d)


def polygon(points: np.ndarray, layer: tuple[int, int]) -> bytes:
    """POLYGON record (absolute mode): the first point, then g-deltas (closed implicitly)."""
    p = np.asarray(points, np.int64).reshape(-1, 2)
    if len(p) < 3:
        raise ValueError(f"an OASIS polygon needs 3 points or more, not {len(p)}")
    return (b"\x15\x3b" + uint(layer[0]) + uint(layer[1]) + _gdeltas(p)
            + sint(int(p[0, 0])) + sint(int(p[0, 1])))


def path(points: np.ndarray, half_width: int, extensions: tuple[int, int],
         layer: tuple[int, int]) -> bytes:
    """PATH record (absolute mode) with explicit start and end extensions."""
    p = np.asarray(points, np.int64).reshape(-1, 2)
    if len(p) < 2:
        raise ValueError(f"an OASIS path needs 2 points or more, not {len(p)}")
    return (b"\x16\xfb" + uint(layer[0]) + uint(layer[1]) + uint(half_width)
            + b"\x0f" + sint(extensions[0]) + sint(extensions[1])   # SS = EE = 3: explicit
            + _gdeltas(p) + sint(int(p[0, 0])) + sint(int(p[0, 1])))


def text(string: str, x: int, y: int, layer: tuple[int, int]) -> bytes:
    """TEXT record with its string inline (no TEXTSTRING record, no reference number)."""
    return (b"\x13\x5b" + nstring(string) + uint(layer[0]) + uint(layer[1])
            + sint(x) + sint(y))
