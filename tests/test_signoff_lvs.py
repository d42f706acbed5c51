"""The LVS-style extraction (taalasc.signoff.lvs / sites): every gate input on exactly its
rail, on the custom layers alone and on a merged die, and the four defects issue 15 names
(a strap cut in two, a strap shorted to the other rail, a via landing on nothing, a missing
tie via) plus a deleted via, each found and named by tensor and element or strap.

One small compile (21 tiles, 17,152 bit vias); the merged die is drawn by
tests/signoff_dies.py. Needs the klayout Python package (the `test` extra)."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("klayout.db", reason="the klayout Python package (pip install klayout)")

from corpus.bad_inputs import small_llama  # noqa: E402
from signoff_dies import MET5, VIA4, edit_die, merge, used_tiles  # noqa: E402
from taalasc.compile import CompileOptions, compile_model  # noqa: E402
from taalasc.signoff.lvs import connect_die  # noqa: E402
from taalasc.signoff.run import SignoffOptions, signoff  # noqa: E402
from taalasc.signoff.sites import via_counts  # noqa: E402

# Tile (0, 0), site row 3 (high strap centred at 20.8 um) and row 5; tile-relative nm.
CUT = (MET5, (17300, 19990, 17900, 21610))     # the high strap, between columns 10 and 11
BAR = (MET5, (17300, 21600, 17900, 23200))     # joins the high and low strap of row 3
TIE = (VIA4, (51600, 33200, 52400, 34000))     # the tie via of row 5's high strap
EDITS = {"cut": ("cut", CUT, "strap-cut", r"high strap of site row 3, cut between its vias"),
         "short": ("add", BAR, "strap-short", r"(high|low) strap of site row 3"),
         "tie": ("remove", TIE, "strap-floats", r"high strap of site row 5")}
TENSOR = r"tile \(0, 0\) model\.embed_tokens\.weight codes"


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("signoff")
    model = small_llama(root / "model", hidden=16, intermediate=32, vocab=32)
    compile_model(model, root / "out", CompileOptions())
    base, assignments = used_tiles(root / "out")
    assert assignments[0][0].column == assignments[0][0].row == 0
    return root, base, assignments


def _shift(edit, base):
    layer, (x0, y0, x1, y1) = edit
    ox, oy = base.tile_grid.tile_origin_nm(0, 0)
    return layer, (x0 + ox, y0 + oy, x1 + ox, y1 + oy)


def _run(root, name, merged=None):
    return signoff(root / "out", root / f"so-{name}", SignoffOptions(drc=False, merged=merged))


def test_custom_layers_alone_every_gate_input_reaches_the_rail_its_via_names(mini):
    root, base, assignments = mini
    tiles = [(s.column, s.row) for s, _ in assignments]
    conn = connect_die(root / "out" / "die0.gds", base, tiles, merged=False, rails=False)
    high, low = via_counts(root / "out" / "die0.gds", base, assignments)
    used = np.arange(base.weight_tile.sites)[None, :] < np.array(
        [seg.used_sites for _, seg in assignments])[:, None]
    # connectivity and via positions: the same bit on every used site, nothing elsewhere
    np.testing.assert_array_equal(conn.vpwr[used] > 0, high[used] > 0)
    np.testing.assert_array_equal(conn.vgnd[used] > 0, low[used] > 0)
    assert ((conn.vpwr > 0) != (conn.vgnd > 0))[used].all()
    assert not (conn.vpwr + conn.vgnd)[~used].any()
    assert conn.vias_on_nothing.size == 0 and conn.vias_not_checked > 0   # route vias
    report = _run(root, "clean")
    assert report.passed and report.lvs[0]["sites"] == int(used.sum()) == 17152


@pytest.mark.parametrize("case", sorted(EDITS))
@pytest.mark.parametrize("where", ["custom", "merged"])
def test_each_defect_is_found_and_named(mini, case, where):
    root, base, _ = mini
    how, edit, kind, strap = EDITS[case]
    name = f"{where}-{case}"
    folder, merged = root / "out", None
    if where == "custom":   # edit a copy of the compile's die
        import shutil
        folder = root / name
        shutil.copytree(root / "out", folder)
        edit_die(root / "out" / "die0.gds", folder / "die0.gds", **{how: [_shift(edit, base)]})
    else:                   # the compile stays as it is; the merged die is edited
        merged = root / f"merged-{name}"
        merge(root / "out", merged)
        edit_die(merged / "die0.gds", merged / "die0.gds", **{how: [_shift(edit, base)]})
    report = signoff(folder, root / f"so-{name}", SignoffOptions(drc=False, merged=merged))
    assert not report.passed
    kinds = {f.kind for f in report.findings}
    assert kind in kinds and kinds <= {kind, "rails-shorted"}, kinds
    assert re.search(TENSOR + r": " + strap + r".*\(first \[\d+, \d+\] bit \d\)",
                     next(f.describe() for f in report.findings if f.kind == kind))
    if case == "short" and where == "merged":
        # one supply net: a second extraction without the rail via names the straps
        assert "rails-shorted" in kinds and report.lvs[0]["passes"] == 2
    assert report.to_dict()["metrics"]["design__lvs_error__count"] == report.lvs_errors > 0


def test_a_deleted_via_is_an_open_named_by_element(mini):
    root, base, assignments = mini
    import shutil
    folder = root / "deleted-via"
    shutil.copytree(root / "out", folder)
    ox, oy = base.tile_grid.tile_origin_nm(0, 0)
    high, low = via_counts(root / "out" / "die0.gds", base, assignments)
    bit = int(high[0, 0] > 0)    # site 0: column 0, row 0; its via is on the high or low strap
    y = 1600 if bit else 4800
    edit_die(root / "out" / "die0.gds", folder / "die0.gds",
             remove=[(VIA4, (ox + 400, oy + y - 400, ox + 1200, oy + y + 400))])
    report = signoff(folder, root / "so-deleted-via", SignoffOptions(drc=False))
    assert [f.describe() for f in report.findings] == [
        "open: die 0 tile (0, 0) model.embed_tokens.weight codes [0, 0] bit 0"]


def test_a_via_landing_on_nothing_floats_its_gate_input(mini):
    root, base, assignments = mini
    merged = root / "merged-no-landing"
    merge(root / "out", merged, drop_landing=(0, 5))   # tile (0, 0), site 5: column 5, row 0
    report = _run(root, "no-landing", merged)
    assert [f.describe() for f in report.findings] == [
        "floating: die 0 tile (0, 0) model.embed_tokens.weight codes [0, 1] bit 1"]
    assert report.lvs[0]["vias_on_nothing"] == 1


def test_merged_die_is_clean_with_its_rails_labelled(mini):
    root, _, _ = mini
    merged = root / "merged-clean"
    merge(root / "out", merged)
    report = _run(root, "merged-clean", merged)
    assert report.passed, [f.describe() for f in report.findings[:5]]
    lvs = report.lvs[0]
    assert lvs["rails_connected"] and lvs["labels"] > 0 and lvs["passes"] == 1
    assert lvs["vias_on_nothing"] == lvs["vias_not_checked"] == 0


@pytest.mark.slow   # draws the whole sky130-demo base die: about 15 s
def test_merged_by_the_base_die_builder_signs_off(mini, tmp_path):
    """`taalasc merge`'s merged die signs off clean, the tie pads reaching the labelled
    supply through the base's via3, met3 rails and met2 bridges."""
    from taalasc.base import merge as merging

    root, _, _ = mini
    merging.merge_compile(root / "out", tmp_path / "merged")
    report = signoff(root / "out", tmp_path / "so", SignoffOptions(drc=False,
                                                                   merged=tmp_path / "merged"))
    assert report.passed, [f.describe() for f in report.findings[:5]]
    assert report.lvs[0]["rails_connected"] and report.lvs[0]["labels"] > 0
