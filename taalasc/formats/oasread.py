"""Walk an OASIS file record by record without holding it: what a merge needs to copy one.

``copy_records`` copies every record between a file's START and END records to another
file, block by block, and returns what the cells are: the CELLNAME reference numbers, the
cells defined and the cells placed (inside CBLOCKs too), so the caller can find the top cell
by structure and refuse clashing names. Geometry is skipped, not decoded: memory holds one
block, one CBLOCK and the cell names. The file is untrusted: a malformed record, a record
type OASIS does not have, or a CBLOCK that does not inflate to its declared size is one
MaskError line.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from taalasc.errors import MaskError

_BLOCK = 1 << 20
MAX_RECORD_BYTES = 1 << 24   # one record or inflated CBLOCK; ours are a few kB (a tile body)
_END_BYTES = 256             # the END record fills exactly the last 256 bytes
MAGIC = b"%SEMI-OASIS\r\n"


class Cursor:
    """OASIS's encoding over bytes: unsigned and signed varints, strings, reals. Reading past
    the end raises IndexError (the caller decides: more bytes to come, or a cut record)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self) -> int:
        data, pos = self.data, self.pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            if byte & 0x7F:   # redundant zero bytes may pad a varint (KLayout pads END so)
                if shift > 63:
                    raise ValueError("an OASIS integer is longer than 64 bits")
                value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value >> 64:
                    raise ValueError("an OASIS integer is longer than 64 bits")
                self.pos = pos
                return value
            shift += 7

    def sint(self) -> int:
        v = self.uint()
        return -(v >> 1) if v & 1 else v >> 1

    def skip(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError(n)
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def string(self) -> bytes:
        return self.skip(self.uint())

    def real(self, kind: int | None = None) -> float:
        """A real (its type first, unless ``kind`` is given: property values carry it)."""
        kind = self.uint() if kind is None else kind
        if kind in (0, 1):
            value = float(self.uint())
        elif kind in (2, 3):
            value = 1.0 / max(self.uint(), 1)
        elif kind in (4, 5):
            value = self.uint() / max(self.uint(), 1)
        elif kind == 6:
            value = struct.unpack("<f", self.skip(4))[0]
        elif kind == 7:
            value = struct.unpack("<d", self.skip(8))[0]
        else:
            raise ValueError(f"unknown OASIS real type {kind}")
        return -value if kind in (1, 3, 5) else value


def read_start(head: bytes) -> tuple[float, bool, int]:
    """The START record after the magic at the start of ``head``: (database units per
    micron, whether the table offsets are in the END record, the offset just past START).
    ValueError/IndexError when it is not one."""
    c = Cursor(head, len(MAGIC))
    if c.uint() != 1 or c.string() != b"1.0":
        raise ValueError("no OASIS 1.0 START record")
    unit = c.real()
    tables_in_end = c.uint() == 1
    if not tables_in_end:
        for _ in range(12):
            c.uint()
    return unit, tables_in_end, c.pos


@dataclass
class OasisCells:
    """The cells of an OASIS file: keys are reference numbers (int) or names (str)."""
    unit_per_um: float = 0.0                               # database units per micron
    names: dict[int, str] = field(default_factory=dict)   # CELLNAME reference number -> name
    defined: dict[int | str, None] = field(default_factory=dict)   # in file order
    placed: set[int | str] = field(default_factory=set)
    implicit: int = 0                                      # next implicit reference number

    def name(self, key: int | str, where: Path) -> str:
        if isinstance(key, str):
            return key
        if key not in self.names:
            raise MaskError(f"{where}: cell reference number {key} has no CELLNAME record")
        return self.names[key]

    def tops(self, where: Path) -> list[int | str]:
        """Cells defined and never placed, by the key they were defined with."""
        placed = {self.name(k, where) for k in self.placed}
        return [k for k in self.defined if self.name(k, where) not in placed]


def copy_records(path: Path, out: BinaryIO) -> OasisCells:
    """Copy the records between START and END of the (checked: safe_read.check_oas) OASIS
    file ``path`` to ``out``, block by block; return its cells."""
    size = Path(path).stat().st_size
    cells = OasisCells()

    def bad(what: str) -> MaskError:
        return MaskError(f"{path}: cannot read mask file ({what})")

    with open(path, "rb") as f:
        head = f.read(4096)
        try:
            cells.unit_per_um, _, body_start = read_start(head)
        except (ValueError, IndexError):
            raise bad("no OASIS START record") from None
        f.seek(body_start)
        offset, left = body_start, size - _END_BYTES - body_start   # offset: of buf[0]
        buf = b""
        while True:
            c = Cursor(buf)
            start = 0
            try:
                while c.pos < len(buf):
                    start = c.pos
                    _record(c, cells, path)
                start = c.pos
            except IndexError:   # a record cut by the block's end: read on
                pass
            except (ValueError, struct.error) as exc:
                raise bad(f"{exc}, in the record at byte {offset + start:,}") from None
            out.write(buf[:start])
            buf, offset = buf[start:], offset + start
            if left <= 0:
                if buf:
                    raise bad("the last record runs into the END record: truncated?")
                return cells
            if len(buf) > MAX_RECORD_BYTES:
                raise bad(f"a record longer than {MAX_RECORD_BYTES:,} bytes")
            # A long record is read again from its start after each read: double the read,
            # so that costs at most twice its length.
            more = f.read(min(max(_BLOCK, len(buf)), left))
            if not more:
                raise bad("the file ends before its END record: truncated?")
            left -= len(more)
            buf += more


# Record ids (OASIS spec, section 13 on): names 3-12, CELL 13/14, the elements 17-33.
_NAME_WITH_NUMBER = {4, 6, 8, 10}
_STRING_NAME = {3, 5, 7, 9}


def _record(c: Cursor, cells: OasisCells, path: Path, in_cblock: bool = False) -> None:
    """Read one record at ``c`` (advancing it), noting cell names, definitions, placements."""
    rid = c.uint()
    if rid in (0, 15, 16, 29):                  # PAD, XYABSOLUTE, XYRELATIVE, PROPERTY again
        return
    if rid in _STRING_NAME or rid in _NAME_WITH_NUMBER:
        name = c.string()
        number = c.uint() if rid in _NAME_WITH_NUMBER else None
        if rid in (3, 4):                       # CELLNAME
            if number is None:
                number, cells.implicit = cells.implicit, cells.implicit + 1
            cells.names[number] = name.decode("ascii", "replace")
    elif rid in (11, 12):                       # LAYERNAME: name, layer and type intervals
        c.string()
        for _ in range(2):
            kind = c.uint()
            for _ in range({0: 0, 4: 2}.get(kind, 1)):
                c.uint()
    elif rid == 13:
        cells.defined[c.uint()] = None
    elif rid == 14:
        cells.defined[c.string().decode("ascii", "replace")] = None
    elif rid in (17, 18):                       # PLACEMENT
        info = c.byte()
        if info & 0x80:
            cells.placed.add(c.uint() if info & 0x40 else c.string().decode("ascii", "replace"))
        if rid == 18:
            if info & 0x04:
                c.real()
            if info & 0x02:
                c.real()
        _xy_repetition(c, info, 0x20, 0x10, 0x08)
    elif rid == 19:                             # TEXT
        info = c.byte()
        if info & 0x40:
            c.uint() if info & 0x20 else c.string()
        if info & 0x01:
            c.uint()
        if info & 0x02:
            c.uint()
        _xy_repetition(c, info, 0x10, 0x08, 0x04)
    elif 20 <= rid <= 27:
        _geometry(c, rid)
    elif rid == 28:                             # PROPERTY
        info = c.byte()
        if info & 0x04:
            c.uint() if info & 0x02 else c.string()
        if not info & 0x08:
            property_values(c, info)
    elif rid in (30, 31, 32):                   # XNAME, XELEMENT
        c.uint()
        c.string()
        if rid == 31:
            c.uint()
    elif rid == 33:                             # XGEOMETRY
        info = c.byte()
        c.uint()
        _layer(c, info)
        c.string()
        _xy_repetition(c, info, 0x10, 0x08, 0x04)
    elif rid == 34 and not in_cblock:
        _cblock(c, cells, path)
    else:
        raise ValueError(f"OASIS record type {rid} where cells are expected" if rid in (1, 2, 34)
                         else f"unknown OASIS record type {rid}")


def property_values(c: Cursor, info: int) -> None:
    """Step over a PROPERTY record's value list (its count in the info byte's high nibble,
    15: a count follows)."""
    count = info >> 4
    for _ in range(c.uint() if count == 15 else count):
        kind = c.uint()
        if kind <= 7:
            c.real(kind)
        elif kind in (10, 11, 12):
            c.string()
        elif kind <= 15:
            c.uint()
        else:
            raise ValueError(f"unknown OASIS property value type {kind}")


def _layer(c: Cursor, info: int) -> None:
    if info & 0x01:
        c.uint()
    if info & 0x02:
        c.uint()


def _geometry(c: Cursor, rid: int) -> None:
    """RECTANGLE (20), POLYGON, PATH, TRAPEZOID (23-25), CTRAPEZOID, CIRCLE (27)."""
    info = c.byte()
    _layer(c, info)
    if rid in (20, 23, 24, 25, 26):
        if rid == 26 and info & 0x80:            # ctrapezoid type
            c.uint()
        if info & 0x40:                          # width
            c.uint()
        if info & 0x20:                          # height
            c.uint()
        for _ in range({23: 2, 24: 1, 25: 1}.get(rid, 0)):   # delta a and/or b
            c.uint()
    elif rid == 22:                              # PATH
        if info & 0x40:                          # half-width
            c.uint()
        if info & 0x80:                          # extension scheme, explicit ends after it
            path_extensions(c)
        if info & 0x20:
            point_list(c, polygon=False, keep=False)
    elif rid == 21:                              # POLYGON
        if info & 0x20:
            point_list(c, polygon=True, keep=False)
    elif info & 0x20:                            # CIRCLE: radius
        c.uint()
    _xy_repetition(c, info, 0x10, 0x08, 0x04)


def _xy_repetition(c: Cursor, info: int, x_bit: int, y_bit: int, repetition_bit: int) -> None:
    if info & x_bit:
        c.uint()
    if info & y_bit:
        c.uint()
    if info & repetition_bit:
        repetition(c, keep=False)


# --- the grammar of OASIS's compound values (spec sections 7.5-7.7), shared with the reader

MAX_DIMENSION = 1 << 32  # instances along one axis of a repetition (a lattice is not expanded)
# g-delta and 3-delta directions: east, north, west, south, then the four diagonals.
_OCTANTS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1))


def gdelta(c: Cursor) -> tuple[int, int]:
    """A g-delta: one integer along one of 8 directions (form 1), or x then y (form 2)."""
    v = c.uint()
    if v & 1:
        x = v >> 2
        return (-x if v & 2 else x), c.sint()
    dx, dy = _OCTANTS[(v >> 1) & 7]
    return dx * (v >> 4), dy * (v >> 4)


@dataclass(frozen=True)
class Repetition:
    """An OASIS repetition, in database units: a lattice of ``cols`` x ``rows`` positions
    ``i * col_step + j * row_step`` (types 1-3, 8, 9; never expanded here), or explicit
    ``offsets`` int64 [n, 2] from the first position (0, 0) (types 4-7, 10, 11)."""
    cols: int = 1
    rows: int = 1
    col_step: tuple[int, int] = (0, 0)
    row_step: tuple[int, int] = (0, 0)
    offsets: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.offsets) if self.offsets is not None else self.cols * self.rows

    def positions(self) -> np.ndarray:
        """Every position, int64 [size, 2] (the caller has checked that size is affordable)."""
        if self.offsets is not None:
            return self.offsets
        i, j = np.divmod(np.arange(self.size, dtype=np.int64), self.rows)
        return i[:, None] * np.array(self.col_step) + j[:, None] * np.array(self.row_step)


def _dimension(c: Cursor) -> int:
    """A repetition dimension: stored as count - 2."""
    n = c.uint() + 2
    if n > MAX_DIMENSION:
        raise ValueError(f"a repetition of {n:,} along one axis (at most {MAX_DIMENSION:,})")
    return n


def repetition(c: Cursor, keep: bool = True) -> Repetition | None:
    """A repetition record field; None for type 0 (reuse the previous one). With ``keep``
    False the bytes are only stepped over (explicit offsets are not stored)."""
    kind = c.uint()
    if kind == 0:
        return None
    if kind == 1:
        cols, rows = _dimension(c), _dimension(c)
        return Repetition(cols, rows, (c.uint(), 0), (0, c.uint()))
    if kind == 2:
        cols = _dimension(c)
        return Repetition(cols, 1, (c.uint(), 0))
    if kind == 3:
        rows = _dimension(c)
        return Repetition(1, rows, (0, 0), (0, c.uint()))
    if kind in (8, 9):
        cols, rows = _dimension(c), (_dimension(c) if kind == 8 else 1)
        col_step = gdelta(c)
        return Repetition(cols, rows, col_step, gdelta(c) if kind == 8 else (0, 0))
    if kind > 11:
        raise ValueError(f"unknown OASIS repetition type {kind}")
    n = _dimension(c)             # types 4-7, 10, 11: n positions, n - 1 spaces between
    grid = c.uint() if kind in (5, 7, 11) else 1
    offsets = np.zeros((n, 2), np.int64) if keep else None
    x = y = 0
    for k in range(1, n):         # every space reads a byte at least: a huge n runs out
        if kind >= 10:
            dx, dy = gdelta(c)
        elif kind <= 5:
            dx, dy = c.uint(), 0
        else:
            dx, dy = 0, c.uint()
        if keep:
            x, y = x + dx * grid, y + dy * grid
            offsets[k] = (x, y)   # raises OverflowError past int64: caught as a bad file
    return Repetition(offsets=offsets) if keep else Repetition()


def point_list(c: Cursor, polygon: bool, keep: bool = True) -> np.ndarray | None:
    """A point list as vertices from (0, 0), int64 [n, 2]; for a polygon, types 0 and 1
    get the implicit vertex that closes them with a horizontal and a vertical edge."""
    kind, n = c.uint(), c.uint()
    if kind > 5:
        raise ValueError(f"unknown OASIS point list type {kind}")
    if n == 0:
        raise ValueError("an empty OASIS point list")
    pts = np.zeros((n + 2 if polygon and kind <= 1 else n + 1, 2), np.int64) if keep else None
    x = y = ddx = ddy = 0
    for k in range(1, n + 1):     # every delta reads a byte at least: a huge n runs out
        if kind <= 1:
            d = c.sint()
            dx, dy = (d, 0) if (k + kind) % 2 else (0, d)
        elif kind <= 3:
            v = c.uint()
            bits = kind                     # 2-delta: 2 direction bits; 3-delta: 3
            (ux, uy), m = _OCTANTS[v & ((1 << bits) - 1)], v >> bits
            dx, dy = ux * m, uy * m
        else:
            dx, dy = gdelta(c)
            if kind == 5:                   # double deltas: each one adds to the last
                ddx, ddy = ddx + dx, ddy + dy
                dx, dy = ddx, ddy
        if keep:
            x, y = x + dx, y + dy
            pts[k] = (x, y)
    if keep and polygon and kind <= 1:      # the next edge would be along x when n is even
        pts[n + 1] = (0, y) if (n + kind) % 2 == 0 else (x, 0)
    return pts


def path_extensions(c: Cursor) -> tuple[tuple[int, int | None], tuple[int, int | None]]:
    """A PATH's extension scheme: per end (start, end) its kind (0 reuse the last, 1 flush,
    2 half the width, 3 explicit) and the explicit value."""
    scheme = c.uint()
    ends = []
    for kind in (scheme >> 2 & 3, scheme & 3):
        ends.append((kind, c.sint() if kind == 3 else None))
    return ends[0], ends[1]


def _cblock(c: Cursor, cells: OasisCells, path: Path) -> None:
    """CBLOCK: raw deflate of whole records, read here as records of their own."""
    if c.uint() != 0:
        raise ValueError("a CBLOCK of a compression type other than deflate")
    size, packed = c.uint(), c.uint()
    if size > MAX_RECORD_BYTES:
        raise ValueError(f"a CBLOCK of {size:,} bytes inflated (at most {MAX_RECORD_BYTES:,})")
    raw = c.skip(packed)
    inflate = zlib.decompressobj(-15)
    try:
        data = inflate.decompress(raw, size + 1)
    except zlib.error as exc:
        raise ValueError(f"a CBLOCK does not inflate ({exc})") from None
    if len(data) != size or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise ValueError("a CBLOCK does not inflate to its declared size")
    inner = Cursor(data)
    try:
        while inner.pos < len(data):
            _record(inner, cells, path, in_cblock=True)
    except IndexError:
        raise ValueError("a record inside a CBLOCK is cut short") from None
