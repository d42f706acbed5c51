"""Base dies of the PDKs whose standard cells no Python package ships (IHP SG13G2, GF180MCU):
frame, power grid, landings and tie pads, checked as numbers against the PDK rules they come
from, and as connectivity with KLayout's netlist extractor (every tie pad on its labelled
rail; every landing its own net; on a merged die every landing tied as its bit says)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from base_tiny import tiny_base, tiny_custom_die
from taalasc.base.build import build_base, write_base
from taalasc.base.merge import merge_die
from taalasc.base.recipe import GF180MCU, IHP_SG13G2
from taalasc.base.tile import plan_tile
from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.errors import MaskError

RECIPES = {"ihp-sg13g2": IHP_SG13G2, "gf180mcu": GF180MCU}


@pytest.fixture(scope="module", params=sorted(RECIPES))
def built(request, tmp_path_factory):
    pdk = request.param
    root = tmp_path_factory.mktemp(pdk)
    base = tiny_base(root, pdk)
    die = build_base(base)
    write_base(die, root / "base.gds")
    custom, bits = tiny_custom_die(base, root)
    merge_die(root / "base.gds", custom, root / "merged.gds")
    return pdk, base, die, root, bits


def _gap(a, b):
    """Spacing between two rectangles (0 when they touch or overlap)."""
    dx = max(a[0] - b[2], b[0] - a[2], 0)
    dy = max(a[1] - b[3], b[1] - a[3], 0)
    return max(dx, dy)


def _inside(inner, outer):
    """Smallest margin of ``inner`` inside ``outer`` (negative: it sticks out)."""
    return min(inner[0] - outer[0], inner[1] - outer[1], outer[2] - inner[2],
               outer[3] - inner[3])


def test_tile_keeps_the_rules_it_is_drawn_from(built):
    pdk, base, die, _, _ = built
    recipe, plan, wt = RECIPES[pdk], die.tile, base.weight_tile
    assert plan.rows is None and die.usage == []          # no standard cells
    space = recipe.below_space_nm
    landings, pads = plan.landings, plan.tie_pads
    assert _gap(landings[0], landings[1]) >= space                 # beside
    assert _gap(landings[0], landings[wt.sites_x]) >= space        # row to row
    assert _gap(landings[wt.sites_x - 1], pads[0]) >= space        # last landing to the pads
    assert _gap(pads[0], pads[1]) >= space
    # Every custom via (both slots, the tie via) lands inside its landing or pad with the
    # PDK's enclosure; the rail via sits in its pad and its rail with theirs.
    enclosure = base.pdk.rules.via_enclosure_below_nm
    from taalasc.custom.geometry import tie_via_rects
    for k, via in enumerate(tie_via_rects(wt, base.pdk.rules.via_size_nm, base.pdk.grid_nm)):
        assert _inside(via, pads[k]) >= enclosure
    for k, (pad, via) in enumerate(zip(pads, plan.tie_vias)):
        assert _inside(via, pad) >= recipe.rail_via_enclosure_above_nm
        rail = plan.vpwr_rail_x if k % 2 == 0 else plan.vgnd_rail_x
        assert rail[0] + recipe.rail_via_enclosure_nm <= via[0]
        assert via[2] + recipe.rail_via_enclosure_nm <= rail[1]
    assert plan.vgnd_rail_x[0] - plan.vpwr_rail_x[1] >= recipe.rail_space_nm
    assert pads[:, 2].max() <= wt.width_nm and plan.vgnd_rail_x[1] <= wt.width_nm


def test_real_bases_draw_and_say_what_they_hold(tmp_path, capsys):
    assert main(["base", "build", "ihp-sg13g2-chip", "-o", str(tmp_path / "ihp")]) == 0
    out = capsys.readouterr().out
    assert "landings, tie pads and rails only" in out and "TLB_ihp_sg13g2_chip" in out
    gf = load_base_array("gf180mcu-chip")
    assert build_base(gf).usage == []


@pytest.mark.parametrize("name, change, message", [
    ("ihp-sg13g2-chip", {"site_pitch_x_nm": 1960},
     r"^weight_tile.site_pitch_x_nm: 60 nm between neighbouring landings on TopMetal1; the "
     r"base die needs 1640 nm$"),
    ("gf180mcu-chip", {"tie_columns": 1},
     r"^weight_tile: the tie column \(480 nm from its pads' left edge\) cannot hold the VPWR "
     r"and VGND Metal3 rails side by side \(1000 nm needed\); widen the site pitch or set "
     r"weight_tile.tie_columns$"),
])
def test_a_tile_the_base_cannot_draw_is_one_error_with_its_key(name, change, message):
    base = load_base_array(name)
    bad = dataclasses.replace(base, weight_tile=dataclasses.replace(base.weight_tile, **change))
    with pytest.raises(MaskError, match=message):
        plan_tile(bad, RECIPES[base.pdk.name])


kdb = pytest.importorskip("klayout.db")


def _extractor(path, pdk, base):
    """KLayout's netlist extractor over the base's supply stack and the custom layers."""
    from taalasc.signoff.lvs import RAILS

    recipe, layers = RECIPES[pdk], base.pdk.layers
    bridge_via, bridge = RAILS[pdk].stack[2:]
    stack = [("bridge", bridge), ("bridge_via", bridge_via),
             ("rail", recipe.layers[recipe.rail]), ("rail_via", recipe.layers[recipe.rail_via])]
    stack += [(n, (l.gds_layer, l.gds_datatype)) for n, l in (
        ("below", layers.below_metal), ("via", layers.via), ("top", layers.top_metal))]
    ly = kdb.Layout()
    ly.read(str(path))
    ly.top_cell().flatten(True)   # flat: every landing its own net, not one per cell
    l2n = kdb.LayoutToNetlist(kdb.RecursiveShapeIterator(ly, ly.top_cell(), []))
    made = {n: l2n.make_layer(ly.layer(*ld), n) for n, ld in stack}
    names = [n for n, _ in stack]
    for a, b in zip(names, names[1:]):
        l2n.connect(made[a])
        l2n.connect(made[a], made[b])
    l2n.connect(made["top"])
    label = recipe.layers[recipe.rail + ".label"]
    l2n.connect(made["rail"], l2n.make_text_layer(ly.layer(*label), "rail.label"))
    l2n.extract_netlist()
    return l2n, made


def _centre(r, ox, oy):
    return kdb.DPoint((ox + (int(r[0]) + int(r[2])) // 2) / 1000,
                      (oy + (int(r[1]) + int(r[3])) // 2) / 1000)


def test_base_die_power_grid_reaches_every_tie_pad(built):
    pdk, base, die, root, _ = built
    l2n, made = _extractor(root / "base.gds", pdk, base)
    plan, grid = die.tile, base.tile_grid
    landing_nets = set()
    for c in range(grid.columns):
        for r in range(grid.rows):
            ox, oy = grid.tile_origin_nm(c, r)
            for k, pad in enumerate(plan.tie_pads):
                net = l2n.probe_net(made["below"], _centre(pad, ox, oy))
                assert net.expanded_name() == ("VPWR", "VGND")[k % 2], (c, r, k)
            for landing in plan.landings:
                net = l2n.probe_net(made["below"], _centre(landing, ox, oy))
                assert net.expanded_name() not in ("VPWR", "VGND")
                landing_nets.add(net.cluster_id)
    assert len(landing_nets) == base.weight_tile.sites * grid.tiles   # none shorted


def test_merged_die_ties_every_landing_as_its_bit_says(built):
    from taalasc.signoff.lvs import connect_die

    pdk, base, _, root, bits = built
    tiles = list(bits)
    conn = connect_die(root / "merged.gds", base, tiles, merged=True, rails=True)
    want = np.array([bits[t] for t in tiles], dtype=bool)
    assert np.array_equal(conn.vpwr > 0, want) and np.array_equal(conn.vgnd > 0, ~want)
    assert (conn.pad_names != "").all() and len(conn.vias_on_nothing) == 0
