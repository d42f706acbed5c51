"""compile --format auto (the default): GDSII and OASIS while the GDSII stays within
compile.AUTO_GDS_MAX_BYTES, OASIS alone above (issue 17: an 8 B model would write ~170 GB
of GDSII); verify, extract and faults then read the format the compile wrote."""

from __future__ import annotations

import importlib
import json

import pytest

from taalasc.cli import main
from taalasc.model.synth import write_demo

compile_mod = importlib.import_module("taalasc.compile")   # taalasc.compile is also the API call


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    model = tmp_path_factory.mktemp("auto") / "model"
    model.mkdir()
    write_demo(model)
    return model


def _files(out):
    return json.loads((out / "manifest.json").read_text())["dies"][0]["files"]


def test_a_small_compile_writes_both_formats(demo, tmp_path):
    out = tmp_path / "small"
    assert main(["compile", str(demo), "-o", str(out), "--quiet"]) == 0
    assert sorted(_files(out)) == ["gds", "oas"]
    # the same bytes as asking for both: the options record the formats chosen
    both = tmp_path / "both"
    assert main(["compile", str(demo), "-o", str(both), "--quiet", "--format", "both"]) == 0
    assert (out / "manifest.json").read_bytes() == (both / "manifest.json").read_bytes()


def test_above_the_gdsii_budget_only_oasis_is_written_and_read(demo, tmp_path, monkeypatch):
    # the demo places 484,352 sites: 2.5 MB of GDSII at 5.2 B/site; a 1 MB budget is below
    monkeypatch.setattr(compile_mod, "AUTO_GDS_MAX_BYTES", 1 << 20)
    out = tmp_path / "large"
    assert main(["compile", str(demo), "-o", str(out), "--quiet"]) == 0
    assert sorted(_files(out)) == ["oas"] and not list(out.glob("*.gds"))
    assert json.loads((out / "manifest.json").read_text())["inputs"]["options"]["formats"] \
        == ["oas"]
    monkeypatch.undo()   # verify rebuilds from the recorded formats, not from the budget
    assert main(["verify", str(out), str(demo), "--json", str(tmp_path / "v.json")]) == 0
    assert "read from OAS" in json.dumps(json.loads((tmp_path / "v.json").read_text()))
    assert main(["verify", str(out), str(demo), "--format", "gds",
                 "--json", str(tmp_path / "g.json")]) == 2
    codes = next(c for c in json.loads((tmp_path / "g.json").read_text())["checks"]
                 if c["name"] == "codes")
    assert codes["detail"] == "the compile writes no GDS files; verify with --format oas"
