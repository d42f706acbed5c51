"""Config error messages, pinned with anchored regexes: what is wrong, where, and a hint."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from taalasc.config import load_base_array, load_pdk
from taalasc.config.base_array import base_array_from_mapping
from taalasc.config.pdk import pdk_from_mapping
from taalasc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RAW_PDK = yaml.safe_load((ROOT / "pdk_configs" / "sky130.yaml").read_text(encoding="utf-8"))
RAW_BASE = yaml.safe_load((ROOT / "base_array" / "sky130-demo.yaml").read_text(encoding="utf-8"))
SKY130 = load_pdk("sky130")


def pdk_error(mutate) -> ConfigError:
    data = copy.deepcopy(RAW_PDK)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        pdk_from_mapping(data, "p.yaml")
    return info.value


def base_error(mutate) -> ConfigError:
    data = copy.deepcopy(RAW_BASE)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        base_array_from_mapping(data, "b.yaml", lambda name, key: SKY130)
    return info.value


def only(exc: ConfigError) -> str:
    assert len(exc.problems) == 1, exc.problems
    return exc.problems[0]


def test_unknown_key_names_the_path_and_suggests_the_right_key():
    exc = pdk_error(lambda d: d["rules"].__setitem__("via_spase_nm", d["rules"].pop("via_space_nm")))
    assert re.fullmatch(r"rules\.via_spase_nm: unknown key \(did you mean 'via_space_nm'\?\); "
                        r"valid keys: density_step_um, .*via_space_nm", exc.problems[0])
    # the misspelt key is also missing under its right name, and both are reported
    assert exc.problems[1:] == ["rules.via_space_nm: is required"]


def test_missing_required_key():
    assert only(pdk_error(lambda d: d["cost"].pop("wafer_cost_usd"))) == \
        "cost.wafer_cost_usd: is required"
    assert re.fullmatch(r"max_dies: is required \(how many dies a model may spill onto\)",
                        only(base_error(lambda d: d.pop("max_dies"))))


def test_wrong_type():
    assert re.fullmatch(r"node_nm\.value: must be an integer, not a string 'big'",
                        only(pdk_error(lambda d: d["node_nm"].__setitem__("value", "big"))))
    assert re.fullmatch(r"tile_grid\.columns: must be an integer, not a number 1\.5",
                        only(base_error(lambda d: d["tile_grid"].__setitem__("columns", 1.5))))


def test_a_bare_number_without_a_source_is_refused():
    assert re.fullmatch(r"rules\.via_size_nm: must be written as \{value: \.\.\., source: \"\.\.\.\"\} "
                        r"\(every number needs its public source\), not 800",
                        only(pdk_error(lambda d: d["rules"].__setitem__("via_size_nm", 800))))


def test_an_empty_source_is_refused():
    exc = pdk_error(lambda d: d["rules"]["via_size_nm"].__setitem__("source", "  "))
    assert only(exc) == "rules.via_size_nm.source: must not be empty"


def test_negative_size():
    assert only(base_error(lambda d: d["die"].__setitem__("width_nm", -5))) == \
        "die.width_nm: must be > 0, not -5"
    assert only(pdk_error(lambda d: d["rules"]["via_size_nm"].__setitem__("value", -800))) == \
        "rules.via_size_nm.value: must be > 0, not -800"


def test_site_pitch_below_via_pitch():
    exc = base_error(lambda d: d["weight_tile"].__setitem__("site_pitch_x_nm", 1200))
    assert re.fullmatch(r"weight_tile\.site_pitch_x_nm: 1200 nm is below the via pitch 1600 nm "
                        r"\(via size 800 \+ spacing 800, sky130 rules\)", only(exc))


def test_tiles_beyond_the_die():
    exc = base_error(lambda d: d["tile_grid"].__setitem__("columns", 40))
    assert re.fullmatch(r"tile_grid\.columns: 40 columns at 61600 nm end at x = 2564000 nm, "
                        r"beyond the die width 2000000 nm", exc.problems[0])


def test_die_beyond_the_reticle_field():
    """A die beyond 32-bit GDS coordinates (3 m) is first of all beyond one exposure field."""
    def grow(d):
        d["die"]["width_nm"] = 3_000_000_000
    exc = base_error(grow)
    assert re.fullmatch(r"die\.width_nm: 3000000000 nm is longer than the 33000000 nm side of "
                        r"the largest exposure field \(26 x 33 mm reticle limit\); a die is "
                        r"printed in one field", only(exc))


def test_multiple_problems_are_reported_at_once_with_key_paths():
    def break_three(d):
        d["weight_tile"]["site_pitch_x_nm"] = "wide"
        d["clock"].pop("target_period_ps")
        d["datapath"]["activity_factor"] = 1.5
    exc = base_error(break_three)
    assert exc.problems == [
        "weight_tile.site_pitch_x_nm: must be an integer, not a string 'wide'",
        "datapath.activity_factor: must be ≤ 1, not 1.5",
        "clock.target_period_ps: is required",
    ]
    assert re.match(r"^b\.yaml: 3 problems\n  b\.yaml: weight_tile\.site_pitch_x_nm: ", str(exc))


def test_yaml_alias_is_rejected(tmp_path):
    path = tmp_path / "alias.yaml"
    text = (ROOT / "pdk_configs" / "sky130.yaml").read_text(encoding="utf-8")
    text = text.replace("node_nm: {value: 130,", "node_nm: &n {value: 130,", 1)
    text = text.replace("grid_nm: {value: 5, source:", "grid_nm: *n\nx_grid: {value: 5, source:", 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^.*alias\.yaml: line \d+: YAML aliases \(\*name\) are "
                                          r"not allowed in taalasc configs$"):
        load_pdk(path)


def test_duplicate_key_is_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    text = (ROOT / "pdk_configs" / "sky130.yaml").read_text(encoding="utf-8")
    path.write_text(text + "node_nm: {value: 90, source: \"again\"}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^.*dup\.yaml: line \d+: duplicate key 'node_nm'$"):
        load_pdk(path)


def test_base_array_naming_an_unknown_pdk_suggests_the_right_one(tmp_path):
    path = tmp_path / "base.yaml"
    text = (ROOT / "base_array" / "sky130-demo.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace("pdk: sky130\n", "pdk: sky131\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_base_array(path)
    assert info.value.source == str(path)
    assert re.fullmatch(r"pdk: unknown PDK 'sky131' \(did you mean 'sky130'\?\); built-in: "
                        r"asap7, gf180mcu, .*sky130", only(info.value))


def test_unknown_builtin_base_array_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"^sky130-dmeo: unknown base array 'sky130-dmeo' "
                                          r"\(did you mean 'sky130-demo'\?\); built-in: "):
        load_base_array("sky130-dmeo")


def test_the_label_layer_is_optional_and_checked_like_the_other_layers():
    """layers.top_metal_label: absent is fine (no labels are written); present, it is checked
    as every layer key is, and may not share another layer key's layer/datatype."""
    data = copy.deepcopy(RAW_PDK)
    data["layers"].pop("top_metal_label")
    assert pdk_from_mapping(data, "p.yaml").layers.top_metal_label is None
    assert SKY130.layers.top_metal_label.gds_layer == 72
    assert only(pdk_error(lambda d: d["layers"]["top_metal_label"].__setitem__(
        "gds_datatype", -5))) == \
        "layers.top_metal_label.gds_datatype: must be ≥ 0, not -5"
    assert only(pdk_error(lambda d: d["layers"]["top_metal_label"].update(
        gds_layer=72, gds_datatype=20))) == \
        "layers.top_metal_label: 72/20 is also layers.top_metal's; each layer key needs its " \
        "own layer/datatype"
