"""The shipped PDK and base-array YAML files: they load, every number has a source, and the
base arrays pass the physical rules of their PDK."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from taalasc.config import builtin_names, load_base_array, load_pdk
from taalasc.config.base_array import physical_problems

ROOT = Path(__file__).resolve().parents[1]
PDK_FILES = sorted((ROOT / "pdk_configs").glob("*.yaml"))
BASE_FILES = sorted((ROOT / "base_array").glob("*.yaml"))

EXPECTED_PDKS = {"sky130", "gf180mcu", "ihp-sg13g2", "asap7", "n6-class"}
EXPECTED_BASES = {"sky130-demo", "ihp-sg13g2-chip", "hc1-n6"}


def test_builtin_names_cover_the_shipped_files():
    assert EXPECTED_PDKS <= set(builtin_names("pdk"))
    assert EXPECTED_BASES <= set(builtin_names("base"))
    assert {p.stem for p in PDK_FILES} == set(builtin_names("pdk"))
    assert {p.stem for p in BASE_FILES} == set(builtin_names("base"))


@pytest.mark.parametrize("name", sorted(EXPECTED_PDKS))
def test_every_builtin_pdk_loads(name):
    pdk = load_pdk(name)
    assert pdk.name == name  # the file name and the `name:` key agree
    assert pdk.grid_nm > 0 and pdk.rules.via_size_nm > 0
    if pdk.mask_capable:
        assert pdk.layers is not None


@pytest.mark.parametrize("name", sorted(EXPECTED_BASES))
def test_every_builtin_base_array_loads_and_passes_the_physical_rules(name):
    base = load_base_array(name)
    assert base.name == name
    assert physical_problems(base) == []


def _numeric_leaves(node, path=""):
    """(path, value, containing mapping) for every int/float leaf, walking raw YAML."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield sub, value, node
            else:
                yield from _numeric_leaves(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numeric_leaves(value, f"{path}[{i}]")


@pytest.mark.parametrize("path", PDK_FILES, ids=lambda p: p.stem)
def test_every_number_in_a_pdk_file_has_a_real_source(path):
    # Independent of the schema code: plain yaml, plain walk.
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    leaves = list(_numeric_leaves(data))
    assert len(leaves) > 40  # a PDK file is mostly numbers; an empty walk would prove nothing
    for key, _value, holder in leaves:
        source = holder.get("source")
        assert isinstance(source, str) and source.strip(), f"{path.name}: {key} has no source"
        if source.strip().lower().startswith("estimate"):
            # "estimate" alone is not a source: the reasoning and its anchor must follow.
            assert len(source.strip()) > len("estimate: ") + 15, \
                f"{path.name}: {key} estimate gives no reasoning: {source!r}"


@pytest.mark.parametrize("path", PDK_FILES, ids=lambda p: p.stem)
def test_mask_capable_pdks_take_rules_and_layers_from_public_files(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not data["mask_capable"]:
        pytest.skip("estimation-only PDK")
    cited = [(f"rules.{k}", v["source"]) for k, v in data["rules"].items()]
    cited += [(f"layers.{k}", v["source"]) for k, v in data["layers"].items()]
    for key, source in cited:
        assert not source.lower().startswith("estimate"), f"{path.name}: {key} is an estimate"
        assert "/" in source, f"{path.name}: {key} names no repository path: {source!r}"


def test_custom_layers_are_the_documented_gds_numbers():
    layers = {name: load_pdk(name).layers for name in ("sky130", "gf180mcu", "ihp-sg13g2")}
    got = {name: tuple((getattr(l, r).gds_layer, getattr(l, r).gds_datatype)
                       for r in ("via", "top_metal", "below_metal", "top_metal_label"))
           for name, l in layers.items()}
    assert got == {
        "sky130": ((71, 44), (72, 20), (71, 20), (72, 5)),
        "gf180mcu": ((41, 0), (81, 0), (46, 0), (81, 10)),
        "ihp-sg13g2": ((133, 0), (134, 0), (126, 0), (134, 25)),
    }


def test_sky130_demo_keeps_its_shape():
    base = load_base_array("sky130-demo")
    assert (base.tile_grid.columns, base.tile_grid.rows) == (16, 16)
    assert (base.weight_tile.sites_x, base.weight_tile.sites_y) == (32, 64)
    assert base.pdk.name == "sky130"


def test_ihp_chip_is_a_real_size_die_at_the_landing_pitch():
    from taalasc.base.recipe import IHP_SG13G2

    base = load_base_array("ihp-sg13g2-chip")
    rules = base.pdk.rules
    assert 20 <= base.die.area_mm2 <= 30
    # The base's TopMetal1 landing (via + enclosure both sides) plus TopMetal1 spacing: the
    # via pitch alone (900 + 1060) would put landings 60 nm apart.
    landing = rules.via_size_nm + 2 * rules.via_enclosure_below_nm
    assert base.weight_tile.site_pitch_x_nm == landing + IHP_SG13G2.below_space_nm   # 3540


# Llama 3.1 8B: 8,030,261,248 parameters (config: 32 layers, hidden 4096, FFN 14336,
# 8 KV heads, vocabulary 128,256, untied embeddings).
LLAMA31_8B_PARAMS = 8_030_261_248


def test_hc1_n6_holds_llama_3_1_8b_at_3_5_bits_on_one_die():
    base = load_base_array("hc1-n6")
    assert math.isclose(base.die.area_mm2, 815, rel_tol=0.01)
    need_bits = LLAMA31_8B_PARAMS * (3.5 + 16 / 32)  # weights + one FP16 scale per 32 weights
    die_bits = base.tile_grid.tiles * base.weight_tile.capacity_bits
    assert need_bits <= die_bits <= 1.5 * need_bits  # one die, and not absurdly oversized


def test_a_top_via_encoding_could_not_fit_hc1_on_one_die():
    # The reason hc1-n6 uses an intermediate via pair: even a 0.36 um top-via pitch gives
    # 0.36 x 0.72 um per bit, ~9 dies of 815 mm2 for the same weights.
    base = load_base_array("hc1-n6")
    site_nm2_top_via = 360 * (2 * 360)
    dies = LLAMA31_8B_PARAMS * 3.5 * site_nm2_top_via / (base.die.width_nm * base.die.height_nm)
    assert dies > 8
    chosen = base.weight_tile.site_pitch_x_nm * base.weight_tile.site_pitch_y_nm
    assert LLAMA31_8B_PARAMS * 3.5 * chosen < base.die.width_nm * base.die.height_nm
