"""verify: extraction from geometry, a moved via caught and located, BERT and LoRA paths."""

import json
import re
import shutil

import gdstk
import numpy as np
import pytest

from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.custom.names import local_name
from taalasc.extract.extract import extract
from taalasc.model.synth import bert_config, llama_config, write_bert, write_llama
from taalasc.place.store import read_placement

from gdstk_ref import edit_tile


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    model = write_llama(root / "model", llama_config(hidden=64, layers=2, intermediate=128,
                                                     vocab=256), dtype="BF16")
    out = root / "masks"
    assert main(["compile", str(model), "-o", str(out), "--quiet"]) == 0
    return model, out


def _tile_of(out, tensor, kind="codes"):
    manifest = json.loads((out / "manifest.json").read_text())
    placement = read_placement(out, manifest)
    return next((slot, seg) for slot, seg in placement.assignments
                if seg.tensor == tensor and seg.kind == kind)


def _move_one_via(src, dst, slot, site, base):
    """Flatten the tile at ``slot`` and move the via of ``site`` to its other slot."""
    tile = base.weight_tile
    i, j = site % tile.sites_x, site // tile.sites_x
    x = tile.slot_x_nm(i)
    y_high, y_low = tile.strap_y_nm(j, True), tile.strap_y_nm(j, False)
    via_layer = (base.pdk.layers.via.gds_layer, base.pdk.layers.via.gds_datatype)

    def move(flat):
        moved = 0
        for poly in flat.polygons:
            if (poly.layer, poly.datatype) != via_layer:
                continue
            (x0, y0), (x1, y1) = poly.bounding_box()
            cx, cy = round((x0 + x1) / 2), round((y0 + y1) / 2)
            if abs(cx - x) <= 5 and (abs(cy - y_high) <= 5 or abs(cy - y_low) <= 5):
                poly.translate(0, (y_low - y_high) if abs(cy - y_high) <= 5 else (y_high - y_low))
                moved += 1
        assert moved == 1

    edit_tile(src, dst, base, slot, move)


def test_extraction_recovers_every_value(llama):
    model, out = llama
    for fmt in ("gds", "oas"):
        ex = extract(out, fmt)
        assert ex.defect_count == 0
        assert ex.vias_read == json.loads((out / "manifest.json").read_text())["dies"][0]["via_count"]
    assert main(["verify", str(out), str(model)]) == 0


def test_a_single_moved_via_is_caught_and_located(llama, tmp_path, capsys):
    model, out = llama
    bad = tmp_path / "masks"
    shutil.copytree(out, bad)
    base = load_base_array("sky130-demo")
    tensor = "model.layers.1.mlp.down_proj.weight"
    slot, seg = _tile_of(out, tensor)
    site = 5 * seg.bits + 2  # element 5 of the block, bit 2
    _move_one_via(out / "die0.gds", bad / "die0.gds", slot, site, base)
    row, col = seg.rows[0] + 5 // seg.shape[1], seg.cols[0] + 5 % seg.shape[1]
    assert main(["verify", str(bad), str(model), "--json", str(tmp_path / "v.json")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^error: verify failed: files, codes, datapath.*{re.escape(tensor)} codes: 1 "
                     rf"elements differ, first at \[{row}, {col}\]", err, re.M), err
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["mismatches"] == [m for m in result["mismatches"] if tensor in m]
    # The OASIS files are untouched and decode to the right codes, but the folder still
    # fails: its GDSII file is not what the compile writes.
    assert main(["verify", str(bad), str(model), "--format", "oas",
                 "--json", str(tmp_path / "o.json")]) == 2
    checks = {c["name"]: c["passed"] for c in json.loads((tmp_path / "o.json").read_text())["checks"]}
    assert checks["codes"] and not checks["files"]


def test_a_short_is_reported_with_tensor_and_element(llama, tmp_path, capsys):
    model, out = llama
    bad = tmp_path / "masks"
    shutil.copytree(out, bad)
    base = load_base_array("sky130-demo")
    tensor = "model.layers.0.self_attn.q_proj.weight"
    slot, seg = _tile_of(out, tensor)
    lib = gdstk.read_gds(str(out / "die0.gds"))
    top = lib.top_level()[0]
    ox, oy = base.tile_grid.tile_origin_nm(slot.column, slot.row)
    tile, size = base.weight_tile, base.pdk.rules.via_size_nm
    layer = (base.pdk.layers.via.gds_layer, base.pdk.layers.via.gds_datatype)
    site = 3 * seg.bits  # element 3, bit 0: add the via it does not have -> both slots
    ex = extract(out, "gds")
    code = int(ex.codes[tensor][seg.rows[0], seg.cols[0] + 3])
    high = not (code & 1)
    cx = ox + tile.slot_x_nm(site % tile.sites_x)
    cy = oy + tile.strap_y_nm(site // tile.sites_x, high)
    top.add(gdstk.rectangle((cx - size // 2, cy - size // 2), (cx + size // 2, cy + size // 2),
                            layer=layer[0], datatype=layer[1]))
    lib.write_gds(str(bad / "die0.gds"))
    assert main(["verify", str(bad), str(model), "--json", str(tmp_path / "v.json")]) == 2
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["defect_count"] == 1
    assert result["defects"] == [f"short at die 0 tile ({slot.column}, {slot.row}): {tensor} "
                                 f"codes [{seg.rows[0]}, {seg.cols[0] + 3}] bit 0"]


def test_verify_against_another_checkpoint_fails(llama, tmp_path, capsys):
    _, out = llama
    other = write_llama(tmp_path / "other", llama_config(hidden=64, layers=2, intermediate=128,
                                                         vocab=256), dtype="BF16", seed=1)
    assert main(["verify", str(out), str(other)]) == 2
    assert "verify failed: model, files, codes" in capsys.readouterr().err


def test_bert_compiles_and_verifies(tmp_path):
    model = write_bert(tmp_path / "bert", bert_config(hidden=64, layers=2, intermediate=128,
                                                     vocab=256))
    out = tmp_path / "masks"
    assert main(["compile", str(model), "-o", str(out), "--bits", "6", "--quiet"]) == 0
    assert main(["verify", str(out), str(model), "--json", str(tmp_path / "v.json")]) == 0
    figures = json.loads((tmp_path / "v.json").read_text())["figures"]
    assert figures["hidden_cosine_mean"] > 0.99


def test_lora_adapter_runs_from_sram_on_top_of_the_printed_weights(llama, tmp_path):
    from taalasc.lora import write_peft_adapter
    from taalasc.model import open_checkpoint

    model, out = llama
    adapter = write_peft_adapter(tmp_path / "lora", open_checkpoint(model), rank=4, alpha=8)
    assert main(["verify", str(out), str(model), "--lora", str(adapter),
                 "--json", str(tmp_path / "v.json")]) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["passed"] and result["figures"]["logit_cosine_mean"] > 0.95


def test_bad_tokens_are_an_input_error(llama, capsys):
    model, out = llama
    assert main(["verify", str(out), str(model), "--tokens", "1 2 99999"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["verify", str(out), str(model), "--tokens", "a b"]) == 1


def test_simulate_runs_the_weights_read_back_from_the_masks(llama, tmp_path, capsys):
    import numpy as np

    model, out = llama
    assert main(["simulate", str(out), "--tokens", "1 2 3"]) == 1
    assert "is a compile folder: name the checkpoint" in capsys.readouterr().err
    saved = tmp_path / "logits"
    assert main(["simulate", str(out), "--model", str(model), "--tokens", "1 2 3",
                 "--save-logits", str(saved)]) == 0
    from_masks = np.load(saved / "chip.npy")
    # The same checkpoint quantized in memory with the compile's options gives the same chip.
    assert main(["simulate", str(model), "--tokens", "1 2 3", "--save-logits",
                 str(tmp_path / "mem")]) == 0
    assert from_masks.shape == (3, 256)
    assert np.array_equal(from_masks, np.load(tmp_path / "mem" / "chip.npy"))
    # two reader processes: the same chip
    assert main(["simulate", str(out), "--model", str(model), "--tokens", "1 2 3", "-j", "2",
                 "--save-logits", str(tmp_path / "two")]) == 0
    assert np.array_equal(from_masks, np.load(tmp_path / "two" / "chip.npy"))


def test_simulate_applies_a_lora_adapter(llama, tmp_path):
    import numpy as np

    from taalasc.lora import write_peft_adapter
    from taalasc.model import open_checkpoint

    model, out = llama
    adapter = write_peft_adapter(tmp_path / "lora", open_checkpoint(model), rank=4, alpha=8)
    for name, extra in (("plain", []), ("lora", ["--lora", str(adapter)])):
        assert main(["simulate", str(out), "--model", str(model), "--tokens", "5 6 7",
                     "--save-logits", str(tmp_path / name), *extra]) == 0
    plain, lora = (np.load(tmp_path / n / "chip.npy") for n in ("plain", "lora"))
    assert not np.array_equal(plain, lora)
    float_lora = np.load(tmp_path / "lora" / "float.npy")
    cos = (lora * float_lora).sum(1) / np.linalg.norm(lora, axis=1) / np.linalg.norm(float_lora, axis=1)
    assert cos.min() > 0.95


def test_dies_read_concurrently_give_the_same_extraction(tmp_path):
    model = write_llama(tmp_path / "m", llama_config(hidden=96, layers=4, intermediate=256,
                                                     vocab=512))
    out = tmp_path / "o"
    assert main(["compile", str(model), "-o", str(out), "--format", "gds", "--quiet"]) == 0
    serial, both = extract(out, "gds", jobs=1), extract(out, "gds", jobs=2)
    assert json.loads((out / "manifest.json").read_text())["placement"]["dies"] >= 3
    assert serial.vias_read == both.vias_read and serial.defect_count == both.defect_count == 0
    for name in serial.codes:
        assert np.array_equal(serial.codes[name], both.codes[name])
        assert np.array_equal(serial.scales[name].view(np.uint16), both.scales[name].view(np.uint16))
    assert main(["verify", str(out), str(model), "-j", "2"]) == 0


def test_datapath_runs_the_quantizer_weights_only_when_they_differ(llama, tmp_path,
                                                                   monkeypatch):
    """Bit-identical weights: one chip run serves both sides (and says so); the moved-via
    test above covers the other branch, where the second run shows the difference."""
    import taalasc.sim as sim

    model, out = llama
    runs = []
    original = sim.run_chip
    monkeypatch.setattr(sim, "run_chip", lambda *a, **k: (runs.append(1), original(*a, **k))[1])
    assert main(["verify", str(out), str(model), "--json", str(tmp_path / "v.json")]) == 0
    detail = {c["name"]: c["detail"]
              for c in json.loads((tmp_path / "v.json").read_text())["checks"]}
    assert "bit-identical, so one run serves both" in detail["datapath"]
    assert len(runs) == 1


def test_swapped_die_files_fail_with_the_codes_they_hold(tmp_path, capsys):
    """Two die files swapped: the folder check names the file, the codes check the tensor,
    and the chip model's failure on the garbage weights stays a failed check (exit 2), not
    an error that hides them."""
    model = write_llama(tmp_path / "m", llama_config(hidden=64, layers=2, heads=4, kv_heads=2,
                                                     intermediate=192, vocab=512), seed=3)
    out = tmp_path / "o"
    assert main(["compile", str(model), "-o", str(out), "--format", "gds", "--quiet"]) == 0
    assert len(json.loads((out / "manifest.json").read_text())["dies"]) == 2
    capsys.readouterr()
    a, b = out / "die0.gds", out / "die1.gds"
    a.rename(tmp_path / "x"), b.rename(a), (tmp_path / "x").rename(b)
    assert main(["verify", str(out), str(model), "--json", str(tmp_path / "v.json")]) == 2
    err = capsys.readouterr().err
    assert re.match(r"error: verify failed: files, codes, datapath; \S+ codes: \d+ elements "
                    r"differ", err), err
    result = json.loads((tmp_path / "v.json").read_text())
    assert any(d.startswith("die0.gds: ") for d in result["differences"])
    assert "Traceback" not in err and "RuntimeWarning" not in err


def test_a_checkpoint_without_config_is_verified_for_files_and_codes(tmp_path):
    model = write_llama(tmp_path / "m", llama_config(hidden=64, layers=1, intermediate=128,
                                                     vocab=256))
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model / "model.safetensors", bare / "model.safetensors")
    out = tmp_path / "o"
    assert main(["compile", str(bare / "model.safetensors"), "-o", str(out), "--quiet"]) == 0
    assert main(["verify", str(out), str(bare / "model.safetensors"),
                 "--json", str(tmp_path / "v.json")]) == 0
    checks = {c["name"]: c for c in json.loads((tmp_path / "v.json").read_text())["checks"]}
    assert checks["files"]["passed"] and checks["codes"]["passed"]
    assert checks["datapath"]["detail"].startswith("skipped: no config.json")
    (out / "report.md").write_text("edited\n")
    assert main(["verify", str(out), str(bare / "model.safetensors")]) == 2


def test_a_missing_tie_via_leaves_a_strap_floating_and_is_found(llama, tmp_path, capsys):
    """Delete the tie via of one strap in the TIES cell: that strap of every used tile no
    longer reaches its rail. Extraction counts tie vias per strap and reports each."""
    model, out = llama
    bad = tmp_path / "masks"
    shutil.copytree(out, bad)
    base = load_base_array("sky130-demo")
    lib = gdstk.read_gds(str(out / "die0.gds"))
    ties = next(c for c in lib.cells if local_name(c.name) == "TIES")
    assert len(ties.polygons) == 2 * base.weight_tile.sites_y
    ties.remove(ties.polygons[3])   # site row 1, low strap (VGND)
    lib.write_gds(str(bad / "die0.gds"))
    assert main(["verify", str(bad), str(model), "--json", str(tmp_path / "v.json")]) == 2
    result = json.loads((tmp_path / "v.json").read_text())
    tiles = json.loads((out / "manifest.json").read_text())["placement"]["tiles_used"]
    assert result["defect_count"] == tiles
    assert all(d.startswith("tie-open at die 0 tile") and "low strap of site row 1" in d
               for d in result["defects"])
    assert "verify failed: files, codes" in capsys.readouterr().err
