"""`taalasc signoff` with the real sky130 deck in the KLayout application (issue 15): on a
small compile's custom layers only the rule that needs met4 fires, reported as not
checkable; on a merged die (the base drawn by tests/signoff_dies.py) the deck is clean; a
strap shorted in the merged die fails with the strap named. Skipped, with the reason, when
the KLayout application or the deck copies (../shared/pdk-decks) are missing; `.ci/run`
installs KLayout."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("klayout.db", reason="the klayout Python package (pip install klayout)")

from corpus.bad_inputs import assert_one_error, run_cli, small_llama  # noqa: E402
from signoff_dies import MET5, edit_die, merge, shared_decks  # noqa: E402
from taalasc.compile import CompileOptions, compile_model  # noqa: E402

DECKS = shared_decks()
pytestmark = [
    pytest.mark.skipif(shutil.which("klayout") is None,
                       reason="the KLayout application is not installed (apt-get install "
                              "klayout; .ci/run installs it)"),
    pytest.mark.skipif(DECKS is None, reason="no PDK deck copies: set TAALASC_PDK_DECKS or "
                                             "provide ../shared/pdk-decks"),
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("signoff-cli")
    model = small_llama(root / "model", hidden=16, intermediate=32, vocab=32)
    compile_model(model, root / "out", CompileOptions())
    merge(root / "out", root / "merged")
    return root


def _signoff(capfd, compiled, out, *more):
    return run_cli(capfd, ["signoff", compiled / "out", "-o", out, "--deck",
                           DECKS / "sky130", "--threads", "2", *more])


def _report(folder):
    return json.loads((folder / "signoff.json").read_text())


def test_custom_layers_only_the_rule_needing_met4_fires(compiled, capfd):
    out = compiled / "so-custom"
    assert _signoff(capfd, compiled, out) == (0, [])
    report = _report(out)
    assert report["mode"] == "custom layers only" and report["klayout"].count(".") == 2
    assert [(r["deck"], r["rule"], r["section"]) for r in report["rules"]] == [
        ("sky130A_mr", "via4.4_a", "not checkable without the base die")]
    metrics = report["metrics"]
    assert metrics["klayout__drc_error__count"] == 0 == metrics["design__lvs_error__count"]
    assert metrics["signoff__drc_not_checkable__count"] > 0
    assert metrics["signoff__drc_rules__count"] > 250         # the whole deck ran
    assert (out / "die0.sky130A_mr.lyrdb").is_file() and (out / "die0.lvs.lyrdb").is_file()


def test_merged_die_is_clean_with_the_official_deck(compiled, capfd, monkeypatch):
    # Relative paths, as a user types them: KLayout runs in another folder.
    monkeypatch.chdir(compiled)
    out = compiled / "so-merged"
    assert run_cli(capfd, ["signoff", "out", "-o", "so-merged", "--deck", DECKS / "sky130",
                           "--threads", "2", "--merged", "merged"]) == (0, [])
    report = _report(out)
    assert report["mode"] == "merged dies" and report["rules"] == []
    assert {r["deck"] for r in report["runs"]} == {"sky130A_mr", "met_min_ca_density"}
    assert report["metrics"]["signoff__lvs_sites__count"] == 17152


def test_a_shorted_strap_fails_and_is_named(compiled, capfd, tmp_path):
    merged = tmp_path / "merged"
    shutil.copytree(compiled / "merged", merged)
    ox, oy = 100000, 100000   # tile (0, 0) of sky130-demo
    edit_die(merged / "die0.gds", merged / "die0.gds",
             add=[(MET5, (ox + 17300, oy + 21600, ox + 17900, oy + 23200))])
    code, lines = _signoff(capfd, compiled, tmp_path / "so", "--merged", merged)
    assert_one_error(code, lines,
                     r"^signoff failed: \d+ DRC markers, \d+ LVS errors; first: strap-short: die 0 "
                     r"tile \(0, 0\) model.embed_tokens.weight codes: high strap of site row 3 ",
                     exit_code=2)
    report = _report(tmp_path / "so")
    assert any(r["rule"] == "m5.1" for r in report["rules"])   # the 0.6 um bar is too narrow
    assert {f["kind"] for f in report["findings"]} == {"strap-short", "rails-shorted"}
