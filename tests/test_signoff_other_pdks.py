"""Sign-off on IHP SG13G2 and GF180MCU merged dies (issue 15): a small compile on each PDK's
5 x 5 mm base chip, merged with the base die `taalasc merge` draws (frame, power grid,
landings: no standard-cell package ships these PDKs' cells), then the LVS-style extraction
(clean; a cut strap, a strap shorted to the other rail, a missing tie via, a deleted via
each found and named) and, where the KLayout application and deck copies are here, the
PDK's own DRC deck (GF180MCU's runs on Debian's KLayout 0.28.5; IHP's needs 0.29.11, so its
test says so and skips when the KLayout is older)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

pytest.importorskip("klayout.db", reason="the klayout Python package (pip install klayout)")

from corpus.bad_inputs import run_cli, small_llama  # noqa: E402
from signoff_dies import edit_die, shared_decks, used_tiles  # noqa: E402
from taalasc.base.merge import merge_compile  # noqa: E402
from taalasc.compile import CompileOptions, compile_model  # noqa: E402
from taalasc.signoff.run import SignoffOptions, signoff  # noqa: E402

BASES = {"ihp-sg13g2": "ihp-sg13g2-chip", "gf180mcu": "gf180mcu-chip"}
TENSOR = r"tile \(0, 0\) model\.embed_tokens\.weight codes"


@pytest.fixture(scope="module", params=sorted(BASES))
def compiled(request, tmp_path_factory):
    pdk = request.param
    root = tmp_path_factory.mktemp(pdk)
    model = small_llama(root / "model", hidden=16, intermediate=32, vocab=32)
    compile_model(model, root / "out", CompileOptions(base=BASES[pdk]))
    merge_compile(root / "out", root / "merged")
    base, assignments = used_tiles(root / "out")
    assert assignments[0][0].column == assignments[0][0].row == 0
    return pdk, root, base, assignments


def _layer(info):
    return info.gds_layer, info.gds_datatype


def _edits(base):
    """(how, (layer, box), finding kind, strap text) per defect, in die coordinates, from
    the site layout (taalasc.config.base_array): cut the high strap of site row 3 between
    columns 10 and 11; bridge it to its low strap there; remove row 5's high tie via."""
    wt, rules, g = base.weight_tile, base.pdk.rules, base.pdk.grid_nm
    top, via = _layer(base.pdk.layers.top_metal), _layer(base.pdk.layers.via)
    ox, oy = base.tile_grid.tile_origin_nm(0, 0)
    mid = ox + (wt.slot_x_nm(10) + wt.slot_x_nm(11)) // 2
    half_gap = (wt.site_pitch_x_nm - rules.via_size_nm) // 4 // g * g
    high, low = oy + wt.strap_y_nm(3, True), oy + wt.strap_y_nm(3, False)
    s = wt.strap_width_nm // 2 + 10
    v = rules.via_size_nm // 2
    tie_x, tie_y = ox + wt.tie_slot_x_nm, oy + wt.strap_y_nm(5, True)
    return {
        "cut": ("cut", (top, (mid - half_gap, high - s, mid + half_gap, high + s)), "strap-cut",
                r"high strap of site row 3, cut between its vias"),
        "short": ("add", (top, (mid - half_gap, high, mid + half_gap, low)), "strap-short",
                  r"(high|low) strap of site row 3"),
        "tie": ("remove", (via, (tie_x - v, tie_y - v, tie_x + v, tie_y + v)), "strap-floats",
                r"high strap of site row 5"),
    }


def test_merged_die_is_clean_with_its_rails_labelled(compiled):
    pdk, root, _, assignments = compiled
    report = signoff(root / "out", root / "so-clean", SignoffOptions(drc=False,
                                                                     merged=root / "merged"))
    assert report.passed, [f.describe() for f in report.findings[:5]]
    lvs = report.lvs[0]
    assert lvs["rails_connected"] and lvs["labels"] > 0 and lvs["passes"] == 1
    assert lvs["vias_on_nothing"] == lvs["vias_not_checked"] == 0
    assert lvs["sites"] == sum(seg.used_sites for _, seg in assignments)


@pytest.mark.parametrize("case", ["cut", "short", "tie"])
def test_each_defect_is_found_and_named(compiled, case):
    pdk, root, base, _ = compiled
    how, edit, kind, strap = _edits(base)[case]
    merged = root / f"merged-{case}"
    shutil.copytree(root / "merged", merged)
    edit_die(merged / "die0.gds", merged / "die0.gds", **{how: [edit]})
    report = signoff(root / "out", root / f"so-{case}", SignoffOptions(drc=False, merged=merged))
    assert not report.passed
    kinds = {f.kind for f in report.findings}
    assert kind in kinds and kinds <= {kind, "rails-shorted"}, kinds
    assert re.search(TENSOR + r": " + strap + r".*\(first \[\d+, \d+\] bit \d\)",
                     next(f.describe() for f in report.findings if f.kind == kind))


def test_a_deleted_via_is_an_open_named_by_element(compiled):
    from taalasc.signoff.sites import via_counts

    pdk, root, base, assignments = compiled
    wt, v = base.weight_tile, base.pdk.rules.via_size_nm // 2
    ox, oy = base.tile_grid.tile_origin_nm(0, 0)
    high, _ = via_counts(root / "out" / "die0.gds", base, assignments)
    x, y = ox + wt.slot_x_nm(0), oy + wt.strap_y_nm(0, bool(high[0, 0] > 0))
    # Deleted in the compile's die (a copy), then merged: the via decoder reads the
    # compile's die, so both readers see the via gone.
    folder = root / "out-deleted"
    shutil.copytree(root / "out", folder)
    edit_die(root / "out" / "die0.gds", folder / "die0.gds",
             remove=[(_layer(base.pdk.layers.via), (x - v, y - v, x + v, y + v))])
    merge_compile(folder, root / "merged-deleted")
    report = signoff(folder, root / "so-deleted",
                     SignoffOptions(drc=False, merged=root / "merged-deleted"))
    assert [f.describe() for f in report.findings] == [
        "open: die 0 tile (0, 0) model.embed_tokens.weight codes [0, 0] bit 0"]


DECKS = shared_decks()


@pytest.mark.skipif(shutil.which("klayout") is None or DECKS is None,
                    reason="needs the KLayout application (.ci/run installs it) and the PDK "
                           "deck copies (../shared/pdk-decks)")
def test_the_pdks_own_deck_is_clean_on_the_merged_die(compiled, capfd):
    from taalasc.signoff.decks import DECKS as KNOWN, klayout_version

    pdk, root, _, _ = compiled
    need = KNOWN[pdk][0].min_version
    if klayout_version("klayout") < need:
        pytest.skip(f"the {pdk} deck needs KLayout {'.'.join(map(str, need))} or newer; "
                    f"this machine has {'.'.join(map(str, klayout_version('klayout')))}")
    code, err = run_cli(capfd, ["signoff", root / "out", "-o", root / "so-deck", "--deck",
                                DECKS / pdk / KNOWN[pdk][0].file, "--threads", "2",
                                "--merged", root / "merged", "--no-lvs"])
    assert (code, err) == (0, [])
    report = json.loads((root / "so-deck" / "signoff.json").read_text())
    assert report["mode"] == "merged dies"
    assert [r for r in report["rules"] if r["section"] == "violation"] == []
    assert report["metrics"]["signoff__drc_rules__count"] > 250   # the whole deck ran
