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
NODE are refused. Flattening is formats/gdsflat.py's (streamed: memory is a batch of shapes,
not the die).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    order: list[int] | None = None  # cell ids, children first (gdsflat.children_first)
    level: np.ndarray | None = None  # per cell id: 0 places nothing, else 1 + its children's
    counts: dict | None = None  # gdsflat.layer_counts: layer (None: all) -> shapes per cell


def library_of(path: Path, cells: list[GdsCell]) -> GdsLibrary:
    """The library of ``cells`` (GDSII or OASIS), or MaskError unless exactly one of them is
    placed by no other: its top."""
    referenced = np.zeros(len(cells), bool)
    for cell in cells:
        if cell.refs is not None:
            referenced[cell.refs.child] = True
    tops = np.flatnonzero(~referenced)
    if len(tops) != 1:
        raise MaskError(f"{path}: expected one top cell, found {len(tops)}")
    return GdsLibrary(path, cells, int(tops[0]))


def read_gds(path: Path, allowed: set[Layer] | None = None) -> GdsLibrary:
    """Parse ``path`` into cells of rectangles and references (nm), checking every record.

    MaskError for anything unreadable: a bad or truncated record, an unsupported element,
    a non-rectangular BOUNDARY, a layer outside ``allowed``, a reference to a missing cell,
    a reference cycle, several top cells, or an expansion beyond safe_read.MAX_SHAPES shapes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MaskError(f"{path}: cannot read mask file ({exc.strerror or exc})") from None
    from taalasc.formats.gdsflat import check_counts

    lib = _Parser(raw, path, allowed).parse()
    check_counts(lib)
    return lib


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
        """Cell ids of SNAME payloads [n, width]. Names of up to 8 bytes (other writers'
        short names) go through a sorted table of their bytes as one integer; longer ones
        (taalasc's, with their die prefix) through a dict, once per distinct name of a run."""
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
        return library_of(self.path, cells)

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
        n, step = 0, 1   # 1, 4, 16... cells: the next cell often has another layout
        while n < most:
            k = min(step, most - n)
            block = self.data[p + n * t.length:p + (n + k) * t.length].reshape(k, t.length)
            same = (block[:, t.header_cols] == t.headers).all(axis=1)
            n += k if same.all() else int(np.argmin(same))
            if not same.all():
                break
            step *= 4
        if n == 0:
            return None
        view = self.data[p:p + n * t.length].reshape(n, t.length)
        cells = [self.new_cell(_ascii(raw.tobytes()))
                 for raw in view[:, t.name_at[0]:t.name_at[0] + t.name_at[1]]]
        parts = []
        for rel, layout, size, count, rtype in t.runs:
            block = view[:, rel:rel + size * count].reshape(n * count, size)
            parts.append((count, self.references(_Run(block, p + rel), layout, rtype,
                                                 cells[0].name)))
        fields = _Refs.__dataclass_fields__
        if len(parts) == 1:   # one run: each cell's rows are a slice of it (a view)
            (c, r), = parts
            for k, cell in enumerate(cells):
                cell.refs = _Refs(**{f: r[f][k * c:(k + 1) * c] for f in fields})
            return p + n * t.length
        if n == 1:
            cells[0].refs = _Refs(**{f: np.concatenate([r[f] for _, r in parts]) for f in fields})
            return p + t.length
        # Rows of every run, reordered once so that each cell's rows are one slice (a view).
        per = sum(c for c, _ in parts)
        starts = np.cumsum([0] + [n * c for c, _ in parts])[:-1]
        order = np.concatenate([start + np.arange(n)[:, None] * c + np.arange(c)
                                for start, (c, _) in zip(starts, parts)], axis=1).reshape(-1)
        rows = {f: np.concatenate([r[f] for _, r in parts])[order] for f in fields}
        for k, cell in enumerate(cells):
            cell.refs = _Refs(**{f: v[k * per:(k + 1) * per] for f, v in rows.items()})
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


