"""Cell names of die files are unique to the compile and the die, or say their content
(taalasc/custom/names.py): two dies of one compile and two compiles of different checkpoints
share no prefixed cell name, chunk cells of equal names have equal contents, so their die files
merge into one library without a clash."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import klayout.db as kdb
import numpy as np
import pytest

from taalasc.base.merge import copy_cells
from taalasc.compile import CompileOptions, cell_name_tag, compile_model
from taalasc.config import load_base_array
from taalasc.custom.names import (PREFIX, TILE, chunk_name, compile_tag, die_prefix,
                                  local_name, parse_chunk)
from taalasc.custom.tiles import chunk_tag, render_tile
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


def _chunk_vias(path: Path) -> dict[str, list[tuple]]:
    """Chunk cell name -> its via boxes and layers (sorted), read by KLayout."""
    layout = kdb.Layout()
    layout.read(str(path))
    out = {}
    for i in range(layout.cells()):
        cell = layout.cell(i)
        if parse_chunk(cell.name) is not None:
            out[cell.name] = sorted((str(layout.get_info(k)), str(s.bbox()))
                                    for k in layout.layer_indexes() for s in cell.shapes(k).each())
    return out


def test_two_dies_and_two_compiles_share_no_prefixed_cell_name(compiles):
    seen: dict[str, tuple] = {}
    chunks: dict[str, list[tuple]] = {}
    for folder in compiles:
        manifest = json.loads((folder / "manifest.json").read_text())
        tag = cell_name_tag(manifest["inputs"])
        assert len(manifest["dies"]) == 2
        for die in (0, 1):
            prefix = die_prefix(tag, die)
            names, top = _cell_names(folder / f"die{die}.gds")
            assert (names, top) == _cell_names(folder / f"die{die}.oas")   # one naming
            assert top == prefix + "DIE"
            assert all(len(n) <= 32 for n in names)
            prefixed = {n for n in names if parse_chunk(n) is None}
            assert all(n.startswith(prefix) for n in prefixed)
            assert {"DIE", "FILL", "FILLSQ", "STRAPS", "TIES"} <= {local_name(n) for n in names}
            assert any(TILE.match(n) for n in names) and len(prefixed) < len(names)
            for name in prefixed:
                assert name not in seen, (name, seen.get(name), (folder.name, die))
                seen[name] = (folder.name, die)
            # a chunk cell's name is its content: the same name, the same vias, in every file
            for fmt in ("gds", "oas"):
                for name, vias in _chunk_vias(folder / f"die{die}.{fmt}").items():
                    assert chunks.setdefault(name, vias) == vias, name
                    n, value, _ = parse_chunk(name)
                    assert len(vias) == n
    assert len(chunks) > 50


def test_chunk_names_follow_the_geometry():
    """Chunk names differ between base arrays whose chunk vias differ (site pitch, via size,
    via layer) and agree where only other things differ; writer and tile renderer agree."""
    base = load_base_array("sky130-demo")
    tile, pdk = base.weight_tile, base.pdk
    wider = dataclasses.replace(base, weight_tile=dataclasses.replace(
        tile, site_pitch_x_nm=tile.site_pitch_x_nm + pdk.grid_nm))
    bigger_via = dataclasses.replace(base, pdk=dataclasses.replace(pdk, rules=dataclasses.replace(
        pdk.rules, via_size_nm=pdk.rules.via_size_nm + 2 * pdk.grid_nm)))
    other_layer = dataclasses.replace(base, pdk=dataclasses.replace(pdk, layers=dataclasses.replace(
        pdk.layers, via=dataclasses.replace(pdk.layers.via,
                                            gds_datatype=pdk.layers.via.gds_datatype + 1))))
    fewer_dies = dataclasses.replace(base, name="one die", max_dies=1)
    tags = [chunk_tag(b) for b in (base, wider, bigger_via, other_layer)]
    assert len(set(tags)) == 4 and chunk_tag(fewer_dies) == tags[0]
    assert chunk_name(8, 0xA5, tags[0]) == "V8a5" + tags[0] and len(tags[0]) == 8
    assert chunk_name(3, 5, tags[0]) == "V35" + tags[0]
    assert parse_chunk("V8a5" + tags[0]) == (8, 0xA5, tags[0])
    assert parse_chunk("V3a5" + tags[0]) is None and parse_chunk("TA3F09C12_D0_DIE") is None
    bits = np.tile(np.array([1, 0, 1, 0, 0, 1, 0, 1], np.uint8), 4)
    for b, tag in zip((base, wider), tags):
        gds = render_tile(b, bits, ("gds",), prefix="TA3F09C12_D0_").data["gds"]
        assert ("V8a5" + tag).encode() in gds
        assert (tags[1] if tag == tags[0] else tags[0]).encode() not in gds
    with pytest.raises(MaskError, match=r"^chunk tag must be 8 base32 characters"):
        chunk_name(8, 0, "abc")


def test_die_files_of_two_compiles_merge_into_one_library(compiles, tmp_path):
    """All four die files copied into one GDSII library: no name is defined twice, and each
    die's top cell still draws exactly its own vias (KLayout reads the merged file)."""
    merged = tmp_path / "all.gds"
    taken: dict[str, bytes] = {}
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
    assert layout.cells() == len(taken) and sum(map(bool, taken.values())) > 50  # chunks once
    layer = load_base_array("sky130-demo").pdk.layers.via
    via = layout.find_layer(layer.gds_layer, layer.gds_datatype)
    for top, (folder, die) in tops.items():
        # flattened: an unflattened Region's count() takes a cell's instances from the whole
        # layout, so chunk cells shared between the dies' hierarchies would count twice
        n = kdb.Region(layout.cell(top).begin_shapes_rec(via)).flatten().count()
        assert n == json.loads((folder / "manifest.json").read_text())["dies"][die]["via_count"]


def test_a_die_file_merged_twice_still_clashes(compiles, tmp_path):
    """The merge's clash check itself stays: the same die file twice is refused."""
    with open(tmp_path / "x.gds", "wb") as out:
        taken: dict[str, bytes] = {}
        copy_cells(compiles[0] / "die0.gds", out, taken)
        with pytest.raises(MaskError, match=r"cell 'T[0-9A-F]{8}_D0_\w+' is also in the other"):
            copy_cells(compiles[0] / "die0.gds", out, taken)


def test_a_chunk_cell_of_the_same_name_and_other_contents_is_refused(compiles, tmp_path):
    """A chunk cell met again must hold the same bytes (a hash collision, or an edited file):
    one via of a chunk cell of compile 1's die 1 moved by 1 nm is refused on merge."""
    data = bytearray((compiles[1] / "die1.gds").read_bytes())
    shared = set(_chunk_vias(compiles[0] / "die0.gds")) & set(_chunk_vias(compiles[1] / "die1.gds"))
    name = sorted(shared)[0].encode()
    xy = data.index(b"\x00\x2c\x10\x03", data.index(b"\x06" + name))  # its first via's XY
    x = struct.unpack_from(">i", data, xy + 4)[0]
    struct.pack_into(">i", data, xy + 4, x + 1)
    (tmp_path / "edited.gds").write_bytes(bytes(data))
    with open(tmp_path / "x.gds", "wb") as out:
        taken: dict[str, bytes] = {}
        copy_cells(compiles[0] / "die0.gds", out, taken)
        with pytest.raises(MaskError, match=rf"cell '{name.decode()}' is also in the other file "
                                            r"with other contents"):
            copy_cells(tmp_path / "edited.gds", out, taken)


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
