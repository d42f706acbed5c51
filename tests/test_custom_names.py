"""Cell names of die files are unique to the compile and the die (taalasc/custom/names.py): two
dies of one compile and two compiles of different checkpoints share no cell name, so their die
files merge into one library without a clash."""

from __future__ import annotations

import json
from pathlib import Path

import klayout.db as kdb
import pytest

from taalasc.base.merge import copy_cells
from taalasc.compile import CompileOptions, cell_name_tag, compile_model
from taalasc.config import load_base_array
from taalasc.custom.names import PREFIX, TILE, compile_tag, die_prefix, local_name
from taalasc.errors import MaskError
from taalasc.formats import gdsii
from taalasc.model.synth import llama_config, write_llama

# Two dies on the built-in sky130-demo base (as the tamper corpus's model).
CONFIG = llama_config(hidden=64, layers=3, intermediate=128, vocab=64)


@pytest.fixture(scope="module")
def compiles(tmp_path_factory) -> list[Path]:
    """The same model shape compiled from two checkpoints (seeds 0 and 1), GDSII and OASIS."""
    root = tmp_path_factory.mktemp("names")
    out = []
    for seed in (0, 1):
        write_llama(root / f"m{seed}", CONFIG, seed=seed)
        compile_model(root / f"m{seed}", root / f"masks{seed}",
                      CompileOptions(formats=("gds", "oas")))
        out.append(root / f"masks{seed}")
    return out


def _cell_names(path: Path) -> tuple[set[str], str]:
    """Every cell name of a die file and its top cell, read by KLayout."""
    layout = kdb.Layout()
    layout.read(str(path))
    (top,) = layout.top_cells()
    return {layout.cell(i).name for i in range(layout.cells())}, top.name


def test_two_dies_and_two_compiles_share_no_cell_name(compiles):
    seen: dict[str, tuple] = {}
    for folder in compiles:
        manifest = json.loads((folder / "manifest.json").read_text())
        tag = cell_name_tag(manifest["inputs"])
        assert len(manifest["dies"]) == 2
        for die in (0, 1):
            prefix = die_prefix(tag, die)
            names, top = _cell_names(folder / f"die{die}.gds")
            assert (names, top) == _cell_names(folder / f"die{die}.oas")   # one naming
            assert top == prefix + "DIE"
            assert all(n.startswith(prefix) and len(n) <= 32 for n in names)
            assert {"DIE", "FILL", "FILLSQ", "STRAPS", "TIES"} <= {local_name(n) for n in names}
            assert any(TILE.match(n) for n in names)
            for name in names:
                assert name not in seen, (name, seen.get(name), (folder.name, die))
                seen[name] = (folder.name, die)


def test_die_files_of_two_compiles_merge_into_one_library(compiles, tmp_path):
    """All four die files copied into one GDSII library: no name is defined twice, and each
    die's top cell still draws exactly its own vias (KLayout reads the merged file)."""
    merged = tmp_path / "all.gds"
    taken: set[str] = set()
    tops = {}
    with open(merged, "wb") as out:
        out.write(gdsii.header("ALL"))
        for folder in compiles:
            for die in (0, 1):
                tops[copy_cells(folder / f"die{die}.gds", out, taken)] = (folder, die)
        out.write(gdsii.footer())
    layout = kdb.Layout()
    layout.read(str(merged))
    assert sorted(c.name for c in layout.top_cells()) == sorted(tops)
    layer = load_base_array("sky130-demo").pdk.layers.via
    via = layout.find_layer(layer.gds_layer, layer.gds_datatype)
    for top, (folder, die) in tops.items():
        n = kdb.Region(layout.cell(top).begin_shapes_rec(via)).count()
        assert n == json.loads((folder / "manifest.json").read_text())["dies"][die]["via_count"]


def test_a_die_file_merged_twice_still_clashes(compiles, tmp_path):
    """The merge's clash check itself stays: the same die file twice is refused."""
    with open(tmp_path / "x.gds", "wb") as out:
        taken: set[str] = set()
        copy_cells(compiles[0] / "die0.gds", out, taken)
        with pytest.raises(MaskError, match=r"cell 'T[0-9A-F]{8}_D0_\w+' is also in the other"):
            copy_cells(compiles[0] / "die0.gds", out, taken)


def test_tags_and_prefixes():
    assert compile_tag("a3f09c12" + "0" * 56) == "TA3F09C12"
    assert die_prefix("TA3F09C12", 159) == "TA3F09C12_D159_"
    assert PREFIX.match("TA3F09C12_D159_T0123456789abcdef").group() == "TA3F09C12_D159_"
    assert local_name("TA3F09C12_D0_FILL") == "FILL" and local_name("TLB_base") == "TLB_base"
    # a tile cell of die 999 is GDSII's conservative 32 characters
    assert len(die_prefix("TA3F09C12", 999) + "T" + "0" * 16) == 32
    with pytest.raises(MaskError, match=r"^cell name tag must be T and 8 upper-case hex"):
        die_prefix("DIE", 0)
    with pytest.raises(MaskError, match=r"^inputs digest must be lower-case hex"):
        compile_tag("XYZ")
