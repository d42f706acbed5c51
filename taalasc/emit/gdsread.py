"""A GDSII stream reader of our own, vectorised with numpy, for fast mask read-back.

gdstk reads a full reticle die of ~34 M vias at ~0.55 M vias/s (through safe_read's child
process), and a 1 B-parameter model is 144 such dies. GDSII is a flat list of records, and a
mask's elements come in long runs of identical record layout: a tile cell's 2,048 chunk SREFs,
a chunk cell's vias. So this reader parses one element in Python, checks in one numpy
comparison how many of the following elements repeat its record headers exactly, and decodes
the whole run at once. Every record header of a run is compared, so a run cannot swallow a
record of another kind or length; files from other tools parse too, in shorter runs.

It is pure Python and numpy: a corrupt file raises MaskError and cannot crash the process,
so no child process is needed. gdstk and KLayout stay the independent readers the tests
compare it with. Supported: BOUNDARY rectangles, SREF and AREF at 90-degree rotations with
reflection and magnification 1; TEXT is skipped (labels carry no geometry); PATH, BOX and
NODE are refused. Flattening is streamed (``iter_layer``): memory is a batch of shapes, not
the die.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.emit.safe_read import MAX_SHAPES
from taalasc.errors import MaskError

Layer = tuple[int, int]

# Record types (GDSII Stream Format release 6.0).
HEADER, BGNLIB, LIBNAME, UNITS, ENDLIB, BGNSTR, STRNAME, ENDSTR = 0, 1, 2, 3, 4, 5, 6, 7
BOUNDARY, PATH, SREF, AREF, TEXT, LAYER, DATATYPE = 8, 9, 10, 11, 12, 13, 14
XY, ENDEL, SNAME, COLROW, NODE, STRANS, MAG, ANGLE, BOX = 16, 17, 18, 19, 21, 26, 27, 28, 45
_ELEMENTS = {BOUNDARY: "BOUNDARY", PATH: "PATH", SREF: "SREF", AREF: "AREF", TEXT: "TEXT",
             NODE: "NODE", BOX: "BOX"}
# Library header records that may come between BGNLIB and UNITS (LIBDIRSIZE, SRFNAME,
# LIBSECUR, REFLIBS, FONTS, ATTRTABLE, GENERATIONS, FORMAT, MASK, ENDMASKS).
_LIB_EXTRAS = {0x39, 0x3A, 0x3B, 0x1F, 0x20, 0x23, 0x22, 0x36, 0x37, 0x38}
_FIXED_LENGTH = {LAYER: 6, DATATYPE: 6, STRANS: 6, MAG: 12, ANGLE: 12, COLROW: 8}
MEMO_SHAPES = 4096      # cells up to this many shapes are flattened once and reused
BATCH_SHAPES = 1 << 21  # streamed pieces hold about this many rectangles
_RUN_FIRST, _RUN_MAX = 64, 1 << 16


@dataclass
class _Refs:
    """A cell's references, one row each (AREFs carry their array; SREFs are 1 x 1)."""
    child: np.ndarray       # int64 cell ids
    origin: np.ndarray      # int64 [n, 2] nm
    reflect: np.ndarray     # bool
    quarter: np.ndarray     # int64 rotation in 90-degree steps, 0..3
    cols: np.ndarray        # int64 >= 1
    rows: np.ndarray
    col_step: np.ndarray    # int64 [n, 2] nm between columns
    row_step: np.ndarray


@dataclass
class GdsCell:
    name: str
    rects: dict[Layer, np.ndarray] = field(default_factory=dict)  # int64 [n, 4] nm
    refs: _Refs | None = None


@dataclass
class GdsLibrary:
    path: Path
    cells: list[GdsCell]    # index = cell id
    top: int                # id of the single top cell
    order: list[int] | None = None  # cell ids, children first (see _order)


def read_gds(path: Path, allowed: set[Layer] | None = None) -> GdsLibrary:
    """Parse ``path`` into cells of rectangles and references (nm), checking every record.

    MaskError for anything unreadable: a bad or truncated record, an unsupported element,
    a non-rectangular BOUNDARY, a layer outside ``allowed``, a reference to a missing cell,
    a reference cycle, several top cells, or an expansion beyond MAX_SHAPES shapes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MaskError(f"{path}: cannot read mask file ({exc.strerror or exc})") from None
    lib = _Parser(raw, path, allowed).parse()
    _check_counts(lib)
    return lib


@dataclass(frozen=True)
class Instances:
    """Small cells placed by translation alone, not expanded: the shapes of instance k are
    ``memo.table[memo.start[child[k]]:][:memo.size[child[k]]]`` moved by ``2 * origin[k]``
    (doubled centres). A reader of the geometry can work per instance instead of per shape."""
    child: np.ndarray
    origin: np.ndarray      # int64 [n, 2] nm
    memo: "_Memo"


def iter_layer(lib: GdsLibrary, layer: Layer, batch: int = BATCH_SHAPES, centres: bool = False,
               instances: bool = False) -> Iterator[np.ndarray | Instances]:
    """The top cell flattened, ``layer`` only: int64 [n, 4] rectangles in pieces of about
    ``batch`` shapes (a piece may be one larger cell's worth). With ``centres``, [n, 2]
    doubled centres ``(x0 + x1, y0 + y1)`` instead: half the data, still exact. With
    ``instances`` (needs ``centres``), placements of small cells by translation alone come
    as :class:`Instances` rather than as their shapes."""
    if instances and not centres:
        raise ValueError("instances needs centres")
    counts = _counts(lib, layer)
    memo = _Memo(len(lib.cells), 2 if centres else 4)
    pending: list[np.ndarray] = []
    size = 0
    key = (layer, centres, instances)
    try:
        for piece in _expand(lib, key, lib.top, _IDENTITY, counts, memo, batch):
            if isinstance(piece, Instances):
                yield piece
            elif len(piece):
                pending.append(piece)
                size += len(piece)
            if size >= batch:
                yield np.concatenate(pending)
                pending, size = [], 0
    except RecursionError:  # a chain of nested cells: Python's stack, not the memory, ends
        raise MaskError(f"{lib.path}: the cell hierarchy is deeper than this reader follows "
                        f"(~{sys.getrecursionlimit() // 3} levels)") from None
    if pending:
        yield np.concatenate(pending)


def flat_rects(lib: GdsLibrary) -> dict[Layer, np.ndarray]:
    """Every layer of the top cell flattened in memory (for tests and small files)."""
    layers = sorted({k for cell in lib.cells for k in cell.rects})
    out = {}
    for layer in layers:
        parts = list(iter_layer(lib, layer))
        if parts:
            out[layer] = np.concatenate(parts)
    return out


# --- parsing ---------------------------------------------------------------------------

@dataclass
class _Run:
    """``n`` consecutive elements of one record layout: a [n, size] view of the file."""
    block: np.ndarray
    pos: int            # file offset of the first

    @property
    def n(self) -> int:
        return len(self.block)

    def take(self, offset: int, nbytes: int) -> np.ndarray:
        return self.block[:, offset:offset + nbytes]

    def ints(self, offset: int, count: int, dtype: str) -> np.ndarray:
        width = np.dtype(dtype).itemsize
        raw = np.ascontiguousarray(self.take(offset, count * width))
        return raw.view(dtype).reshape(self.n, count).astype(np.int64)


_CELL_BATCH = 64  # cells checked against a template at once
_TEMPLATES = 8    # cell layouts remembered
_ENDSTR = b"\x00\x04\x07\x00"


@dataclass(frozen=True)
class _Template:
    """A parsed cell's record layout: byte length, where its record headers are and what
    they hold, where its name is, and its runs (offset, layout, size, count, type)."""
    length: int
    header_cols: np.ndarray     # byte offsets of every header byte, BGNSTR to ENDSTR
    headers: np.ndarray         # the bytes found there
    name_at: tuple[int, int]    # STRNAME payload offset and length
    runs: list

    @classmethod
    def of(cls, data: np.ndarray, start: int, end: int, name_at, runs) -> "_Template":
        offs = [0, name_at[0] - 4]  # BGNSTR, STRNAME
        for rel, layout, size, count, _ in runs:
            rec = np.array([o for o, _, _ in layout], np.int64)
            offs.append((rel + size * np.arange(count)[:, None] + rec[None, :]).reshape(-1))
        offs.append([end - 4 - start])  # ENDSTR
        offs = np.concatenate([np.atleast_1d(np.asarray(o, np.int64)) for o in offs])
        cols = (offs[:, None] + np.arange(4)).reshape(-1)
        return cls(end - start, cols, data[start + cols].copy(), name_at, runs)


class _Parser:
    def __init__(self, raw: bytes, path: Path, allowed: set[Layer] | None):
        self.raw, self.data, self.path, self.allowed = raw, np.frombuffer(raw, np.uint8), path, allowed
        self.scale = 1.0
        self.ids: dict[str, int] = {}
        self.by_raw: dict[bytes, int] = {}
        self.short_keys = np.zeros(0, np.uint64)  # sorted; names of <= 8 bytes as integers
        self.short_ids = np.zeros(0, np.int64)
        self.templates: dict[int, _Template] = {}  # by cell length
        self.cells: list[GdsCell | None] = []

    def fail(self, what: str, pos: int | None = None) -> MaskError:
        at = f" at byte {pos}" if pos is not None else ""
        return MaskError(f"{self.path}: cannot read mask file ({what}{at})")

    def header(self, p: int) -> tuple[int, int, int]:
        raw = self.raw
        if p + 4 > len(raw):
            raise self.fail("a record is cut short: truncated?", p)
        length = raw[p] << 8 | raw[p + 1]
        if length < 4 or length % 2 or p + length > len(raw):
            raise self.fail(f"bad record length {length}" if length < 4 or length % 2
                            else "a record runs past the end of the file: truncated?", p)
        return length, raw[p + 2], raw[p + 3]

    def child_ids(self, rows: np.ndarray) -> np.ndarray:
        """Cell ids of SNAME payloads [n, width]. Names of up to 8 bytes (chunk cells) go
        through a sorted table of their bytes as one integer; longer ones through a dict."""
        if rows.shape[1] > 8:
            names, inverse = _unique_rows(rows)
            return np.array([self.raw_id(r.tobytes()) for r in names], np.int64)[inverse]
        padded = np.zeros((len(rows), 8), np.uint8)
        padded[:, :rows.shape[1]] = rows
        keys, inverse = np.unique(padded.view(np.uint64)[:, 0], return_inverse=True)
        at = np.minimum(np.searchsorted(self.short_keys, keys), len(self.short_keys) - 1)
        new = self.short_keys[at] != keys if len(self.short_keys) else np.ones(len(keys), bool)
        if new.any():
            fresh = keys[new]
            ids = [self.raw_id(k.tobytes()) for k in fresh]
            order = np.argsort(np.concatenate([self.short_keys, fresh]), kind="stable")
            self.short_keys = np.concatenate([self.short_keys, fresh])[order]
            self.short_ids = np.concatenate([self.short_ids, np.array(ids, np.int64)])[order]
            at = np.searchsorted(self.short_keys, keys)
        return self.short_ids[at][inverse.reshape(-1)]

    def raw_id(self, raw_name: bytes) -> int:
        k = self.by_raw.get(raw_name)
        if k is None:
            k = self.by_raw[raw_name] = self.cell_id(_ascii(raw_name))
        return k

    def cell_id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.cells)
            self.cells.append(None)
        return self.ids[name]

    def parse(self) -> GdsLibrary:
        p = self.library_header()
        raw = self.raw
        while True:
            length, rtype, _ = self.header(p)
            if rtype == ENDLIB:
                end = p + length
                if raw[end:].strip(b"\0"):
                    raise self.fail("data after ENDLIB", end)
                break
            if rtype != BGNSTR:
                raise self.fail(f"record type {rtype:#04x} where a cell (BGNSTR) or ENDLIB "
                                "must start", p)
            done = self.cells_like_last(p) if self.templates else None
            p = done if done is not None else self.cell(p + length, start=p)
        missing = [name for name, k in self.ids.items() if self.cells[k] is None]
        if missing:
            raise MaskError(f"{self.path}: a cell references missing cell {missing[0]!r} "
                            f"({len(missing)} such cells)")
        cells: list[GdsCell] = self.cells  # type: ignore[assignment]
        referenced = np.zeros(len(cells), bool)
        for cell in cells:
            if cell.refs is not None:
                referenced[cell.refs.child] = True
        tops = np.flatnonzero(~referenced)
        if len(tops) != 1:
            raise MaskError(f"{self.path}: expected one top cell, found {len(tops)}")
        return GdsLibrary(self.path, cells, int(tops[0]))

    def library_header(self) -> int:
        length, rtype, _ = self.header(0)
        if rtype != HEADER:
            raise self.fail("no GDSII HEADER record at the start")
        p = length
        for want in (BGNLIB, LIBNAME):
            length, rtype, _ = self.header(p)
            if rtype != want:
                raise self.fail(f"record type {rtype:#04x} where {('BGNLIB', 'LIBNAME')[want - 1]}"
                                " must come", p)
            p += length
        while True:
            length, rtype, _ = self.header(p)
            if rtype == UNITS:
                if length != 20:
                    raise self.fail("UNITS record must hold two 8-byte reals", p)
                meters = float(_real8(self.data[p + 12:p + 20][None, :])[0])
                if not meters > 0:
                    raise self.fail(f"database unit must be positive, not {meters} m", p)
                self.scale = meters / 1e-9
                return p + length
            if rtype not in _LIB_EXTRAS:
                raise self.fail(f"record type {rtype:#04x} before UNITS", p)
            p += length

    def new_cell(self, name: str) -> GdsCell:
        k = self.cell_id(name)
        if self.cells[k] is not None:
            raise MaskError(f"{self.path}: cell {name!r} is defined twice")
        self.cells[k] = cell = GdsCell(name)
        return cell

    def cell(self, p: int, start: int) -> int:
        """Parse the cell whose BGNSTR is at ``start`` (``p``: its STRNAME); remember its
        record layout as the template the next cells are checked against."""
        length, rtype, _ = self.header(p)
        if rtype != STRNAME:
            raise self.fail("a cell (BGNSTR) without STRNAME", p)
        name = _ascii(self.raw[p + 4:p + length])
        cell = self.new_cell(name)
        rects: dict[Layer, list[np.ndarray]] = {}
        refs: list[dict[str, np.ndarray]] = []
        runs: list[tuple[int, list, int, int, int]] = []
        name_at = (p + 4 - start, length - 4)
        p += length
        while True:
            length, rtype, _ = self.header(p)
            if rtype == ENDSTR:
                break
            if rtype not in _ELEMENTS:
                raise self.fail(f"record type {rtype:#04x} in cell {name!r} where an element "
                                "must start", p)
            if rtype == PATH:
                raise MaskError(f"{self.path}: cell {name!r} holds paths; taalasc masks use "
                                "rectangles")
            if rtype in (BOX, NODE):
                raise MaskError(f"{self.path}: cell {name!r} holds a {_ELEMENTS[rtype]} "
                                "element; taalasc masks use BOUNDARY rectangles and references")
            layout, size = self.element(p, name)
            count = self.run_length(p, layout, size)
            run = _Run(self.data[p:p + size * count].reshape(count, size), p)
            if rtype == BOUNDARY:
                self.boundaries(run, layout, name, rects)
            elif rtype in (SREF, AREF):
                refs.append(self.references(run, layout, rtype, name))
            runs.append((p - start, layout, size, count, rtype))
            p += size * count
        cell.rects = {k: np.concatenate(v) for k, v in sorted(rects.items())}
        if refs:
            cell.refs = _Refs(**{f: np.concatenate([r[f] for r in refs])
                                 for f in _Refs.__dataclass_fields__})
        end = p + length
        # Only cells of many references make a template (tile cells); the small cells
        # defined between them (chunk cells, on first use) leave it in place.
        if runs and all(r[4] in (SREF, AREF) for r in runs) and sum(r[3] for r in runs) >= 64:
            t = _Template.of(self.data, start, end, name_at, runs)
            self.templates.pop(t.length, None)
            self.templates[t.length] = t  # most recent last; a few layouts alternate
            if len(self.templates) > _TEMPLATES:
                self.templates.pop(next(iter(self.templates)))
        return end

    def cells_like_last(self, p: int) -> int | None:
        """Cells from ``p`` on whose every record header equals the template's (a die's
        tile cells all share one layout), parsed together; None when the next one differs.

        Equal headers at equal offsets mean equal record types and lengths, so the payload
        of every record sits where the template's does: a batch of cells is one array."""
        # Cheap first test: an ENDSTR where the template's cell ends.
        t = next((t for t in reversed(self.templates.values())
                  if self.raw[p + t.length - 4:p + t.length] == _ENDSTR), None)
        if t is None:
            return None
        most = min(_CELL_BATCH, (len(self.raw) - p) // t.length)
        view = self.data[p:p + most * t.length].reshape(most, t.length)
        same = (view[:, t.header_cols] == t.headers).all(axis=1)
        n = most if same.all() else int(np.argmin(same))
        if n == 0:
            return None
        view = view[:n]
        cells = [self.new_cell(_ascii(raw.tobytes()))
                 for raw in view[:, t.name_at[0]:t.name_at[0] + t.name_at[1]]]
        parts = []
        for rel, layout, size, count, rtype in t.runs:
            block = view[:, rel:rel + size * count].reshape(n * count, size)
            parts.append((count, self.references(_Run(block, p + rel), layout, rtype,
                                                 cells[0].name)))
        fields = _Refs.__dataclass_fields__
        for k, cell in enumerate(cells):
            cell.refs = _Refs(**{f: np.concatenate([r[f][k * c:(k + 1) * c] for c, r in parts])
                                 for f in fields})
        return p + n * t.length

    def element(self, p: int, cell: str) -> tuple[list[tuple[int, int, int]], int]:
        """Records of the element at ``p`` up to ENDEL: [(offset, type, length)], size."""
        layout, q = [], p
        while True:
            length, rtype, _ = self.header(q)
            if q > p and (rtype in _ELEMENTS or rtype in (BGNSTR, ENDSTR, ENDLIB)):
                raise self.fail(f"an element of cell {cell!r} has no ENDEL", q)
            want = _FIXED_LENGTH.get(rtype)
            if want is not None and length != want:
                raise self.fail(f"record type {rtype:#04x} of cell {cell!r} is {length} bytes, "
                                f"not {want}", q)
            layout.append((q - p, rtype, length))
            q += length
            if rtype == ENDEL:
                return layout, q - p

    def run_length(self, p: int, layout, size: int) -> int:
        """How many elements from ``p`` on have exactly ``layout``'s record headers."""
        cols = (np.array([o for o, _, _ in layout], np.int64)[:, None] + np.arange(4)).reshape(-1)
        want = self.data[p + cols]
        most = (len(self.raw) - p) // size
        n, step = 1, _RUN_FIRST
        while n < most:
            k = min(step, most - n)
            block = self.data[p + size * n:p + size * (n + k)].reshape(k, size)
            same = (block[:, cols] == want).all(axis=1)
            if not same.all():
                return n + int(np.argmin(same))
            n += k
            step = min(step * 4, _RUN_MAX)
        return n

    def xy(self, run: _Run, rec: tuple[int, int, int], cell: str) -> np.ndarray:
        off, _, length = rec
        if (length - 4) % 8:
            raise self.fail(f"an XY record of cell {cell!r} holds a partial point", run.pos + off)
        pts = run.ints(off + 4, (length - 4) // 4, ">i4").reshape(run.n, -1, 2)
        if self.scale != 1.0:
            scaled = pts * self.scale
            pts = np.rint(scaled).astype(np.int64)
            if np.abs(scaled - pts).max(initial=0) > 1e-6:
                raise MaskError(f"{self.path}: cell {cell!r} has coordinates off the 1 nm grid "
                                f"(database unit {self.scale:g} nm)")
        return pts

    def find(self, layout, rtype: int):
        return next((rec for rec in layout if rec[1] == rtype), None)

    def boundaries(self, run: _Run, layout, cell: str, rects: dict[Layer, list[np.ndarray]]) -> None:
        lay, dt, xy = (self.find(layout, t) for t in (LAYER, DATATYPE, XY))
        if lay is None or dt is None or xy is None:
            raise self.fail(f"a BOUNDARY of cell {cell!r} lacks LAYER, DATATYPE or XY", run.pos)
        layer = run.ints(lay[0] + 4, 1, ">i2")[:, 0]
        datatype = run.ints(dt[0] + 4, 1, ">i2")[:, 0]
        pts = self.xy(run, xy, cell)
        if pts.shape[1] != 5:
            raise MaskError(f"{self.path}: cell {cell!r} has a {pts.shape[1] - 1}-point polygon; "
                            "only rectangles allowed")
        lo, hi = pts[:, :4].min(axis=1), pts[:, :4].max(axis=1)
        step = np.diff(pts, axis=1)  # each side moves along exactly one axis
        bad = ~(pts[:, 0] == pts[:, 4]).all(axis=1) | ((step != 0).sum(axis=2) != 1).any(axis=1) \
            | (hi == lo).any(axis=1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise MaskError(f"{self.path}: cell {cell!r} has a non-rectangular shape on "
                            f"{layer[k]}/{datatype[k]} near {lo[k].tolist()} nm")
        box = np.concatenate([lo, hi], axis=1)
        key = layer * 65536 + datatype
        for value in np.unique(key).tolist():
            pair = (value // 65536, value % 65536)
            if self.allowed is not None and pair not in self.allowed:
                raise MaskError(f"{self.path}: cell {cell!r} has a shape on layer "
                                f"{pair[0]}/{pair[1]}; only {sorted(self.allowed)} may appear")
            rects.setdefault(pair, []).append(box[key == value])

    def references(self, run: _Run, layout, rtype: int, cell: str) -> dict[str, np.ndarray]:
        n = run.n
        sname, xy = self.find(layout, SNAME), self.find(layout, XY)
        if sname is None or xy is None:
            raise self.fail(f"a reference of cell {cell!r} lacks SNAME or XY", run.pos)
        child = self.child_ids(run.take(sname[0] + 4, sname[2] - 4))
        reflect = np.zeros(n, bool)
        quarter = np.zeros(n, np.int64)
        strans = self.find(layout, STRANS)
        if strans is not None:
            flags = run.ints(strans[0] + 4, 1, ">u2")[:, 0]
            if (flags & 0x0006).any():
                raise MaskError(f"{self.path}: a reference in cell {cell!r} uses absolute "
                                "magnification or angle; only relative 90° steps at 1x are "
                                "supported")
            reflect = (flags & 0x8000) != 0
        mag = self.find(layout, MAG)
        if mag is not None and (_real8(run.take(mag[0] + 4, 8)) != 1.0).any():
            raise MaskError(f"{self.path}: a reference in cell {cell!r} has magnification "
                            "other than 1; only 90° steps at 1x are supported")
        angle = self.find(layout, ANGLE)
        if angle is not None:
            turns = _real8(run.take(angle[0] + 4, 8)) / 90.0
            if (~(np.abs(turns) < 1e6) | (np.abs(turns - np.rint(turns)) > 1e-9)).any():
                raise MaskError(f"{self.path}: a reference in cell {cell!r} is rotated by a "
                                "non-multiple of 90 degrees; only 90° steps at 1x are supported")
            quarter = np.rint(turns).astype(np.int64) % 4
        pts = self.xy(run, xy, cell)
        one = np.ones(n, np.int64)
        zero = np.zeros((n, 2), np.int64)
        if rtype == SREF:
            if pts.shape[1] != 1:
                raise self.fail(f"an SREF of cell {cell!r} has {pts.shape[1]} points, not 1",
                                run.pos)
            return dict(child=child, origin=pts[:, 0], reflect=reflect, quarter=quarter,
                        cols=one, rows=one, col_step=zero, row_step=zero)
        colrow = self.find(layout, COLROW)
        if colrow is None or pts.shape[1] != 3:
            raise self.fail(f"an AREF of cell {cell!r} needs COLROW and 3 points", run.pos)
        cr = run.ints(colrow[0] + 4, 2, ">i2")
        cols, rows = cr[:, 0], cr[:, 1]
        if (cols < 1).any() or (rows < 1).any():
            raise MaskError(f"{self.path}: an AREF in cell {cell!r} has "
                            f"{int(cols.min())} x {int(rows.min())} instances")
        span_c, span_r = pts[:, 1] - pts[:, 0], pts[:, 2] - pts[:, 0]
        if (span_c % cols[:, None]).any() or (span_r % rows[:, None]).any():
            raise MaskError(f"{self.path}: an AREF in cell {cell!r} has a pitch off the 1 nm grid")
        return dict(child=child, origin=pts[:, 0], reflect=reflect, quarter=quarter,
                    cols=cols, rows=rows, col_step=span_c // cols[:, None],
                    row_step=span_r // rows[:, None])


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(rows, axis=0, return_inverse=True) for uint8 rows, through a 64-bit key per
    row (sorting rows of bytes is ~50x slower); a key collision falls back to the slow way."""
    n, width = rows.shape
    words = np.zeros((n, -(-width // 8) * 8), np.uint8)
    words[:, :width] = rows
    words = words.view(np.uint64)
    key = words[:, 0].copy()
    with np.errstate(over="ignore"):
        for k in range(1, words.shape[1]):
            key = key * np.uint64(0x9E3779B97F4A7C15) ^ words[:, k]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if words.shape[1] > 1 and not (words[first][inverse] == words).all():
        names, inverse = np.unique(rows, axis=0, return_inverse=True)
        return names, inverse.reshape(-1)
    return rows[first], inverse.reshape(-1)


def _ascii(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", errors="replace")


def _real8(b: np.ndarray) -> np.ndarray:
    """GDSII excess-64 base-16 reals, [n, 8] bytes -> float64 [n]."""
    b = np.asarray(b, np.uint8).reshape(-1, 8)
    mantissa = np.zeros(len(b), np.float64)
    for k in range(1, 8):
        mantissa = mantissa * 256 + b[:, k]
    exponent = (b[:, 0] & 0x7F).astype(np.int64) - 64
    value = mantissa / float(1 << 56) * np.power(16.0, exponent)
    return np.where(b[:, 0] & 0x80, -value, value)


# --- hierarchy -------------------------------------------------------------------------

def _order(lib: GdsLibrary) -> list[int]:
    """Cell ids children first; MaskError on a reference cycle (iterative: no recursion
    limit for a deep chain). Computed once per library."""
    if lib.order is None:
        lib.order = _walk(lib)
    return lib.order


def _walk(lib: GdsLibrary) -> list[int]:
    state = np.zeros(len(lib.cells), np.int8)  # 0 new, 1 on the stack, 2 done
    order: list[int] = []
    state[lib.top] = 1
    stack = [(lib.top, iter(_children(lib, lib.top, state)))]
    while stack:
        cell, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            state[cell] = 2
            order.append(cell)
        elif state[nxt] == 1:
            raise MaskError(f"{lib.path}: cell {lib.cells[nxt].name!r} is part of a reference cycle")
        elif state[nxt] == 0:
            state[nxt] = 1
            stack.append((nxt, iter(_children(lib, nxt, state))))
    return order


def _children(lib: GdsLibrary, cell: int, state: np.ndarray) -> list[int]:
    """Children of ``cell`` not yet finished (thousands of tile cells share a few hundred
    chunk cells: filtering in numpy keeps the walk's Python loop short)."""
    refs = lib.cells[cell].refs
    if refs is None:
        return []
    kids = np.unique(refs.child)
    return kids[state[kids] != 2].tolist()


def _check_counts(lib: GdsLibrary) -> None:
    total = _counts(lib, None)[lib.top]
    if total > MAX_SHAPES:
        raise MaskError(f"{lib.path}: the mask would expand to {int(total)} shapes when "
                        f"flattened; at most {MAX_SHAPES} are read")


def _counts(lib: GdsLibrary, layer: Layer | None) -> np.ndarray:
    """Shapes each cell expands to (``layer`` only, or all), as float64 so a bomb cannot wrap."""
    counts = np.zeros(len(lib.cells), np.float64)
    for k in _order(lib):
        cell = lib.cells[k]
        own = sum(len(v) for key, v in cell.rects.items() if layer is None or key == layer)
        refs = cell.refs
        if refs is not None:
            own += float(np.sum(counts[refs.child] * refs.cols * refs.rows))
        counts[k] = own
    return counts


_IDENTITY = (False, 0, 0, 0)


def _orient(rects: np.ndarray, reflect, quarter) -> np.ndarray:
    """Rectangles (or [n, 2] points when ``rects`` has 2 columns) reflected about x then
    rotated by ``quarter`` 90-degree steps; per-row arrays or scalars."""
    pts = rects.reshape(len(rects), -1, 2).copy()
    reflect = np.broadcast_to(np.asarray(reflect, bool), (len(rects),))
    quarter = np.broadcast_to(np.asarray(quarter, np.int64) % 4, (len(rects),))
    pts[reflect, :, 1] *= -1
    for q in (1, 2, 3):
        sel = quarter == q
        if sel.any():
            x, y = pts[sel, :, 0].copy(), pts[sel, :, 1].copy()
            pts[sel, :, 0], pts[sel, :, 1] = ((-y, x), (-x, -y), (y, -x))[q - 1]
    if pts.shape[1] == 1:
        return pts.reshape(len(rects), 2)
    lo, hi = np.minimum(pts[:, 0], pts[:, 1]), np.maximum(pts[:, 0], pts[:, 1])
    return np.concatenate([lo, hi], axis=1)


def _shift(shapes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rectangles [n, 4] or doubled centres [n, 2] moved by ``offsets`` ([n, 2] or [2])."""
    return shapes + (np.tile(offsets, 2) if shapes.shape[1] == 4 else 2 * offsets)


def _apply(shapes: np.ndarray, t) -> np.ndarray:
    reflect, quarter, dx, dy = t
    out = _orient(shapes, reflect, quarter) if (reflect or quarter) else shapes
    return _shift(out, np.array([dx, dy], np.int64)) if (dx or dy) else out


def _compose(outer, reflect: bool, quarter: int, dx: int, dy: int):
    """outer after (reflect, quarter, dx, dy)."""
    r1, q1, x1, y1 = outer
    ox, oy = _orient(np.array([[dx, dy]], np.int64), r1, q1)[0].tolist() if (r1 or q1) else (dx, dy)
    return (r1 != reflect, (q1 + (-quarter if r1 else quarter)) % 4, ox + x1, oy + y1)


def _instances(refs: _Refs, sel: np.ndarray):
    """Rows ``sel`` of ``refs`` with AREFs expanded: child, origin [n, 2], reflect, quarter."""
    reps = refs.cols[sel] * refs.rows[sel]
    if (reps == 1).all():  # SREFs only: nothing to expand
        return refs.child[sel], refs.origin[sel], refs.reflect[sel], refs.quarter[sel]
    child = np.repeat(refs.child[sel], reps)
    first = np.cumsum(reps) - reps
    k = np.arange(int(reps.sum()), dtype=np.int64) - np.repeat(first, reps)
    cols = np.repeat(refs.cols[sel], reps)
    i, j = k % cols, k // cols
    origin = (np.repeat(refs.origin[sel], reps, axis=0)
              + i[:, None] * np.repeat(refs.col_step[sel], reps, axis=0)
              + j[:, None] * np.repeat(refs.row_step[sel], reps, axis=0))
    return (child, origin, np.repeat(refs.reflect[sel], reps), np.repeat(refs.quarter[sel], reps))


class _Memo:
    """Small cells (at most MEMO_SHAPES shapes) flattened once, into one table shared by
    every placement: a cell's shapes are ``table[start[c]:start[c] + size[c]]``."""

    def __init__(self, cells: int, width: int):
        self.start = np.full(cells, -1, np.int64)
        self.size = np.zeros(cells, np.int64)
        self.length, self.width = 0, width
        self._buf = np.zeros((1024, width), np.int64)  # grows by doubling

    def ensure(self, lib: GdsLibrary, key, cells: np.ndarray, counts) -> None:
        for c in np.unique(cells[self.start[cells] < 0]).tolist():
            if self.start[c] >= 0:  # filled while flattening another cell
                continue
            parts = list(_expand(lib, key[:2] + (False,), c, _IDENTITY, counts, self,
                                 BATCH_SHAPES))
            flat = np.concatenate(parts) if parts else np.zeros((0, self.width), np.int64)
            end = self.length + len(flat)
            if end > len(self._buf):
                grown = np.zeros((max(end, 2 * len(self._buf)), self.width), np.int64)
                grown[:self.length] = self._buf[:self.length]
                self._buf = grown
            self._buf[self.length:end] = flat
            self.start[c], self.size[c], self.length = self.length, len(flat), end

    @property
    def table(self) -> np.ndarray:
        return self._buf[:self.length]


def _expand(lib: GdsLibrary, key, cell: int, t, counts, memo: _Memo, batch: int
            ) -> Iterator[np.ndarray]:
    """Rectangles of ``cell`` under transform ``t``, in pieces: its own shapes, then its
    references to small cells placed in vectorised batches, then its big children
    recursively (each instance under the composed transform)."""
    own = lib.cells[cell].rects.get(key[0])
    if own is not None and len(own):
        yield _apply(own[:, :2] + own[:, 2:] if key[1] else own, t)
    refs = lib.cells[cell].refs
    if refs is None:
        return
    per_ref = counts[refs.child] * refs.cols * refs.rows
    small = (counts[refs.child] <= MEMO_SHAPES) & (per_ref > 0)
    rows = np.flatnonzero(small)
    start = 0
    cum = np.cumsum(per_ref[rows])
    while start < len(rows):
        stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + batch, "right"))
        stop = max(stop, start + 1)
        sel = rows[start:stop]
        start = stop
        if key[2] and not (t[0] or t[1]):
            child, origin, reflect, quarter = _instances(refs, sel)
            plain = ~reflect & (quarter == 0)
            memo.ensure(lib, key, child[plain], counts)
            yield Instances(child[plain], origin[plain] + np.array(t[2:], np.int64), memo)
            if plain.all():
                continue
            sel = _turned_rows(refs, sel)
        yield _place_small(lib, key, refs, sel, counts, memo, t)
    for k in np.flatnonzero(~small & (per_ref > 0)).tolist():
        child, origin, reflect, quarter = _instances(refs, np.array([k]))
        for c, (x, y), r, q in zip(child.tolist(), origin.tolist(), reflect.tolist(),
                                   quarter.tolist()):
            yield from _expand(lib, key, c, _compose(t, r, q, x, y), counts, memo, batch)


def _turned_rows(refs: _Refs, sel: np.ndarray) -> np.ndarray:
    """Rows of ``sel`` whose references rotate or reflect (an AREF row turns as a whole)."""
    return sel[refs.reflect[sel] | (refs.quarter[sel] != 0)]


def _place_small(lib, key, refs: _Refs, sel: np.ndarray, counts, memo: _Memo, t
                 ) -> np.ndarray:
    """Every instance of references ``sel`` (children of at most MEMO_SHAPES shapes) as one
    gather from the memo table, under the parent's transform ``t``."""
    child, origin, reflect, quarter = _instances(refs, sel)
    memo.ensure(lib, key, child, counts)
    turned = reflect | (quarter != 0)
    if not (t[0] or t[1]):  # a translated parent: move the origins, not every shape
        origin = origin + np.array(t[2:], np.int64)
    n = memo.size[child]
    if n.min() == n.max() and not turned.any():
        # Children of one size (a tile's chunk cells): a plain 3-D gather, no repeats.
        idx = memo.start[child][:, None] + np.arange(n[0], dtype=np.int64)
        shapes = memo.table[idx]
        shapes += (np.tile(origin, 2) if shapes.shape[2] == 4 else 2 * origin)[:, None, :]
        shapes = shapes.reshape(-1, shapes.shape[2])
    else:
        total = int(n.sum())
        idx = np.repeat(memo.start[child] - (np.cumsum(n) - n), n) + np.arange(total,
                                                                               dtype=np.int64)
        shapes = memo.table[idx]
        if turned.any():
            turned = np.repeat(turned, n)
            shapes[turned] = _orient(shapes[turned], np.repeat(reflect, n)[turned],
                                     np.repeat(quarter, n)[turned])
        shapes = _shift(shapes, np.repeat(origin, n, axis=0))
    return _apply(shapes, t) if (t[0] or t[1]) else shapes


def check_square(lib: GdsLibrary, layer: Layer, size_nm: int, what: str) -> None:
    """Every shape on ``layer`` in every cell is a ``size_nm`` square (rotation keeps that);
    ``what`` ends the message, e.g. "sky130 vias are 800 x 800 nm"."""
    for cell in lib.cells:
        rects = cell.rects.get(layer)
        if rects is None:
            continue
        bad = np.flatnonzero((rects[:, 2] - rects[:, 0] != size_nm)
                             | (rects[:, 3] - rects[:, 1] != size_nm))
        if bad.size:
            x0, y0, x1, y1 = rects[bad[0]].tolist()
            raise MaskError(f"{lib.path}: via at ({x0}, {y0}) nm in cell {cell.name!r} is "
                            f"{x1 - x0} x {y1 - y0} nm; {what} ({bad.size} such vias)")
