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


def test_fill_rules_apart_from_drawn_metal_where_the_pdk_has_them():
    """IHP rules its TopMetal2 filler apart (TM2Fil.a/a1/b/c): 3 um from drawn metal and from
    other fill, 5..10 um wide. sky130's fill follows the drawn metal's rules."""
    import numpy as np

    from taalasc.checks.drc import fill_violations
    from taalasc.config import load_pdk

    drawn = np.array([[0, 0, 2000, 50_000]])
    filled = np.array([[4_500, 0, 11_150, 6_650],       # 2.5 um from the strap: too close
                       [14_150, 0, 20_800, 6_650],      # 3 um from the first square: fine
                       [4_500, 10_000, 40_000, 16_650],  # 35.5 um long: too large
                       [23_300, 0, 29_950, 6_650]])     # 2.5 um from the second: too close
    rules = {v.rule: v for v in fill_violations(filled, drawn, load_pdk("ihp-sg13g2"))}
    found = sorted((v.rule, v.x_nm) for v in fill_violations(filled, drawn,
                                                               load_pdk("ihp-sg13g2")))
    assert ("fill.clearance", 4_500) in found and ("fill.size", 4_500) in found
    assert {x for r, x in found if r == "fill.space"} == {14_150}   # the pair's first
    assert set(rules) == {"fill.clearance", "fill.size", "fill.space"}
    assert fill_violations(filled, drawn, load_pdk("sky130")) == []


def test_an_ihp_compile_keeps_its_filler_rules(tmp_path):
    from taalasc.checks.drc import check_file
    from taalasc.compile import CompileOptions, compile_model
    from taalasc.config import load_base_array
    from taalasc.custom.fill import keep_out_area_rects
    from taalasc.model.synth import llama_config, write_llama

    model = write_llama(tmp_path / "m", llama_config(hidden=64, layers=1, intermediate=128,
                                                     vocab=256))
    out = tmp_path / "o"
    compile_model(model, out, CompileOptions(base="ihp-sg13g2-chip", formats=("oas",)))
    base = load_base_array("ihp-sg13g2-chip")
    assert check_file(out / "die0.oas", base.pdk, (base.die.width_nm, base.die.height_nm),
                      keep_out_area_rects(base)) == []


def test_wide_metal_spacing_like_ihp_tm2_br():
    """A line at least 5 um wide beside another for more than 50 um needs 5 um (IHP TM2.bR,
    a recommended rule); shorter runs and narrow lines keep the ordinary spacing."""
    import numpy as np

    from taalasc.checks.drc import wide_metal_violations
    from taalasc.config import load_pdk

    ihp = load_pdk("ihp-sg13g2")
    wide = [0, 0, 6_000, 100_000]
    beside_long = [9_000, 0, 11_000, 60_000]       # 3 um away for 60 um: too close
    beside_short = [9_000, 70_000, 11_000, 110_000]  # 30 um of run: fine
    far = [11_500, 0, 13_500, 100_000]             # 5.5 um away: fine
    found = wide_metal_violations(np.array([wide, beside_long, beside_short]), ihp)
    assert [(v.rule, v.x_nm) for v in found] == [("metal.wide_space", 0)]
    assert wide_metal_violations(np.array([wide, far]), ihp) == []
    narrow = [0, 0, 2_000, 100_000]
    assert wide_metal_violations(np.array([narrow, beside_long]), ihp) == []
    assert wide_metal_violations(np.array([wide, beside_long]), load_pdk("sky130")) == []
