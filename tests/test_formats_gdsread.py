"""Our own GDSII reader (taalasc/formats/gdsread.py, gdsflat.py) against gdstk and KLayout.

gdstk and KLayout are the readers we did not write: every library here is built with gdstk
(random hierarchies with rotations, reflections and arrays; a compiled die), flattened by
our reader and by theirs, and the rectangle sets must be equal. Damaged files must give a
MaskError and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import gdstk
import numpy as np
import pytest

from gdstk_ref import VIA, assert_same_rects, gdstk_rects, random_library, sorted_rects
from taalasc.errors import MaskError
from taalasc.formats.gdsflat import flat_rects, iter_layer
from taalasc.formats.gdsread import read_gds



@pytest.fixture(scope="module")
def demo_compile(tmp_path_factory):
    from taalasc.compile import CompileOptions, compile_model
    from taalasc.model.synth import write_demo

    root = tmp_path_factory.mktemp("gdsread")
    write_demo(root / "model")
    compile_model(root / "model", root / "masks", CompileOptions(formats=("gds",)))
    return root / "masks"


@pytest.mark.parametrize("seed", range(12))
def test_random_hierarchies_flatten_like_gdstk(tmp_path, seed):
    path = tmp_path / f"r{seed}.gds"
    random_library(seed).write_gds(path)
    assert_same_rects(flat_rects(read_gds(path)), gdstk_rects(path))


def test_streamed_pieces_and_centres_cover_the_same_vias(demo_compile):
    lib = read_gds(demo_compile / "die0.gds")
    whole = np.concatenate(list(iter_layer(lib, VIA)))
    pieces = list(iter_layer(lib, VIA, batch=20_000))
    assert len(pieces) > 3 and max(len(p) for p in pieces) < len(whole) / 3
    np.testing.assert_array_equal(sorted_rects(np.concatenate(pieces)), sorted_rects(whole))
    centres = np.concatenate(list(iter_layer(lib, VIA, centres=True)))
    expect = np.stack([whole[:, 0] + whole[:, 2], whole[:, 1] + whole[:, 3]], axis=1)
    np.testing.assert_array_equal(centres[np.lexsort(centres.T[::-1])],
                                  expect[np.lexsort(expect.T[::-1])])


def test_a_compiled_die_reads_like_gdstk_and_klayout(demo_compile):
    import klayout.db as kdb

    path = next(Path(demo_compile).glob("die0.gds"))
    ours = flat_rects(read_gds(path))
    assert_same_rects(ours, gdstk_rects(path))
    layout = kdb.Layout()
    layout.read(str(path))
    top = layout.top_cell()
    for layer, rects in ours.items():
        region = kdb.Region(top.begin_shapes_rec(layout.layer(*layer)))
        assert region.count() == len(rects)
        box = region.bbox()
        assert [box.left, box.bottom, box.right, box.top] == [
            int(rects[:, 0].min()), int(rects[:, 1].min()),
            int(rects[:, 2].max()), int(rects[:, 3].max())]
        assert region.area() == int(((rects[:, 2] - rects[:, 0])
                                     * (rects[:, 3] - rects[:, 1])).sum())


def test_a_finer_database_unit_is_scaled_to_nm(tmp_path):
    lib = gdstk.Library(unit=1e-6, precision=1e-10)  # 0.1 nm database unit
    lib.new_cell("TOP").add(gdstk.rectangle((0, 0), (0.8, 0.8), layer=71, datatype=44))
    lib.write_gds(tmp_path / "fine.gds")
    rects = flat_rects(read_gds(tmp_path / "fine.gds"))[VIA]
    assert rects.tolist() == [[0, 0, 800, 800]]
    off = gdstk.Library(unit=1e-6, precision=1e-10)
    off.new_cell("TOP").add(gdstk.rectangle((0, 0), (0.8005, 0.8), layer=71, datatype=44))
    off.write_gds(tmp_path / "off.gds")
    with pytest.raises(MaskError, match="off the 1 nm grid"):
        read_gds(tmp_path / "off.gds")


def test_a_deep_chain_of_cells_is_an_error_not_a_crash(tmp_path):
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    leaf = lib.new_cell("LEAF")
    for k in range(5000):  # above the memo size: every level recurses
        leaf.add(gdstk.rectangle((k * 1600, 0), (k * 1600 + 800, 800), layer=71, datatype=44))
    child = leaf
    for k in range(3000):
        cell = lib.new_cell(f"N{k}")
        cell.add(gdstk.Reference(child, (0, 0)))
        child = cell
    lib.write_gds(tmp_path / "deep.gds")
    with pytest.raises(MaskError, match="deeper"):
        list(iter_layer(read_gds(tmp_path / "deep.gds"), VIA))


def test_every_cut_of_a_file_is_a_mask_error(tmp_path):
    path = tmp_path / "r.gds"
    random_library(3).write_gds(path)
    data = path.read_bytes()
    for cut in range(0, len(data) - 4, max(1, len(data) // 150)):
        (tmp_path / "cut.gds").write_bytes(data[:cut])
        with pytest.raises(MaskError):
            flat_rects(read_gds(tmp_path / "cut.gds"))


def test_flipped_bytes_give_a_mask_error_or_a_library(tmp_path):
    """Random damage: our reader may accept a file (a flipped coordinate is still a file),
    but it must never fail with anything but MaskError."""
    path = tmp_path / "r.gds"
    random_library(4).write_gds(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "MaskError": 0}
    for trial in range(150):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), int(rng.integers(1, 4))):
            damaged[at] = int(rng.integers(0, 256))
        (tmp_path / "bad.gds").write_bytes(bytes(damaged))
        try:
            flat_rects(read_gds(tmp_path / "bad.gds"))
            outcomes["ok"] += 1
        except MaskError as exc:
            assert "\n" not in str(exc)
            outcomes["MaskError"] += 1
    assert outcomes["MaskError"] > 0 and outcomes["ok"] > 0, outcomes


def test_a_die_rewritten_by_klayout_reads_the_same_and_extracts_clean(demo_compile, tmp_path):
    """KLayout's GDS writer orders and encodes records its own way (another writer than ours
    and gdstk's): our reader must give the same shapes as gdstk, and extraction the same
    values, from its file."""
    import shutil

    import klayout.db as kdb

    from taalasc.extract.extract import extract

    copy = tmp_path / "masks"
    shutil.copytree(demo_compile, copy)
    layout = kdb.Layout()
    layout.read(str(demo_compile / "die0.gds"))
    layout.write(str(copy / "die0.gds"))
    assert (copy / "die0.gds").read_bytes() != (demo_compile / "die0.gds").read_bytes()
    assert_same_rects(flat_rects(read_gds(copy / "die0.gds")), gdstk_rects(copy / "die0.gds"))
    ours, theirs = extract(copy, "gds"), extract(demo_compile, "gds")
    assert ours.defect_count == 0 and ours.vias_read == theirs.vias_read
    for name, codes in theirs.codes.items():
        np.testing.assert_array_equal(ours.codes[name], codes)
        np.testing.assert_array_equal(ours.scales[name].view(np.uint16),
                                      theirs.scales[name].view(np.uint16))
