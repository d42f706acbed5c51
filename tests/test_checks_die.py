"""The structural rule check (check_die): clean on written dies, and each shortcut it takes
still catches what the flat check would."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from taalasc.checks.check import check_die, slot_via_rects, tile_proof
from taalasc.checks.drc import check_file
from test_custom_helpers import small_base, write_small


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
