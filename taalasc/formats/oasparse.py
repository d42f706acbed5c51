"""Our own OASIS reader, vectorised like the GDSII one, for fast mask read-back.

It gives the GdsLibrary of formats/gdsread.py (cells of rectangles per layer, and
references), so flattening (gdsflat.py), extraction, verify, simulate-from-folder and sign-off
take one code path after parsing, whatever the format.

Where the time goes and how it is saved. A reticle die file holds ~2,000 tile cells, each a
CBLOCK of ~1,700 chunk placements, in about a dozen record layouts (one per number of used
sites). A CBLOCK whose inflated bytes have the record layout of one decoded before - the same
record and info bytes at the same places and varints of the same lengths, which one numpy
comparison tells - is decoded without a Python loop: its fields are gathered by position,
and OASIS's modal variables (relative coordinates, fields left out) are filled in with
cumulative sums (formats/oaslayout.py). Such CBLOCKs are decoded 64 at a time. Runs of
records with the same record and info byte (a cell's vias, a row of placements) are found
with one numpy pass over the bytes that end varints and decoded the same way. Every other
record - names, texts, properties, repetitions, polygons, paths - is read one at a time in
Python (oasread.Cursor and its grammar).

Untrusted input: pure Python and numpy, so a damaged file is one MaskError line naming the
file and the byte where reading stopped (inside a CBLOCK: the CBLOCK's): truncation, bad
varints, unknown records, modal variables used before they are set, missing or twice
defined cells, reference cycles, several top cells, CBLOCKs over MAX_RECORD_BYTES,
coordinates beyond ±2^40 database units, expansions beyond safe_read.MAX_SHAPES. The magic,
START, END and its CRC/checksum are checked first (safe_read.check_oas).

Shapes as gdsread treats them: rectangles are read (RECTANGLE, and POLYGON, TRAPEZOID and
CTRAPEZOID that are axis-parallel rectangles); any other polygon, trapezoid, path or circle
is refused with one line, unless ``keep`` asks for them (``OasisCell.others``, for tools and
tests that look at whole layouts). TEXT carries no geometry (kept with ``keep``).
References: 90° steps with x reflection at magnification 1, every repetition type (lattices
kept as arrays, explicit offsets as one reference each). XNAME, XELEMENT, XGEOMETRY and
PROPERTY records are read and left out.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.errors import MaskError
from taalasc.formats.gdsflat import check_counts
from taalasc.formats.gdsread import GdsCell, GdsLibrary, Layer, _Refs, library_of
from taalasc.formats.oaslayout import (COORD_LIMIT, LAYOUT_RECORDS, MODAL, Layout, Template,
                                       decode, run_layout, scan, simple_slots)
from taalasc.formats.oasread import (MAX_RECORD_BYTES, Cursor, Repetition, path_extensions,
                                     point_list, property_values, read_start, repetition)
from taalasc.formats.safe_read import MAX_SHAPES, check_oas

_BATCH = 64                # CBLOCKs of one layout decoded at once
_COORDS = {"px", "py", "gx", "gy"}   # modal values that may be negative
_END_BYTES = 256
# Records that end a cell (names, CELL, END): a CBLOCK followed by one needs no modal state
# after it, so it may wait to be decoded with others of its layout.
_CELL_ENDERS = frozenset(range(2, 15)) | {30, 31}


@dataclass(frozen=True)
class Shape:
    """A shape other than a rectangle, kept by ``read_oas(keep=True)``, in nm: a polygon
    (``points`` its vertices), a path (its spine, ``half_width`` and ``extensions``), a
    circle (its centre, ``half_width`` the radius) or a text (its anchor, ``text``; ``layer``
    is (textlayer, texttype))."""
    kind: str
    layer: Layer
    points: np.ndarray
    half_width: int = 0
    extensions: tuple[int, int] = (0, 0)
    text: str = ""


@dataclass
class OasisCell(GdsCell):
    others: list[Shape] = field(default_factory=list)   # only with keep


def read_oas(path: Path, allowed: set[Layer] | None = None, keep: bool = False) -> GdsLibrary:
    """Parse the OASIS file ``path`` into cells of rectangles and references (nm), checking
    every record (see the module docstring). MaskError for anything unreadable or outside
    what gdsread reads: a non-rectangular shape (unless ``keep``), a layer outside
    ``allowed``, a magnified or freely rotated reference, a missing cell, a cycle, several
    top cells, more than MAX_SHAPES shapes."""
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: no such mask file")
    check_oas(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MaskError(f"{path}: cannot read mask file ({exc.strerror or exc})") from None
    lib = _Reader(raw, path, allowed, keep).read()
    check_counts(lib)
    return lib


# --- modal state and what a cell has read ---------------------------------------------------

class _Modal:
    """OASIS's modal variables (spec section 10), reset by every CELL record; None: not set.
    ``pcell`` holds a cell id; ``text`` a string or ("#", reference number)."""
    __slots__ = ("absolute", "px", "py", "pcell", "gx", "gy", "tx", "ty", "layer", "datatype",
                 "w", "h", "textlayer", "texttype", "text", "polygon", "half_width", "start_ext",
                 "end_ext", "spine", "ctrapezoid", "radius", "repetition", "property")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.absolute = True
        self.px = self.py = self.gx = self.gy = self.tx = self.ty = 0
        self.pcell = self.layer = self.datatype = self.w = self.h = None
        self.textlayer = self.texttype = self.text = self.polygon = self.half_width = None
        self.start_ext = self.end_ext = self.spine = self.ctrapezoid = self.radius = None
        self.repetition = None
        self.property = False


@dataclass
class _Parts:
    """One cell's rectangles and references so far: numpy parts (runs, CBLOCKs) and rows read
    one record at a time (turned into a part when the cell is finished)."""
    rects: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (keys, boxes)
    refs: list[tuple] = field(default_factory=list)           # _Refs fields, in order
    rect_rows: list[tuple] = field(default_factory=list)      # (key, x0, y0, x1, y1)
    ref_rows: list[tuple] = field(default_factory=list)       # (child, x, y, reflect, quarter,
                                                              #  cols, rows, csx, csy, rsx, rsy)
    others: list[Shape] = field(default_factory=list)


# --- the reader ------------------------------------------------------------------------------

class _Reader:
    def __init__(self, raw: bytes, path: Path, allowed: set[Layer] | None, keep: bool):
        self.raw, self.path, self.allowed, self.keep = raw, path, allowed, keep
        self.cells: list[OasisCell] = []
        self.parts: list[_Parts | None] = []     # None until the cell's CELL record
        self.ids: dict[str, int] = {}
        self.num_names: dict[int, str] = {}      # CELLNAME reference number -> name
        self.num_ids: dict[int, int] = {}        # numbers used before their CELLNAME
        self.num_table = np.zeros(0, np.int64)   # by_number of small numbers, -1: not asked
        self.alias: dict[int, int] = {}          # such a cell -> the cell of its name
        self.implicit = {3: 0, 5: 0, 7: 0, 9: 0, 30: 0}   # next implicit reference numbers
        self.numbering: dict[int, str] = {}      # name record pair -> "implicit"/"explicit"
        self.texts: dict[int, str] = {}
        self.text_nums: set[int] = set()
        self.state = _Modal()
        self.current: int | None = None
        self.at = 0                              # file offset of the record being read
        self.in_block = False
        self.rows = 0                            # shapes and references kept
        self.templates: dict[int, list[Template]] = {}
        self.pending: dict[int, tuple[Template, list]] = {}   # id(template) -> queued
        self.run_cooldown = 0

    # errors ----------------------------------------------------------------------------------
    def fail(self, what: str) -> MaskError:
        where = f"in the CBLOCK at byte {self.at:,}" if self.in_block else f"at byte {self.at:,}"
        return MaskError(f"{self.path}: cannot read mask file ({what}, {where})")

    def name(self, k: int) -> str:
        return self.cells[k].name

    def cell_error(self, what: str, k: int | None = None) -> MaskError:
        return MaskError(f"{self.path}: cell {self.name(self.current if k is None else k)!r} "
                         f"{what}")

    def budget(self, n: int) -> None:
        self.rows += n
        if self.rows > MAX_SHAPES:
            raise MaskError(f"{self.path}: the file holds more than {MAX_SHAPES} shapes and "
                            f"references with its repetitions expanded; at most {MAX_SHAPES} "
                            "shapes are read")

    # cells -----------------------------------------------------------------------------------
    def new_id(self, name: str) -> int:
        self.cells.append(OasisCell(name))
        self.parts.append(None)
        return len(self.cells) - 1

    def by_name(self, name: str) -> int:
        k = self.ids.get(name)
        if k is None:
            k = self.ids[name] = self.new_id(name)
        return k

    def by_number(self, number: int) -> int:
        name = self.num_names.get(number)
        if name is not None:
            return self.by_name(name)
        k = self.num_ids.get(number)
        if k is None:
            k = self.num_ids[number] = self.new_id(f"#{number}")
        return k

    def ids_of(self, numbers: np.ndarray) -> np.ndarray:
        """Cell ids of PLACEMENT reference numbers (any shape), through a table of the
        numbers below 2**20 (by_number's answer for a number never changes: a cell used by
        number before its CELLNAME keeps its id, aliased at the end if need be)."""
        if not numbers.size:
            return numbers
        top = int(numbers.max())
        if top >= 1 << 20:
            values, inverse = np.unique(numbers, return_inverse=True)
            ids = np.array([self.by_number(int(v)) for v in values], np.int64)
            return ids[inverse.reshape(-1)].reshape(numbers.shape)
        if top >= len(self.num_table):
            grown = np.full(max(top + 1, 2 * len(self.num_table)), -1, np.int64)
            grown[:len(self.num_table)] = self.num_table
            self.num_table = grown
        ids = self.num_table[numbers]
        if (ids < 0).any():
            for v in np.unique(numbers[ids < 0]).tolist():
                self.num_table[v] = self.by_number(v)
            ids = self.num_table[numbers]
        return ids

    def cellname(self, name: str, number: int) -> None:
        if number in self.num_names:
            raise ValueError(f"cell reference number {number} is named twice")
        self.num_names[number] = name
        k = self.num_ids.pop(number, None)
        if k is None:
            return
        if name in self.ids:            # the name was used on its own before: one cell
            self.alias[k] = self.ids[name]
        else:
            self.ids[name] = k
            self.cells[k].name = name

    def begin_cell(self, k: int) -> None:
        self.end_cell()
        if self.parts[k] is not None:
            raise MaskError(f"{self.path}: cell {self.name(k)!r} is defined twice")
        self.parts[k] = _Parts()
        self.current = k
        self.state.reset()

    def end_cell(self) -> None:
        self.current = None
        self.state.reset()

    # the record loop -------------------------------------------------------------------------
    def read(self) -> GdsLibrary:
        raw = self.raw
        try:
            unit, _, start = read_start(raw[:4096])
        except (ValueError, IndexError):
            raise MaskError(f"{self.path}: cannot read mask file (no OASIS START record)") from None
        if not (unit > 0 and math.isfinite(unit)):
            raise MaskError(f"{self.path}: cannot read mask file (database unit {unit} per µm)")
        body = memoryview(raw)[:len(raw) - _END_BYTES]   # END (check_oas) fills the last 256
        self.at = start
        self.records(Cursor(body, start), top=True)
        for key in list(self.pending):
            self.flush(key)
        return self.library(1000.0 / unit)

    def records(self, c: Cursor, top: bool) -> None:
        data = c.data
        same, last_key = 0, None
        while c.pos < len(data):
            self.at = c.pos if top else self.at
            start = c.pos
            try:
                rid = c.uint()
                if rid in (17, 20) and self.current is not None:
                    key = data[start:start + 2]
                    same = same + 1 if key == last_key else 0
                    last_key = key
                    if same >= 3 and self.try_run(c, start, rid):
                        same = 0
                        continue
                    self.placement(c, rid) if rid == 17 else self.rectangle(c)
                    continue
                last_key = None
                self.record(c, rid, top)
            except IndexError:
                raise self.fail("a record is cut short: truncated?") from None
            except (ValueError, OverflowError) as exc:
                raise self.fail(str(exc)) from None

    def record(self, c: Cursor, rid: int, top: bool) -> None:
        s = self.state
        if rid == 0:
            return
        if rid in (15, 16):
            self.need_cell(rid)
            s.absolute = rid == 15
        elif rid in (13, 14):
            self.begin_cell(self.by_number(c.uint()) if rid == 13 else self.by_name(_text(c)))
        elif 3 <= rid <= 12 or rid in (30, 31):
            self.end_cell()
            self.name_record(c, rid)
        elif rid in (17, 20):
            self.need_cell(rid)
            self.placement(c, rid) if rid == 17 else self.rectangle(c)
        elif rid == 18:
            self.need_cell(rid)
            self.placement(c, rid)
        elif rid == 19:
            self.need_cell(rid)
            self.text(c)
        elif 21 <= rid <= 27:
            self.need_cell(rid)
            self.shape(c, rid)
        elif rid in (28, 29):
            self.property(c, rid)
        elif rid == 32:
            self.need_cell(rid)
            c.uint()
            c.string()
        elif rid == 33:
            self.need_cell(rid)
            self.xgeometry(c)
        elif rid == 34:
            if not top:
                raise ValueError("a CBLOCK inside a CBLOCK")
            self.cblock(c)
        elif rid in (1, 2):
            raise ValueError(f"OASIS record type {rid} ({('START', 'END')[rid - 1]}) "
                             "inside the file")
        else:
            raise ValueError(f"unknown OASIS record type {rid}")

    def need_cell(self, rid: int) -> None:
        if self.current is None:
            raise ValueError(f"OASIS record type {rid} outside a cell")

    def name_record(self, c: Cursor, rid: int) -> None:
        """CELLNAME, TEXTSTRING, PROPNAME, PROPSTRING (implicit or explicit reference
        numbers; a file may not mix the two for one kind), LAYERNAME, XNAME."""
        if rid in (11, 12):                   # LAYERNAME: a name, then two intervals
            c.string()
            for _ in range(2):
                kind = c.uint()
                if kind > 4:
                    raise ValueError(f"unknown OASIS interval type {kind}")
                for _ in range({0: 0, 4: 2}.get(kind, 1)):
                    c.uint()
            return
        first = rid - 1 if rid in (4, 6, 8, 10, 31) else rid   # the kind's implicit record id
        if rid == 30 or rid == 31:
            c.uint()                          # XNAME attribute
        text = c.string()
        mode = "implicit" if rid == first else "explicit"
        if self.numbering.setdefault(first, mode) != mode:
            raise ValueError("implicit and explicit reference numbers mixed in one name table")
        if mode == "implicit":
            number = self.implicit[first]
            self.implicit[first] += 1
        else:
            number = c.uint()
        if first == 3:
            self.cellname(_nstring(text), number)
        elif first == 5:
            if number in self.texts:
                raise ValueError(f"text string reference number {number} is defined twice")
            self.texts[number] = _nstring(text)

    def property(self, c: Cursor, rid: int) -> None:
        s = self.state
        if rid == 29:
            if not s.property:
                raise ValueError("a PROPERTY record repeats no earlier PROPERTY")
            return
        info = c.byte()
        if info & 0x04:
            c.uint() if info & 0x02 else c.string()
        elif not s.property:
            raise ValueError("a PROPERTY record without a name, and none before it")
        if info & 0x08:
            if not s.property:
                raise ValueError("a PROPERTY record reuses values, and none came before it")
        else:
            property_values(c, info)
        s.property = True

    # elements read in Python -----------------------------------------------------------------
    def xy(self, c: Cursor, info: int, x_bit: int, y_bit: int, x: int, y: int
           ) -> tuple[int, int]:
        absolute = self.state.absolute
        if info & x_bit:
            v = c.sint()
            x = v if absolute else x + v
        if info & y_bit:
            v = c.sint()
            y = v if absolute else y + v
        if not (-COORD_LIMIT < x < COORD_LIMIT and -COORD_LIMIT < y < COORD_LIMIT):
            raise ValueError(f"a coordinate beyond ±{COORD_LIMIT} database units")
        return x, y

    def repeat(self, c: Cursor, info: int, bit: int) -> Repetition | None:
        if not info & bit:
            return None
        rep = repetition(c)
        if rep is None:                     # type 0: the last one again
            rep = self.state.repetition
            if rep is None:
                raise ValueError("a repetition of type 0, and none before it in the cell")
        extent = (rep.cols - 1) * max(map(abs, rep.col_step)) + \
            (rep.rows - 1) * max(map(abs, rep.row_step))
        if extent >= COORD_LIMIT:   # offsets and their sums must stay well inside int64
            raise ValueError(f"a repetition spanning beyond {COORD_LIMIT} database units")
        if rep.offsets is not None and len(rep.offsets) and \
                np.abs(rep.offsets).max() >= COORD_LIMIT:
            raise ValueError(f"a repetition offset beyond ±{COORD_LIMIT} database units")
        self.state.repetition = rep
        return rep

    def placement(self, c: Cursor, rid: int) -> None:
        s = self.state
        info = c.byte()
        if info & 0x80:
            s.pcell = self.by_number(c.uint()) if info & 0x40 else self.by_name(_text(c))
        elif s.pcell is None:
            raise ValueError("a PLACEMENT of the last cell, and none before it in the cell")
        flip = bool(info & 0x01)
        if rid == 18:
            mag = c.real() if info & 0x04 else 1.0
            angle = c.real() if info & 0x02 else 0.0
            if mag != 1.0:
                raise self.cell_error("has a placement with magnification other than 1; only "
                                      "90° steps at 1x are supported")
            turns = angle / 90.0
            if not (abs(turns) < 1e6 and abs(turns - round(turns)) <= 1e-9):
                raise self.cell_error("has a placement rotated by a non-multiple of 90 degrees;"
                                      " only 90° steps at 1x are supported")
            quarter = round(turns) % 4
        else:
            quarter = (info >> 1) & 3
        s.px, s.py = self.xy(c, info, 0x20, 0x10, s.px, s.py)
        rep = self.repeat(c, info, 0x08)
        rows = self.parts[self.current].ref_rows
        if rep is None or rep.offsets is None:
            rep = rep or Repetition()
            self.budget(1)
            rows.append((s.pcell, s.px, s.py, flip, quarter, rep.cols, rep.rows,
                         *rep.col_step, *rep.row_step))
        else:
            self.budget(len(rep.offsets))
            for dx, dy in rep.offsets.tolist():
                rows.append((s.pcell, s.px + dx, s.py + dy, flip, quarter, 1, 1, 0, 0, 0, 0))

    def geometry_layer(self, c: Cursor, info: int) -> Layer:
        s = self.state
        if info & 0x01:
            s.layer = c.uint()
        if info & 0x02:
            s.datatype = c.uint()
        return s.layer, s.datatype

    def rectangle(self, c: Cursor) -> None:
        s = self.state
        info = c.byte()
        self.geometry_layer(c, info)
        if info & 0x40:
            s.w = c.uint()
        if info & 0x80:                     # a square: height = width
            if info & 0x20:
                raise ValueError("a square RECTANGLE with a height")
            s.h = s.w
        elif info & 0x20:
            s.h = c.uint()
        s.gx, s.gy = self.xy(c, info, 0x10, 0x08, s.gx, s.gy)
        rep = self.repeat(c, info, 0x04)
        for name in ("layer", "datatype", "w", "h"):
            if getattr(s, name) is None:
                raise ValueError(f"a RECTANGLE uses modal variable {name} before it is set")
        self.add_rect(s.gx, s.gy, s.gx + s.w, s.gy + s.h, rep)

    def add_rect(self, x0: int, y0: int, x1: int, y1: int, rep: Repetition | None) -> None:
        s = self.state
        layer = self.layer(s.layer, s.datatype)
        if x1 <= x0 or y1 <= y0 or max(abs(x1), abs(y1)) >= COORD_LIMIT:
            if x1 <= x0 or y1 <= y0:
                raise self.cell_error(f"has a non-rectangular shape on {layer[0]}/{layer[1]} "
                                      f"near {[x0, y0]} nm")
            raise ValueError(f"a coordinate beyond ±{COORD_LIMIT} database units")
        key = layer[0] << 32 | layer[1]
        parts = self.parts[self.current]
        if rep is None:
            self.budget(1)
            parts.rect_rows.append((key, x0, y0, x1, y1))
            return
        self.budget(rep.size)               # checked before the lattice is expanded
        at = rep.positions()
        box = np.tile(at, 2) + np.array([x0, y0, x1, y1], np.int64)
        parts.rects.append((np.full(len(box), key, np.int64), box))

    def layer(self, layer: int, datatype: int, k: int | None = None) -> Layer:
        if layer >= 1 << 31 or datatype >= 1 << 31:
            raise ValueError(f"layer {layer}/{datatype} is beyond 2**31")
        if self.allowed is not None and (layer, datatype) not in self.allowed:
            raise self.cell_error(f"has a shape on layer {layer}/{datatype}; only "
                                  f"{sorted(self.allowed)} may appear", k)
        return layer, datatype

    def text(self, c: Cursor) -> None:
        s = self.state
        info = c.byte()
        if info & 0x40:
            if info & 0x20:
                number = c.uint()
                self.text_nums.add(number)
                s.text = ("#", number)
            else:
                s.text = _text(c)
        elif s.text is None:
            raise ValueError("a TEXT uses modal variable text-string before it is set")
        if info & 0x01:
            s.textlayer = c.uint()
        if info & 0x02:
            s.texttype = c.uint()
        s.tx, s.ty = self.xy(c, info, 0x10, 0x08, s.tx, s.ty)
        rep = self.repeat(c, info, 0x04)
        if s.textlayer is None or s.texttype is None:
            raise ValueError("a TEXT uses modal variable textlayer/texttype before it is set")
        if self.keep:
            self.keep_shapes("text", (s.textlayer, s.texttype),
                             np.array([[s.tx, s.ty]], np.int64), rep, text=s.text)

    def shape(self, c: Cursor, rid: int) -> None:
        """POLYGON (21), PATH (22), TRAPEZOID (23-25), CTRAPEZOID (26), CIRCLE (27)."""
        s = self.state
        info = c.byte()
        self.geometry_layer(c, info)
        if rid == 21:
            if info & 0x20:
                s.polygon = point_list(c, polygon=True)
            pts = self.need(s.polygon, "polygon-point-list")
        elif rid == 22:
            if info & 0x40:
                s.half_width = c.uint()
            if info & 0x80:
                for end, (kind, value) in zip(("start_ext", "end_ext"), path_extensions(c)):
                    if kind == 2:
                        value = self.need(s.half_width, "path-halfwidth")
                    if kind:
                        setattr(s, end, 0 if kind == 1 else value)
            if info & 0x20:
                s.spine = point_list(c, polygon=False)
            pts = self.need(s.spine, "path-point-list")
        elif rid <= 26:
            if rid == 26 and info & 0x80:
                s.ctrapezoid = c.uint()
            if info & 0x40:
                s.w = c.uint()
            if info & 0x20:
                s.h = c.uint()
            if rid == 26:
                pts = self.ctrapezoid(self.need(s.ctrapezoid, "ctrapezoid-type"))
            else:
                da = c.sint() if rid in (23, 24) else 0
                db = c.sint() if rid in (23, 25) else 0
                pts = _trapezoid(self.need(s.w, "geometry-w"), self.need(s.h, "geometry-h"),
                                 da, db, bool(info & 0x80))
        else:
            if info & 0x20:
                s.radius = c.uint()
            pts = np.zeros((1, 2), np.int64)
        s.gx, s.gy = self.xy(c, info, 0x10, 0x08, s.gx, s.gy)
        rep = self.repeat(c, info, 0x04)
        layer = self.layer(self.need(s.layer, "layer"), self.need(s.datatype, "datatype"))
        if len(pts) and np.abs(pts).max() >= COORD_LIMIT:
            raise ValueError(f"a coordinate beyond ±{COORD_LIMIT} database units")
        pts = pts + np.array([s.gx, s.gy], np.int64)
        if rid == 21 or 23 <= rid <= 26:
            box = _box(pts)
            if box is not None:
                self.add_rect(*box, rep)
            elif self.keep:
                self.keep_shapes("polygon", layer, pts, rep)
            else:
                raise self.cell_error(f"has a non-rectangular shape on {layer[0]}/{layer[1]} "
                                      f"near {pts.min(axis=0).tolist()} nm"
                                      if len(pts) == 4 or rid != 21 else
                                      f"has a {len(_vertices(pts))}-point polygon; only "
                                      "rectangles allowed")
        elif not self.keep:
            raise self.cell_error("holds paths; taalasc masks use rectangles" if rid == 22 else
                                  "holds a CIRCLE element; taalasc masks use rectangles and "
                                  "references")
        elif rid == 22:
            ends = (self.need(s.start_ext, "path-start-extension"),
                    self.need(s.end_ext, "path-end-extension"))
            self.keep_shapes("path", layer, pts, rep, s.half_width, ends)
        else:
            self.keep_shapes("circle", layer, pts, rep, self.need(s.radius, "circle-radius"))

    def ctrapezoid(self, kind: int) -> np.ndarray:
        """CTRAPEZOID vertices; sets geometry-w/h to the shape's extent."""
        s = self.state
        if kind >= len(_CTRAPEZOIDS):
            raise ValueError(f"unknown CTRAPEZOID type {kind}")
        table = np.array(_CTRAPEZOIDS[kind], np.int64).reshape(-1, 4)
        w = s.w if s.w is not None else (0 if not table[:, [0, 2]].any() else None)
        h = s.h if s.h is not None else (0 if not table[:, [1, 3]].any() else None)
        w, h = self.need(w, "geometry-w"), self.need(h, "geometry-h")
        pts = np.stack([table[:, 0] * w + table[:, 1] * h, table[:, 2] * w + table[:, 3] * h],
                       axis=1)
        s.w, s.h = int(pts[:, 0].max()), int(pts[:, 1].max())
        return pts

    def need(self, value, name: str):
        if value is None:
            raise ValueError(f"a record uses modal variable {name} before it is set")
        return value

    def keep_shapes(self, kind: str, layer: Layer, pts: np.ndarray, rep: Repetition | None,
                    half_width: int = 0, ends=(0, 0), text="") -> None:
        at = rep.positions() if rep is not None else np.zeros((1, 2), np.int64)
        self.budget(len(at) * max(len(pts), 1))
        others = self.parts[self.current].others
        for dx, dy in at.tolist():
            others.append(Shape(kind, layer, pts + np.array([dx, dy], np.int64), half_width,
                                tuple(ends), text))

    def xgeometry(self, c: Cursor) -> None:
        s = self.state
        info = c.byte()
        c.uint()
        self.geometry_layer(c, info)
        c.string()
        s.gx, s.gy = self.xy(c, info, 0x10, 0x08, s.gx, s.gy)
        self.repeat(c, info, 0x04)

    # CBLOCKs and runs, decoded by numpy ---------------------------------------------------------
    def cblock(self, c: Cursor) -> None:
        if c.uint() != 0:
            raise ValueError("a CBLOCK of a compression type other than deflate")
        size, packed = c.uint(), c.uint()
        if size > MAX_RECORD_BYTES:
            raise ValueError(f"a CBLOCK of {size:,} bytes inflated (at most {MAX_RECORD_BYTES:,})")
        inflate = zlib.decompressobj(-15)
        try:
            data = inflate.decompress(c.skip(packed), size + 1)
        except zlib.error as exc:
            raise ValueError(f"a CBLOCK does not inflate ({exc})") from None
        if len(data) != size or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
            raise ValueError("a CBLOCK does not inflate to its declared size")
        if self.current is not None and size:
            t = self.template(data)
            if t is not None:
                self.queue(t, np.frombuffer(data, np.uint8), _ends_cell(c))
                return
        self.in_block = True
        self.records(Cursor(data), top=False)
        self.in_block = False

    def template(self, data: bytes) -> Template | None:
        known = self.templates.setdefault(len(data), [])
        view = np.frombuffer(data, np.uint8)
        for t in known:
            if t.absolute == self.state.absolute and t.matches(view):
                return t
        t = scan(data, self.state.absolute)
        if t is not None:
            known.insert(0, t)
            del known[4:]           # a few layouts per length: tiles of equal size
        return t

    def start_values(self) -> tuple:
        """The modal variables a numpy stretch starts from (oaslayout.MODAL; -1: not set,
        which a coordinate never is; a cell id for the cell)."""
        return tuple(-1 if v is None else v for v in (getattr(self.state, n) for n in MODAL))

    def queue(self, t: Template, data: np.ndarray, deferrable: bool) -> None:
        """Decode a CBLOCK of template ``t`` now, or - when the cell ends after it, so that
        no later record needs the modal variables it leaves - with the next ones of ``t``."""
        key = id(t)
        entry = self.pending.setdefault(key, (t, []))
        entry[1].append((self.current, data, self.start_values(), self.at))
        if not deferrable:
            self.set_end(*self.flush(key))
        elif len(entry[1]) >= _BATCH:
            self.flush(key)

    def flush(self, key: int) -> tuple[list[int], bool]:
        """Decode the CBLOCKs queued for one template in one batch; the modal values after
        the last. A damaged one is found by decoding them one by one."""
        t, items = self.pending.pop(key)
        here, rows, self.in_block = self.at, self.rows, True
        try:
            try:
                return self.decode_items(t, items)
            except (ValueError, MaskError):
                self.rows = rows
                for item in items:
                    self.at = item[3]
                    try:
                        self.decode_items(t, [item])
                    except ValueError as exc:
                        raise self.fail(str(exc)) from None
                raise
        finally:
            self.at, self.in_block = here, False

    def decode_items(self, t: Template, items: list) -> tuple[list[int], bool]:
        rows = np.stack([d for _, d, _, _ in items])
        start = np.array([v for _, _, v, _ in items], np.int64).reshape(len(items), -1)
        return self.decode(t.layout, rows, t.absolute, start, [k for k, _, _, _ in items])

    def set_end(self, end: list[int], absolute: bool) -> None:
        """Modal values after a stretch decoded by numpy (-1: still not set)."""
        for name, v in zip(MODAL, end):
            setattr(self.state, name, None if v < 0 and name not in _COORDS else v)
        self.state.absolute = absolute

    def try_run(self, c: Cursor, start: int, rid: int) -> bool:
        """Decode the run of records like the one at ``start`` with numpy; False when it is
        short (then a while passes before the next try)."""
        if self.run_cooldown:
            self.run_cooldown -= 1
            return False
        data = c.data
        info = data[start + 1]
        slots = simple_slots(rid, info)
        if slots is None:
            return False
        view = np.frombuffer(data, np.uint8)
        window = 4096
        while True:
            stop = min(start + window, len(data))
            found = run_layout(view[start:stop], rid, info, slots)
            if found is None or not found[1] or stop == len(data):
                break
            window *= 4
        if found is None or len(found[0].rid) < 16 or len(found[0].rid) > LAYOUT_RECORDS:
            self.run_cooldown = 64
            return False
        layout = found[0]
        self.set_end(*self.decode(layout, view[start:start + layout.length][None, :],
                                  self.state.absolute,
                                  np.array([self.start_values()], np.int64), [self.current]))
        c.pos = start + layout.length
        return True

    def decode(self, layout: Layout, rows: np.ndarray, absolute: bool, start: np.ndarray,
               cells: list[int]) -> tuple[list[int], bool]:
        """Decode a stretch of records (oaslayout.decode; row b of ``rows`` in cell
        ``cells[b]``) into the cells' parts; the modal values and xy mode after it."""
        got = decode(layout, rows, absolute, start, self.ids_of)
        self.budget(got.child.size + got.keys.size)
        m = got.child.shape[1]
        one, zero = np.ones(m, np.int64), np.zeros((m, 2), np.int64)
        for b, k in enumerate(cells):
            if m:
                self.parts[k].refs.append((got.child[b], got.origin[b], got.reflect,
                                           got.quarter, one, one, zero, zero))
            if got.keys.shape[1]:
                self.check_rects(got.keys[b], got.boxes[b], k)
                self.parts[k].rects.append((got.keys[b], got.boxes[b]))
        return got.end, got.absolute

    def check_rects(self, keys: np.ndarray, box: np.ndarray, cell: int) -> None:
        """Layers (as read one by one: beyond 2**31, outside ``allowed``) and empty boxes."""
        bad = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
        for key in np.unique(keys).tolist():
            self.layer(key >> 32, key & 0xFFFFFFFF, cell)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.cell_error(f"has a non-rectangular shape on {keys[i] >> 32}/"
                                  f"{keys[i] & 0xFFFFFFFF} near {box[i, :2].tolist()} nm", cell)

    # the library ------------------------------------------------------------------------------
    def library(self, nm_per_unit: float) -> GdsLibrary:
        if self.num_ids:
            number = min(self.num_ids)
            raise MaskError(f"{self.path}: cell reference number {number} has no CELLNAME record")
        missing = sorted(set(self.text_nums) - set(self.texts))
        if missing:
            raise MaskError(f"{self.path}: text string reference number {missing[0]} has no "
                            "TEXTSTRING record")
        # Cells used by number before their CELLNAME named a cell used by name: one cell.
        remap = np.arange(len(self.cells), dtype=np.int64)
        for k, target in self.alias.items():
            if self.parts[k] is not None and self.parts[target] is not None:
                raise MaskError(f"{self.path}: cell {self.name(target)!r} is defined twice")
            if self.parts[k] is not None:
                self.parts[target], self.parts[k] = self.parts[k], None
            remap[k] = target
        keep = np.ones(len(self.cells), bool)
        keep[list(self.alias)] = False
        new_id = np.cumsum(keep) - 1
        remap = new_id[remap]
        missing = [self.name(k) for k in np.flatnonzero(keep) if self.parts[k] is None]
        if missing:
            raise MaskError(f"{self.path}: a cell references missing cell {missing[0]!r} "
                            f"({len(missing)} such cells)")
        cells = []
        for k in np.flatnonzero(keep).tolist():
            cells.append(self.finish(k, remap, nm_per_unit))
        return library_of(self.path, cells)

    def finish(self, k: int, remap: np.ndarray, nm_per_unit: float) -> OasisCell:
        """Cell ``k`` with its parts joined, children renumbered, coordinates in nm."""
        cell, parts = self.cells[k], self.parts[k]
        self.parts[k] = None                  # what it held is now the cell's
        self.current = k
        scale = (lambda a: self.to_nm(a, nm_per_unit)) if nm_per_unit != 1.0 else (lambda a: a)
        rects = list(parts.rects)
        if parts.rect_rows:
            rows = np.array(parts.rect_rows, np.int64)
            rects.append((rows[:, 0], rows[:, 1:]))
        if rects:
            keys = np.concatenate([r[0] for r in rects])
            boxes = scale(np.concatenate([r[1] for r in rects]))
            for key in np.unique(keys).tolist():
                cell.rects[(key >> 32, key & 0xFFFFFFFF)] = boxes[keys == key]
        refs = list(parts.refs)
        if parts.ref_rows:
            r = np.array(parts.ref_rows, np.int64)
            refs.append((r[:, 0], r[:, 1:3], r[:, 3] != 0, r[:, 4], r[:, 5], r[:, 6], r[:, 7:9],
                         r[:, 9:11]))
        if refs:   # one part (a tile's CBLOCK) is kept as it is: views of its batch
            child, origin, reflect, quarter, cols, rows_, col_step, row_step = (
                refs[0][f] if len(refs) == 1 else np.concatenate([r[f] for r in refs])
                for f in range(8))
            cell.refs = _Refs(remap[child], scale(origin), reflect.astype(bool, copy=False),
                              quarter, cols, rows_, scale(col_step), scale(row_step))
        if parts.others:
            cell.others = [Shape(o.kind, o.layer, scale(o.points),
                                 int(scale(np.array([o.half_width]))[0]),
                                 tuple(scale(np.array(o.extensions)).tolist()),
                                 self.texts.get(o.text[1], "") if isinstance(o.text, tuple)
                                 else o.text) for o in parts.others]
        return cell

    def to_nm(self, values: np.ndarray, nm_per_unit: float) -> np.ndarray:
        scaled = np.asarray(values, np.int64) * nm_per_unit
        out = np.rint(scaled).astype(np.int64)
        if np.abs(scaled - out).max(initial=0) > 1e-6:
            raise MaskError(f"{self.path}: cell {self.name(self.current)!r} has coordinates off "
                            f"the 1 nm grid (database unit {nm_per_unit:g} nm)")
        return out


def _ends_cell(c: Cursor) -> bool:
    """Whether the record after ``c`` (PADs skipped) ends the cell, or the file does."""
    data, q = c.data, c.pos
    while q < len(data) and data[q] == 0:
        q += 1
    return q >= len(data) or data[q] in _CELL_ENDERS


def _text(c: Cursor) -> str:
    return _nstring(c.string())


def _nstring(raw: bytes) -> str:
    return bytes(raw).decode("ascii", "replace")


def _vertices(pts: np.ndarray) -> np.ndarray:
    """A closed point list without its closing point."""
    return pts[:-1] if len(pts) > 1 and (pts[0] == pts[-1]).all() else pts


def _box(pts: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) when the vertices are an axis-parallel rectangle of positive area."""
    v = _vertices(pts)
    if len(v) != 4:
        return None
    step = np.diff(np.concatenate([v, v[:1]]), axis=0)
    lo, hi = v.min(axis=0), v.max(axis=0)
    if ((step != 0).sum(axis=1) != 1).any() or (hi == lo).any():
        return None
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _trapezoid(w: int, h: int, da: int, db: int, vertical: bool) -> np.ndarray:
    """TRAPEZOID vertices (spec 7.16): a w x h box with its a and b corners moved in."""
    if vertical:
        pts = [(0, max(da, 0)), (0, h + min(db, 0)), (w, h - max(db, 0)), (w, -min(da, 0))]
    else:
        pts = [(max(da, 0), h), (w + min(db, 0), h), (w - max(db, 0), 0), (-min(da, 0), 0)]
    return np.array(pts, np.int64)


# CTRAPEZOID types 0-25 (spec 7.17): each vertex's x and y as (w, h) coefficients,
# "xw xh yw yh" per vertex.
_CTRAPEZOIDS = [[int(v) for v in row.split()] for row in """
    0 0 0 0  0 0 0 1  1 -1 0 1  1 0 0 0
    0 0 0 0  0 0 0 1  1 0 0 1  1 -1 0 0
    0 0 0 0  0 1 0 1  1 0 0 1  1 0 0 0
    0 1 0 0  0 0 0 1  1 0 0 1  1 0 0 0
    0 0 0 0  0 1 0 1  1 -1 0 1  1 0 0 0
    0 1 0 0  0 0 0 1  1 0 0 1  1 -1 0 0
    0 0 0 0  0 1 0 1  1 0 0 1  1 -1 0 0
    0 1 0 0  0 0 0 1  1 -1 0 1  1 0 0 0
    0 0 0 0  0 0 0 1  1 0 -1 1  1 0 0 0
    0 0 0 0  0 0 -1 1  1 0 0 1  1 0 0 0
    0 0 0 0  0 0 0 1  1 0 0 1  1 0 1 0
    0 0 1 0  0 0 0 1  1 0 0 1  1 0 0 0
    0 0 0 0  0 0 0 1  1 0 -1 1  1 0 1 0
    0 0 1 0  0 0 -1 1  1 0 0 1  1 0 0 0
    0 0 0 0  0 0 -1 1  1 0 0 1  1 0 1 0
    0 0 1 0  0 0 0 1  1 0 -1 1  1 0 0 0
    0 0 0 0  0 0 1 0  1 0 0 0
    0 0 0 0  0 0 1 0  1 0 1 0
    0 0 0 0  1 0 1 0  1 0 0 0
    0 0 1 0  1 0 1 0  1 0 0 0
    0 0 0 0  0 1 0 1  0 2 0 0
    0 0 0 1  0 2 0 1  0 1 0 0
    0 0 0 0  0 0 2 0  1 0 1 0
    1 0 0 0  0 0 1 0  1 0 2 0
    0 0 0 0  0 0 0 1  1 0 0 1  1 0 0 0
    0 0 0 0  0 0 1 0  1 0 1 0  1 0 0 0
""".strip().splitlines()]
