"""The structural rule check (check_die): clean on written dies, and each shortcut it takes
still catches what the flat check would."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from taalasc.checks.check import check_die, slot_via_rects, tile_proof
from taalasc.checks.drc import check_file
from test_custom_helpers import TAG, small_base, write_small


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_small(tmp_path_factory.mktemp("check"))


def _rules(violations):
    return sorted({v.rule for v in violations})


def test_clean_die_passes_both_checks(written):
    base, result, _ = written
    assert check_die(result, base) == []
    from taalasc.custom.fill import keep_out_area_rects

    assert check_file(result.files["oas"], base.pdk, (base.die.width_nm, base.die.height_nm),
                      keep_out_area_rects(base)) == []


def test_slots_cover_both_straps_of_every_site():
    base = small_base()
    slots = slot_via_rects(base)
    assert len(slots) == 2 * base.weight_tile.sites
    assert len(np.unique(slots, axis=0)) == len(slots)


def test_tile_proof_fails_when_slots_are_too_close():
    base = small_base()
    rules = replace(base.pdk.rules, via_space_nm=1000)  # site pitch 1600 - via 800 = 800 < 1000
    tight = replace(base, pdk=replace(base.pdk, rules=rules))
    assert "via.space" in _rules(tile_proof(tight))


def test_metal_next_to_a_tile_breaks_clearance(written):
    base, result, _ = written
    ox, oy = base.tile_grid.tile_origin_nm(1, 0)
    bar = np.array([[ox - 2600, oy, ox - 1000, oy + 10_000]])  # 1000 nm left of tile (1, 0)
    layout = replace(result.layout, bars=np.concatenate([result.layout.bars, bar]))
    assert "metal.clearance" in _rules(check_die(layout, base))


def test_route_via_off_its_wire_and_bad_density_are_found(written):
    base, result, _ = written
    vias = result.layout.route_vias.copy()
    vias[0] += [0, 1200, 0, 1200]
    assert "via.enclosure" in _rules(check_die(replace(result.layout, route_vias=vias), base))
    dens = result.layout.density_pct.copy()
    dens[0, 0] = 90.0
    assert _rules(check_die(replace(result.layout, density_pct=dens), base)) == ["density"]


def test_the_die_check_holds_ihp_fill_to_its_filler_rules(tmp_path):
    """The die check judges fill with the PDK's fill rules: squares too close, a bar too
    long, fill too near a route are each found on an IHP die's layout."""
    from dataclasses import replace as change

    from taalasc.config import load_base_array
    from taalasc.custom.writer import DieMaskWriter

    base = load_base_array("ihp-sg13g2-chip")
    writer = DieMaskWriter(base, 0, None, "die0", formats=("oas",), tag=TAG)
    writer.add_tile(0, 0, np.ones(100, np.uint8))
    writer.add_tile(1, 0, np.ones(100, np.uint8))
    writer.add_route((0, 0), (1, 0))
    layout = writer.close().layout
    assert check_die(layout, base) == []
    a = layout.arrays[0]
    tight = change(a, pitch_nm=a.size_nm + 2_500)
    wire = layout.wires[0]
    near = np.array([[wire[2] + 2_500, wire[1], wire[2] + 9_000, wire[1] + 6_000]])
    long_bar = np.array([[a.x_nm, a.y_nm - 30_000, a.x_nm + 6_000, a.y_nm - 10_000]])
    broken = change(layout, arrays=(tight,) + layout.arrays[1:],
                    bars=np.concatenate([layout.bars, near, long_bar]))
    rules = {v.rule for v in check_die(broken, base)}
    assert {"fill.space", "fill.clearance", "fill.size"} <= rules
