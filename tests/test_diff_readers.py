"""`taalasc diff` reads masks with our own readers; KLayout's XOR is the independent check.

A small compile (GDSII and OASIS), and copies with bits flipped by gdstk (one via moved from
one strap to the other per flip, in chunk cells of tiles edited in place), written in both
formats: the diff's XOR counts must equal KLayout's flat XOR on every layer, whatever the
format on either side, in one batch of differing tiles or many. A die whose two files have
the same bytes is not read at all (compile folders) or once (bare files).
"""

from pathlib import Path

import gdstk
import klayout.db as kdb
import numpy as np
import pytest

import taalasc.diff.core as diff_core
import taalasc.diff.hier as hier
from taalasc.compile import CompileOptions, compile_model
from taalasc.config import load_base_array
from taalasc.custom.names import TILE, parse_chunk
from taalasc.diff import diff_masks
from taalasc.model.synth import llama_config, write_llama


@pytest.fixture(scope="module")
def flipped(tmp_path_factory) -> Path:
    """die0 of a small compile as a.gds / a.oas, and b.gds / b.oas with 7 bits flipped."""
    root = tmp_path_factory.mktemp("readers")
    write_llama(root / "m", llama_config(hidden=32, layers=1, heads=2, kv_heads=1,
                                         intermediate=64, vocab=64))
    compile_model(root / "m", root / "masks", CompileOptions(formats=("gds", "oas")))
    for fmt in ("gds", "oas"):
        (root / f"a.{fmt}").write_bytes((root / "masks" / f"die0.{fmt}").read_bytes())
    half = load_base_array("sky130-demo").weight_tile.site_pitch_y_nm // 2
    lib = gdstk.read_gds(str(root / "a.gds"), unit=1e-9)
    tiles = sorted((c for c in lib.cells if TILE.match(c.name)), key=lambda c: c.name)
    rng = np.random.default_rng(3)
    for k, tile in enumerate(rng.choice(len(tiles), 7, replace=False).tolist()):
        cell = tiles[tile]
        ref = next(r for r in cell.references if parse_chunk(r.cell_name) is not None)
        _, value, _ = parse_chunk(ref.cell_name)
        vias = sorted(ref.cell.polygons, key=lambda p: p.points[:, 0].min())
        # Its first via to the other strap: a 1 sits under the high strap (lower y).
        dy = half if value & 1 else -half
        moved = [gdstk.Polygon(p.points + (0, dy if i == 0 else 0), p.layer, p.datatype)
                 for i, p in enumerate(vias)]
        new = lib.new_cell(f"FLIPPED{k}").add(*moved)
        cell.remove(ref)
        cell.add(gdstk.Reference(new, ref.origin))
    lib.write_gds(str(root / "b.gds"))
    lib.write_oas(str(root / "b.oas"))
    return root


def _klayout_xor(a: Path, b: Path) -> dict[tuple[int, int], int]:
    la, lb = kdb.Layout(), kdb.Layout()
    la.read(str(a))
    lb.read(str(b))
    counts = {}
    for info in la.layer_infos():
        ra = kdb.Region(la.top_cell().begin_shapes_rec(la.layer(info)))
        rb = kdb.Region(lb.top_cell().begin_shapes_rec(lb.layer(info)))
        counts[(info.layer, info.datatype)] = (ra ^ rb).merged().count()
    return counts


def _ours(d) -> dict[tuple[int, int], int]:
    return {t.layer: t.xor_polygons for t in d.layers}


@pytest.mark.parametrize("fa,fb", [("gds", "gds"), ("oas", "oas"), ("gds", "oas")])
def test_counts_equal_klayout_xor(flipped, fa, fb):
    want = _klayout_xor(flipped / f"a.{fa}", flipped / f"b.{fb}")
    d = diff_masks(flipped / f"a.{fa}", flipped / f"b.{fb}")
    got = _ours(d)
    assert want[(71, 44)] == 14                      # 7 flips: 7 vias removed, 7 added
    assert all(got.get(layer, 0) == n for layer, n in want.items()), (got, want)
    assert d.dies[0].refs_skipped > 0                # untouched tiles were not flattened
    flat = diff_masks(flipped / f"a.{fa}", flipped / f"b.{fb}", trust_hashes=False)
    assert [t.to_json() for t in flat.layers] == [t.to_json() for t in d.layers]


def test_tiles_compared_in_many_batches_give_the_same_diff(flipped, monkeypatch):
    one = diff_masks(flipped / "a.gds", flipped / "b.gds")
    monkeypatch.setattr(hier, "PAIR_BATCH", 100)     # about one differing tile per batch
    many = diff_masks(flipped / "a.gds", flipped / "b.gds")
    assert [t.to_json() for t in many.layers] == [t.to_json() for t in one.layers]
    assert [t.to_json() for t in many.tiles] == [t.to_json() for t in one.tiles]


def test_same_bytes_are_not_read(flipped, tmp_path, monkeypatch):
    reads = []
    real = diff_core.load_library
    monkeypatch.setattr(diff_core, "load_library", lambda path: reads.append(path) or real(path))
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in (flipped / "masks").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    for fmt in ("gds", "oas"):
        d = diff_masks(flipped / "masks", copy, fmt=fmt)
        assert d.identical and d.dies[0].same_bytes and reads == []
    # Bare files: read once, for the PDK their layers name (and to refuse a corrupt one).
    (tmp_path / "a2.gds").write_bytes((flipped / "a.gds").read_bytes())
    d = diff_masks(flipped / "a.gds", tmp_path / "a2.gds")
    assert d.identical and d.dies[0].same_bytes and len(reads) == 1
    assert [t.name for t in d.layers] == ["via", "top_metal"]
    assert d.dies[0].extent_nm == diff_masks(flipped / "a.gds", flipped / "b.gds").dies[0].extent_nm


def test_same_bytes_of_a_corrupt_file_still_refused(flipped, tmp_path):
    data = (flipped / "a.gds").read_bytes()
    for name in ("x.gds", "y.gds"):
        (tmp_path / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(Exception, match="cannot read mask file"):
        diff_masks(tmp_path / "x.gds", tmp_path / "y.gds")
