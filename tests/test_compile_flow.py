"""End-to-end compile: the README's demo and a BF16 Llama checkpoint, read back independently."""

import hashlib
import json
import re
from pathlib import Path

import gdstk
import numpy as np
import klayout.db as kdb
import pytest

from taalasc.errors import PlacementError
from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.model.synth import llama_config, write_llama


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "-o", str(out)]) == 0
    return out


def _klayout_shapes(path: Path) -> dict[tuple[int, int], int]:
    layout = kdb.Layout()
    layout.read(str(path))
    top = layout.top_cells()
    assert len(top) == 1
    counts = {}
    for index in layout.layer_indexes():
        info = layout.get_info(index)
        n = 0
        it = top[0].begin_shapes_rec(index)
        while not it.at_end():
            n += 1
            it.next()
        if n:
            counts[(info.layer, info.datatype)] = n
    return counts


def test_demo_writes_the_full_output_set(demo):
    masks = demo / "masks"
    names = sorted(p.name for p in masks.iterdir())
    assert names == ["die0.gds", "die0.oas", "die0.png", "manifest.json", "overview.png",
                     "placement.npy", "report.html", "report.json", "report.md", "sky130.lyp"]
    manifest = json.loads((masks / "manifest.json").read_text())
    for name, info in manifest["outputs"].items():
        data = (masks / name).read_bytes()
        assert info["bytes"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()


def test_only_the_custom_layers_and_one_via_per_bit_plus_one_per_strap(demo):
    masks = demo / "masks"
    manifest = json.loads((masks / "manifest.json").read_text())
    die = manifest["dies"][0]
    placement = manifest["placement"]
    pdk = load_base_array("sky130-demo").pdk
    via, metal = (pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype), \
        (pdk.layers.top_metal.gds_layer, pdk.layers.top_metal.gds_datatype)
    fill = (pdk.layers.top_metal_fill.gds_layer, pdk.layers.top_metal_fill.gds_datatype)
    boundary = (pdk.layers.boundary.gds_layer, pdk.layers.boundary.gds_datatype)
    label = (pdk.layers.top_metal_label.gds_layer, pdk.layers.top_metal_label.gds_datatype)
    # the placement file read with plain numpy (its fields are named in the manifest)
    rows = np.load(masks / "placement.npy", allow_pickle=False)
    assert list(rows.dtype.names) == placement["row_fields"]
    bits = sum((int(a["row1"]) - int(a["row0"])) * (int(a["col1"]) - int(a["col0"]))
               * int(a["bits"]) for a in rows)
    assert die["bit_vias"] == bits == die["stored_bits"]
    tiles = len(rows)
    assert tiles == placement["tiles_used"]
    assert die["tie_vias"] == tiles * 2 * load_base_array("sky130-demo").weight_tile.sites_y
    for fmt in ("gds", "oas"):
        counts = _klayout_shapes(masks / f"die0.{fmt}")
        assert set(counts) == {via, metal, fill, boundary, label} and counts[boundary] == 1
        assert counts[via] == bits + die["tie_vias"] + die["route_vias"] == die["via_count"]
        assert counts[label] == die["tie_vias"] + 1   # a net label per strap, the die's name
    lib = gdstk.read_gds(str(masks / "die0.gds"))
    flat = lib.top_level()[0].copy("flat").flatten()
    assert {(p.layer, p.datatype) for p in flat.polygons} == {via, metal, fill, boundary}
    assert sum(1 for p in flat.polygons if (p.layer, p.datatype) == via) == die["via_count"]


def test_via_size_and_spacing_hold_in_klayout(demo):
    pdk = load_base_array("sky130-demo").pdk
    layout = kdb.Layout()
    layout.read(str(demo / "masks" / "die0.oas"))
    top = layout.top_cells()[0]
    index = layout.find_layer(pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype)
    vias = kdb.Region(top.begin_shapes_rec(index))
    dbu = layout.dbu
    size = round(pdk.rules.via_size_nm / 1000 / dbu)
    assert vias.width_check(size).count() == 0
    assert vias.space_check(round(pdk.rules.via_space_nm / 1000 / dbu)).count() == 0
    boxes = {(p.bbox().width(), p.bbox().height()) for p in vias.each()}
    assert all(p.is_box() for p in vias.each())
    assert boxes == {(size, size)}


def test_compile_is_byte_reproducible(demo, tmp_path):
    assert main(["compile", str(demo / "model"), "-o", str(tmp_path / "again"), "--quiet"]) == 0
    first = json.loads((demo / "masks" / "manifest.json").read_text())["outputs"]
    second = json.loads((tmp_path / "again" / "manifest.json").read_text())["outputs"]
    assert first == second


def test_same_inputs_recompile_in_place_and_different_inputs_need_force(demo, tmp_path, capsys):
    out = tmp_path / "out"
    model = str(demo / "model")
    assert main(["compile", model, "-o", str(out), "--quiet"]) == 0
    assert main(["compile", model, "-o", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["compile", model, "-o", str(out), "--quiet", "--bits", "3"]) == 1
    assert re.search(r"^error: .*holds a different compile; pass --force to replace it$",
                     capsys.readouterr().err, re.M)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["compile", model, "-o", str(out), "--quiet", "--bits", "3", "--force"]) == 0


def test_a_model_too_big_for_the_default_base_goes_to_the_reticle_base(tmp_path):
    """No --base: the built-in base that holds the model, on the same PDK first."""
    from taalasc.compile import CompileOptions, plan

    model = write_llama(tmp_path / "m", llama_config(hidden=128, layers=4, intermediate=512,
                                                     vocab=1024))
    base, *_, placement = plan(model, CompileOptions(max_dies=1, base_fallback=True))
    assert (base.name, placement.dies) == ("sky130-reticle", 1)
    with pytest.raises(PlacementError, match=r"allows 1 dies? .* built-in bases that hold it"):
        plan(model, CompileOptions(max_dies=1))   # a base the user chose stays chosen
    big = write_llama(tmp_path / "big", llama_config(hidden=256, layers=8, intermediate=1024,
                                                     vocab=4096))
    with pytest.raises(PlacementError, match=r"sky130-demo .*; no built-in base array holds "
                                             r"it$"):   # no base holds it: the plain error
        plan(big, CompileOptions(max_dies=1, default_bits=8, base_fallback=True))


def test_too_big_for_the_allowed_dies_is_an_error_before_writing(tmp_path, capsys):
    model = write_llama(tmp_path / "m", llama_config(hidden=128, layers=4, intermediate=512,
                                                     vocab=1024))
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "--max-dies", "1", "--quiet",
                 "--base", "sky130-demo"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: model needs [\d,]+ bits in [\d,]+ weight tiles, but base array "
                        r"sky130-demo has 256 tiles per die and allows 1 dies? \(256 tiles\); "
                        r"\d+ dies would be needed; built-in bases that hold it: "
                        r"gf180mcu-chip \(1 die\), ihp-sg13g2-reticle \(1 die\), "
                        r"sky130-reticle \(1 die\)\n", err), err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_estimation_only_base_is_refused(tmp_path, capsys):
    model = write_llama(tmp_path / "m", llama_config())
    assert main(["compile", str(model), "--base", "hc1-n6", "-o", str(tmp_path / "o")]) == 1
    assert "estimation-only PDK" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bf16_sharded_tied_checkpoint_compiles_on_two_dies(tmp_path):
    config = llama_config(hidden=96, layers=3, heads=4, kv_heads=2, intermediate=256, vocab=512,
                          tie_embeddings=True)
    model = write_llama(tmp_path / "m", config, dtype="BF16", shards=2)
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "--format", "oas", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["placement"]["dies"] >= 2
    assert sorted(p.name for p in out.glob("die*")) == \
        sorted(f"die{d}.{ext}" for d in range(manifest["placement"]["dies"])
               for ext in ("oas", "png"))
    assert "lm_head.weight" not in manifest["quantization"]


def test_every_mask_capable_base_array_compiles_the_demo(demo, tmp_path):
    from taalasc.config import builtin_names

    from taalasc.model.synth import write_demo

    ternary_model = tmp_path / "ternary-model"
    ternary_model.mkdir()
    write_demo(ternary_model, ternary=True)
    for name in builtin_names("base"):
        base = load_base_array(name)
        if not base.pdk.mask_capable:
            continue
        ternary = base.weight_tile.encoding == "ternary"   # ternary bases: ternary weights
        model = str(ternary_model if ternary else demo / "model")
        out = tmp_path / name
        assert main(["compile", model, "--base", name, "-o", str(out), "--format", "oas",
                     "--quiet", *(["--bits", "2"] if ternary else [])]) == 0, name
        assert main(["verify", str(out), model, "--format", "oas"]) == 0, name
