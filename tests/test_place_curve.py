"""Visiting orders and the wirelength they give against the row-major baseline."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taalasc.config import load_base_array
from taalasc.place import (plan_placement, rowmajor_wirelength_nm, tensor_span_nm,
                           wirelength_nm)
from taalasc.place.curve import curve_order, gilbert, gilbert_runs, rowmajor, serpentine
from test_place_plan import llama, make_base


def _check_permutation(order, w, h):
    assert len(order) == w * h
    assert set(order) == {(x, y) for x in range(w) for y in range(h)}


@settings(max_examples=300, deadline=None)
@given(w=st.integers(1, 40), h=st.integers(1, 40))
def test_gilbert_visits_every_cell_once_with_unit_steps(w, h):
    order = gilbert(w, h)
    _check_permutation(order, w, h)
    assert order[0] == (0, 0)
    for (x0, y0), (x1, y1) in zip(order, order[1:]):
        assert abs(x1 - x0) + abs(y1 - y0) == 1, ((x0, y0), (x1, y1))


def test_gilbert_odd_even_rectangles_have_no_diagonal():
    # The reference gilbert2d takes one diagonal step on e.g. 5 x 4; we must not.
    for w, h in [(5, 4), (4, 5), (3, 2), (7, 10), (39, 40), (1, 2), (2, 1)]:
        order = gilbert(w, h)
        assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(order, order[1:]))


@settings(max_examples=100, deadline=None)
@given(w=st.integers(1, 40), h=st.integers(1, 40), px=st.integers(1, 9), py=st.integers(1, 9))
def test_other_orders_are_permutations(w, h, px, py):
    for order in (gilbert_runs(w, h, px, py), serpentine(w, h), rowmajor(w, h)):
        _check_permutation(order, w, h)
    if px == py:
        assert gilbert_runs(w, h, px, py) == gilbert(w, h)
    assert curve_order("gilbert-runs", w, h, px, py) == gilbert_runs(w, h, px, py)


def _square_base(tmp_path, columns, rows):
    # 256 x 64 sites of 1.6 x 6.4 um: a 409.6 um square tile on a 420 um square pitch.
    side = 3100000 + columns * 420000  # + 3 mm of width for the SRAM macros
    return make_base(tmp_path, weight_tile__sites_x=256, weight_tile__sites_y=64,
                     tile_grid__columns=columns, tile_grid__rows=rows,
                     tile_grid__pitch_x_nm=420000, tile_grid__pitch_y_nm=420000,
                     die__width_nm=side, die__height_nm=100000 + rows * 420000)


def test_gilbert_not_worse_than_rowmajor_on_square_pitch(tmp_path):
    base = _square_base(tmp_path, 8, 8)
    for shape in (dict(), dict(layers=1, vocab=64), dict(layers=4, inter=256)):
        specs = llama(**shape)
        got = wirelength_nm(plan_placement(specs, base), base)
        assert got <= rowmajor_wirelength_nm(specs, base)


def test_gilbert_strictly_better_on_a_realistic_model(tmp_path):
    # A 12-layer, hidden-256 Llama (~13 M weights at 4 bits) fills ~3 dies of 32 x 32 tiles.
    base = _square_base(tmp_path, 32, 32)
    specs = llama(hidden=256, layers=12, heads=8, kv=4, inter=768, vocab=8000)
    gil = plan_placement(specs, base, max_dies=8)
    assert gil.dies >= 2
    rm = plan_placement(specs, base, max_dies=8, curve="rowmajor")
    assert wirelength_nm(gil, base) < 0.6 * wirelength_nm(rm, base)
    assert tensor_span_nm(gil, base) < 0.6 * tensor_span_nm(rm, base)


def test_anisotropic_pitch_needs_runs():
    # sky130-demo tiles are 60 x 420 um apart: plain gilbert pays for its y steps.
    # This pins the measured trade-off so a change to the curves is noticed.
    demo = load_base_array("sky130-demo")
    specs = llama()
    wl = {c: wirelength_nm(plan_placement(specs, demo, curve=c), demo)
          for c in ("gilbert", "gilbert-runs", "serpentine", "rowmajor")}
    assert wl["rowmajor"] == rowmajor_wirelength_nm(specs, demo)
    assert wl["gilbert"] > wl["rowmajor"]
    assert wl["gilbert-runs"] < wl["rowmajor"]
    assert wl["gilbert-runs"] <= wl["serpentine"]


@pytest.mark.parametrize("curve", ["gilbert", "gilbert-runs", "serpentine", "rowmajor"])
def test_wirelength_by_hand(curve, tmp_path):
    demo = load_base_array("sky130-demo")
    placement = plan_placement(llama(), demo, curve=curve)
    px, py = demo.tile_grid.pitch_x_nm, demo.tile_grid.pitch_y_nm
    slots = [s for s, _ in placement.assignments]
    expect = sum(abs(a.column - b.column) * px + abs(a.row - b.row) * py
                 for a, b in zip(slots, slots[1:]))
    assert wirelength_nm(placement, demo) == expect
