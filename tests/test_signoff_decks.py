"""Finding and running the PDKs' DRC decks, reading their marker databases, and
`taalasc signoff`'s exit codes and output folder, with a stand-in `klayout` script (fast; the
real decks run in tests/test_signoff_cli.py)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from corpus.bad_inputs import assert_one_error, run_cli, small_llama
from signoff_dies import merge
from taalasc.compile import CompileOptions, compile_model
from taalasc.errors import ToolError
from taalasc.signoff import rdb
from taalasc.signoff.decks import find_decks, klayout_version
from taalasc.signoff.run import SignoffOptions, signoff

FAKE_KLAYOUT = """\
#!{python}
# Stands in for the KLayout application: -v prints a version, -r writes a marker database
# with the markers of $FAKE_MARKERS ("rule=count,..."), or fails with $FAKE_EXIT.
import os, sys
args = sys.argv[1:]
if "-v" in args:
    print("KLayout " + os.environ.get("FAKE_KLAYOUT_VERSION", "0.28.5"))
    sys.exit(0)
if os.environ.get("FAKE_EXIT"):
    print("ERROR: deck crashed")
    sys.exit(int(os.environ["FAKE_EXIT"]))
rd = dict(a.split("=", 1) for a in args[args.index("-r") + 3::2])
markers = [m.split("=") for m in os.environ.get("FAKE_MARKERS", "").split(",") if m]
with open(rd["report"], "w") as f:
    f.write("<?xml version='1.0' encoding='utf-8'?>\\n<report-database>\\n <categories>\\n")
    for name, _ in markers:
        f.write(f"  <category>\\n   <name>{{name}}</name>\\n   <description>{{name}}: rule"
                "</description>\\n   <categories>\\n   </categories>\\n  </category>\\n")
    f.write(" </categories>\\n <items>\\n")
    for name, n in markers:
        for _ in range(int(n)):
            f.write(f"  <item>\\n   <category>'{{name}}'</category>\\n   <cell>TOP</cell>\\n"
                    "  </item>\\n")
    f.write(" </items>\\n</report-database>\\n")
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("decks")
    model = small_llama(root / "model", hidden=16, intermediate=32, vocab=32)
    compile_model(model, root / "sky130", CompileOptions())
    return root


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "klayout"
    script.write_text(FAKE_KLAYOUT.format(python=sys.executable))
    script.chmod(0o755)
    decks = tmp_path / "decks"
    for pdk, files in (("sky130", ("sky130A_mr.drc", "met_min_ca_density.lydrc")),
                       ("ihp-sg13g2", ("ihp-sg13g2.drc",))):
        (decks / pdk).mkdir(parents=True)
        for name in files:
            (decks / pdk / name).write_text("# a deck\n")
    monkeypatch.setenv("TAALASC_PDK_DECKS", str(decks))
    monkeypatch.delenv("PDK_ROOT", raising=False)
    return script


def _install(root: Path, *files: str) -> None:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("# a deck\n")


def test_decks_are_found_where_the_pdks_install_them(tmp_path, monkeypatch):
    monkeypatch.delenv("TAALASC_PDK_DECKS", raising=False)
    monkeypatch.setenv("PDK_ROOT", str(tmp_path))
    _install(tmp_path, "sky130A/libs.tech/klayout/drc/sky130A_mr.drc",
             "ihp-sg13g2/libs.tech/klayout/tech/drc/ihp-sg13g2.drc",
             "ihp-sg13g2/libs.tech/klayout/tech/drc/rule_decks/density.drc",
             "gf180mcuD/libs.tech/klayout/drc/gf180mcuD_mr.drc")
    found, notes = find_decks("sky130")
    assert [(f.deck.name, f.where) for f in found] == [("sky130A_mr", "$PDK_ROOT")]
    assert notes == [f"met_min_ca_density: not found at {tmp_path}/sky130A/libs.tech/klayout/"
                     "drc/met_min_ca_density.lydrc, not run"]
    assert [f.deck.name for f in find_decks("ihp-sg13g2")[0]] == ["ihp-sg13g2", "density"]
    assert [f.deck.name for f in find_decks("gf180mcu")[0]] == ["gf180mcuD_mr"]
    # a --deck folder holding the PDK's decks by name, or one deck file (known or not)
    folder = tmp_path / "ihp-sg13g2/libs.tech/klayout/tech/drc"
    assert [f.deck.name for f in find_decks("ihp-sg13g2", (folder,))[0]] == \
        ["ihp-sg13g2", "density"]
    mine = tmp_path / "my_rules.drc"
    mine.write_text("# a deck\n")
    (deck,), _ = find_decks("sky130", (mine,))
    assert (deck.deck.name, deck.deck.thread_variable, deck.where) == ("my_rules", None, "--deck")


@pytest.mark.parametrize("setup, message", [
    ({}, r"no sky130 DRC deck: set PDK_ROOT to your PDK installation \(it holds "
         r"sky130A/libs.tech/klayout/drc/sky130A_mr.drc\) or pass --deck PATH"),
    ({"PDK_ROOT": "{tmp}"}, r"no sky130 DRC deck at .*/sky130A/libs.tech/klayout/drc/"
                            r"sky130A_mr.drc \(\$PDK_ROOT\); install the PDK there or pass "
                            r"--deck PATH"),
    ({"deck": "{tmp}/nowhere.drc"}, r"--deck .*/nowhere.drc: no such file or folder"),
    ({"deck": "{tmp}"}, r"--deck .*: holds none of the sky130 decks \(sky130A_mr.drc, "
                        r"met_min_ca_density.lydrc\)"),
])
def test_a_missing_deck_says_where_it_looked(tmp_path, monkeypatch, setup, message):
    monkeypatch.delenv("TAALASC_PDK_DECKS", raising=False)
    monkeypatch.delenv("PDK_ROOT", raising=False)
    if "PDK_ROOT" in setup:
        monkeypatch.setenv("PDK_ROOT", str(tmp_path))
    given = (Path(setup["deck"].format(tmp=tmp_path)),) if "deck" in setup else ()
    with pytest.raises(ToolError, match="^" + message + "$"):
        find_decks("sky130", given)


def test_klayout_version_or_what_to_install(fake, tmp_path, monkeypatch):
    assert klayout_version(str(fake)) == (0, 28, 5)
    monkeypatch.setenv("FAKE_KLAYOUT_VERSION", "0.30")
    assert klayout_version(str(fake)) == (0, 30, 0)
    with pytest.raises(ToolError, match=r"^KLayout not found \('/nonexistent/klayout'\); "
                                        r"install the KLayout application \(Debian/Ubuntu: "
                                        r"apt-get install klayout;"):
        klayout_version("/nonexistent/klayout")
    monkeypatch.setenv("FAKE_KLAYOUT_VERSION", "unknown")
    with pytest.raises(ToolError, match=r"did not print a KLayout version"):
        klayout_version(str(fake))


def _signoff(capfd, compiled, out, fake, *more):
    return run_cli(capfd, ["signoff", compiled / "sky130", "-o", out, "--klayout", fake,
                           "--no-lvs", *more])


def test_custom_layers_alone_rules_needing_the_base_are_not_violations(compiled, fake,
                                                                        tmp_path, monkeypatch,
                                                                        capfd):
    out = tmp_path / "so"
    monkeypatch.setenv("FAKE_MARKERS", "via4.4_a=3,m5.1=0")
    before = sorted(p.name for p in (compiled / "sky130").iterdir())
    assert _signoff(capfd, compiled, out, fake) == (0, [])
    report = json.loads((out / "signoff.json").read_text())
    assert report["metrics"]["klayout__drc_error__count"] == 0
    assert report["metrics"]["signoff__drc_not_checkable__count"] == 6   # both decks, 3 each
    assert [r["section"] for r in report["rules"]] == ["not checkable without the base die"] * 2
    assert "Not checkable without the base die" in (out / "signoff.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "signoff.json", "signoff.md"]
        + [f"die0.{d}.{x}" for d in ("sky130A_mr", "met_min_ca_density") for x in ("log", "lyrdb")])
    assert sorted(p.name for p in (compiled / "sky130").iterdir()) == before
    # the same inputs again: the folder is replaced; other inputs need --force
    assert _signoff(capfd, compiled, out, fake) == (0, [])
    monkeypatch.setenv("FAKE_KLAYOUT_VERSION", "0.28.6")   # another KLayout: other inputs
    assert_one_error(*_signoff(capfd, compiled, out, fake),
                     r".*/so: holds a different compile; pass --force to replace it")
    assert _signoff(capfd, compiled, out, fake, "--force") == (0, [])


def test_on_a_merged_die_they_are_violations(compiled, fake, tmp_path, monkeypatch, capfd):
    merged = tmp_path / "merged"
    merge(compiled / "sky130", merged)
    monkeypatch.setenv("FAKE_MARKERS", "via4.4_a=2")
    assert_one_error(*_signoff(capfd, compiled, tmp_path / "so", fake, "--merged", merged),
                     r"^signoff failed: 4 DRC markers, 0 LVS errors; first: via4.4_a "
                     r"\(sky130A_mr, 2 markers\)$", exit_code=2)


def test_a_failing_deck_exits_1_and_keeps_its_log(compiled, fake, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("FAKE_EXIT", "3")
    out = tmp_path / "so"
    assert_one_error(*_signoff(capfd, compiled, out, fake),
                     r"^the sky130A_mr deck failed on die0.gds \(exit 3: ERROR: deck crashed\); "
                     r"its log: .*/so/die0.sky130A_mr.log$")
    assert "ERROR: deck crashed" in (out / "die0.sky130A_mr.log").read_text()


def test_prerequisites_are_checked_before_any_work(compiled, fake, tmp_path, capfd):
    model = small_llama(tmp_path / "model", hidden=16, intermediate=32, vocab=32)
    compile_model(model, tmp_path / "ihp", CompileOptions(base="ihp-sg13g2-chip"))
    out = tmp_path / "so"
    with pytest.raises(ToolError, match=r"^KLayout 0.28.5 is too old for the ihp-sg13g2 decks "
                                        r"\(they need 0.29.11 or newer\); .* or run the "
                                        r"extraction alone with --no-drc$"):
        signoff(tmp_path / "ihp", out, SignoffOptions(klayout=str(fake)))
    inside = compiled / "sky130" / "so"
    for argv, message in (
            (["-o", out, "--klayout", "/nonexistent/klayout"],
             r"KLayout not found .*apt-get install klayout"),
            (["-o", inside], r".*/so: lies inside the compile folder .*; write the sign-off "
                             r"elsewhere"),
            (["-o", out, "--merged", tmp_path], r"--merged .*: no die0.gds \(merged dies are "
                                                r"written by `taalasc merge OUT -o DIR`\)"),
            (["-o", out, "--no-drc", "--no-lvs"], r"--no-drc and --no-lvs leave nothing to "
                                                  r"check")):
        assert_one_error(*run_cli(capfd, ["signoff", compiled / "sky130", *argv]), message)
    assert not out.exists() and not inside.exists()


def test_marker_databases_are_counted_by_category(tmp_path, monkeypatch):
    path = tmp_path / "m.lyrdb"
    items = "".join(f"  <item>\n   <category>{ref}</category>\n  </item>\n"
                    for ref in ["'m5.1'"] * 3 + ["'via4.4_a'", "'a'.'b'", "'it\\&apos;s'"])
    path.write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?>
        <report-database>
         <categories>
          <category><name>m5.1</name><description>m5.1 : min. m5 width</description>
           <categories></categories></category>
          <category><name>a</name><description>parent</description>
           <categories><category><name>b</name><description>child</description>
            <categories></categories></category></categories></category>
         </categories>
         <items>
        """) + items + " </items>\n</report-database>\n")
    monkeypatch.setattr(rdb, "_CHUNK", 7)   # references cut by every chunk boundary
    markers = rdb.read_markers(path)
    assert markers.counts == {"m5.1": 3, "via4.4_a": 1, "a.b": 1, "it's": 1}
    assert markers.descriptions == {"m5.1": "m5.1 : min. m5 width", "a": "parent",
                                    "a.b": "child"}
    written = tmp_path / "w.lyrdb"
    rdb.write_markers(written, "TOP", "ours", {"strap-cut": ("a strap cut", [(0, 0, 10, 10)])})
    assert rdb.read_markers(written).counts == {"strap-cut": 1}
    path.write_text("<report-database><items>")
    with pytest.raises(ToolError, match=r"not a readable KLayout marker database"):
        rdb.read_markers(path)
