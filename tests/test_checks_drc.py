"""Our numpy rule checker finds each kind of violation (and only where it is)."""

from __future__ import annotations

import numpy as np

from taalasc.checks.drc import check_rects
from test_custom_helpers import small_base

PDK = small_base().pdk


def _rules(violations):
    return sorted({v.rule for v in violations})


def test_clean_strap_with_two_vias():
    metal = np.array([[0, 0, 20_000, 1600]])
    vias = np.array([[1000, 400, 1800, 1200], [3400, 400, 4200, 1200]])
    assert check_rects(vias, metal, PDK) == []


def test_each_rule_is_detected():
    metal = np.array([[0, 0, 20_000, 1600],
                      [0, 2400, 20_000, 4000],        # 800 nm above the first: space
                      [30_000, 0, 31_000, 10_000],    # 1000 nm wide: width
                      [40_000, 0, 41_600, 2000],      # 3.2 um2 alone: area
                      [50_000, 3, 52_000, 1603]])     # off grid
    vias = np.array([[1000, 400, 1800, 1200],
                     [2000, 400, 2800, 1200],         # 200 nm from the first: via space
                     [19_500, 400, 20_300, 1200],     # sticks out of the strap: enclosure
                     [5000, 400, 5900, 1200]])        # 900 nm wide: size
    found = _rules(check_rects(vias, metal, PDK))
    assert found == ["grid", "metal.area", "metal.space", "metal.width", "via.enclosure",
                     "via.size", "via.space"]


def test_via_space_uses_euclidean_corner_distance():
    metal = np.array([[0, 0, 10_000, 10_000]])
    # Diagonal neighbours 600 nm apart in x and y: corner distance 849 nm >= 800: clean.
    vias = np.array([[1000, 1000, 1800, 1800], [2400, 2400, 3200, 3200]])
    assert check_rects(vias, metal, PDK) == []
    vias[1] -= 100  # 500 nm each way: 707 nm < 800
    assert _rules(check_rects(vias, metal, PDK)) == ["via.space"]


def test_density_window_violation():
    metal = np.array([[0, 0, 10_000, 10_000]])  # 10 x 10 um on a 100 x 100 um die: 1 %
    violations = check_rects(np.zeros((0, 4)), metal, PDK, die_nm=(100_000, 100_000))
    assert _rules(violations) == ["density"] and "1.0%" in violations[0].message


def test_many_violations_are_capped_with_a_summary():
    vias = np.array([[i * 1000, 0, i * 1000 + 800, 800] for i in range(60)])
    violations = [v for v in check_rects(vias, np.zeros((0, 4)), PDK, max_per_rule=5)
                  if v.rule == "via.space"]
    assert len(violations) == 6 and violations[-1].message == "... and 54 more"
