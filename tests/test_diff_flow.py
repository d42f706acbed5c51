"""`taalasc diff` end to end: a model against a copy with a handful of changed weights."""

import json
import re
import shutil
import struct
from pathlib import Path

import gdstk
import klayout.db as kdb
import numpy as np
import pytest

from htmlpage import browser, browser_check, parse_page
from termtext import shown, squeeze, widest
from taalasc import cli
from taalasc.cli import main
from taalasc.compile import CompileOptions, compile_model
from taalasc.config import load_base_array
from taalasc.custom.names import parse_chunk
from taalasc.diff import diff_masks, heatmap_rgb, to_json, to_markdown
from taalasc.diff.report import _heat_dies, write_xor
from taalasc.png import png_bytes
from taalasc.model import open_checkpoint
from taalasc.model.synth import llama_config, write_demo, write_llama, write_safetensors
from taalasc.quant import BitPolicy, assign_bits, quantize_tensor
from taalasc.report.metrics import format_percent

DOWN = "model.layers.1.mlp.down_proj.weight"
NORM = "model.layers.0.input_layernorm.weight"


@pytest.fixture(autouse=True)
def _wired(monkeypatch):
    # Until the lead wires `diff` into taalasc.cli.COMMANDS; harmless afterwards.
    monkeypatch.setitem(cli.COMMANDS, "diff", ("taalasc.commands.diff", "diff_cmd", "diff"))


def _changed_model(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    ckpt = open_checkpoint(src)
    tensors = {name: ckpt.read(name) for name in ckpt.tensors}
    down = tensors[DOWN]
    for r, c in ((3, 5), (40, 100), (63, 17)):
        down[r, c] = -down[r, c]          # moves the code, keeps the group's scale
    tensors[NORM][7] += 0.5                # an fp16 vector element
    write_safetensors(dst / "model.safetensors", tensors, "BF16")


def _expected(model_a: Path, model_b: Path) -> dict[str, set]:
    """Elements whose quantized code, scale or fp16 value differ: the ground truth."""
    options = CompileOptions()
    ca, cb = open_checkpoint(model_a), open_checkpoint(model_b)
    specs = assign_bits(ca, BitPolicy(default_bits=options.default_bits,
                                      group_size=options.group_size))
    want: dict[str, set] = {}
    for name in ca.tensors:
        wa, wb = ca.read(name), cb.read(name)
        if name in specs:
            qa, qb = quantize_tensor(name, wa, specs[name]), quantize_tensor(name, wb, specs[name])
            got = {("codes", int(r), int(c)) for r, c in np.argwhere(qa.codes != qb.codes)}
            got |= {("scales", int(r), int(c)) for r, c in np.argwhere(
                qa.scales.view(np.uint16) != qb.scales.view(np.uint16))}
        else:
            diff = wa.astype(np.float16).view(np.uint16) != wb.astype(np.float16).view(np.uint16)
            got = {("vector", 0, int(c)) for c in np.flatnonzero(diff)}
        if got:
            want[name] = got
    return want


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    write_demo(root / "a")
    _changed_model(root / "a", root / "b")
    for name in ("a", "b"):
        compile_model(root / name, root / f"masks_{name}", CompileOptions())
    return root


@pytest.fixture(scope="module")
def folder_diff(pair):
    return diff_masks(pair / "masks_a", pair / "masks_b")


def _klayout_xor(a: Path, b: Path, layer) -> int:
    la, lb = kdb.Layout(), kdb.Layout()
    la.read(str(a))
    lb.read(str(b))
    ra = kdb.Region(la.top_cell().begin_shapes_rec(la.layer(*layer)))
    rb = kdb.Region(lb.top_cell().begin_shapes_rec(lb.layer(*layer)))
    return (ra ^ rb).merged().count()


def test_names_exactly_the_changed_tensors_and_elements(pair, folder_diff):
    want = _expected(pair / "a", pair / "b")
    assert set(want) == {DOWN, NORM}          # the test pair really changes what we think
    d = folder_diff
    got = {t.tensor: {(k, r, c) for k, r, c, _ in t.elements} for t in d.tensors}
    assert got == want
    assert all(not t.placement_changed for t in d.tensors)
    assert d.masks == "via mask only"
    pdk = load_base_array("sky130-demo").pdk
    assert d.respin["usd"] == pdk.cost.via_mask_cost_usd


def test_counts_equal_klayout_xor_and_flat_diff(pair, folder_diff):
    d = folder_diff
    flat = diff_masks(pair / "masks_a", pair / "masks_b", trust_hashes=False)
    pdk = load_base_array("sky130-demo").pdk
    via = (pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype)
    totals = {t.layer: t for t in d.layers}
    k = _klayout_xor(pair / "masks_a" / "die0.gds", pair / "masks_b" / "die0.gds", via)
    assert totals[via].xor_polygons == k == totals[via].added + totals[via].removed > 0
    assert totals[via].added == totals[via].removed   # flipped bits move vias, none vanish
    assert [t.to_json() for t in flat.layers] == [t.to_json() for t in d.layers]
    assert d.dies[0].refs_skipped > 200               # identical tiles were not flattened


def test_only_the_changed_tiles_are_compared_though_every_name_differs(pair, folder_diff):
    """The two compiles name their cells apart (custom/names.py: the prefix comes from the
    checkpoint's hash) but for the chunk cells, named by content; the diff matches cells by
    content hash, so it still flattens and reports only the tiles whose bits changed, not
    every cell."""
    names = [{c.name for c in gdstk.read_gds(str(pair / m / "die0.gds")).cells}
             for m in ("masks_a", "masks_b")]
    shared = names[0] & names[1]
    assert shared and all(parse_chunk(n) is not None for n in shared)
    d = folder_diff
    assert d.tiles and all(t.label.startswith("tile (") and t.tensor_a == t.tensor_b
                           and t.tensor_a in (DOWN, NORM) for t in d.tiles)
    assert d.dies[0].refs_compared == 2 * len(d.tiles)   # one reference per side and tile


def test_placement_change_needs_both_masks_and_matches_klayout(tmp_path):
    small = dict(hidden=32, layers=1, heads=2, kv_heads=1, vocab=64)
    write_llama(tmp_path / "m1", llama_config(intermediate=64, **small))
    write_llama(tmp_path / "m2", llama_config(intermediate=96, **small))
    for name in ("m1", "m2"):
        compile_model(tmp_path / name, tmp_path / f"c{name}", CompileOptions(formats=("gds",)))
    d = diff_masks(tmp_path / "cm1", tmp_path / "cm2")
    assert d.masks == "both masks"
    assert any(t.placement_changed for t in d.tensors)
    for t in d.layers:
        assert t.xor_polygons == _klayout_xor(tmp_path / "cm1" / "die0.gds",
                                              tmp_path / "cm2" / "die0.gds", t.layer), t.name


def test_identical_folders_exit_0(pair, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(pair / "masks_a", copy)
    assert main(["diff", str(pair / "masks_a"), str(copy), "--json", str(tmp_path / "d.json")]) == 0
    assert "identical" in capsys.readouterr().out
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["identical"] is True and data["changed_shapes"] == 0 and data["masks"] == "none"


def test_threshold_exit_codes(pair, folder_diff, capsys):
    a, b = str(pair / "masks_a"), str(pair / "masks_b")
    n = folder_diff.changed_shapes
    assert main(["diff", a, b, "-q"]) == 2
    assert "masks differ beyond --max-changed 0" in capsys.readouterr().err
    assert main(["diff", a, b, "-q", "--max-changed", str(n)]) == 0
    assert main(["diff", a, b, "-q", "--max-changed", str(n - 1)]) == 2
    assert main(["diff", a, b, "-q", "--max-changed", "1%"]) == 0
    assert main(["diff", a, b, "-q", "--max-changed", "0.0001%"]) == 2


def test_different_base_array_exit_1(pair, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(pair / "masks_b", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["inputs"]["base_array"]["name"] = "ihp-sg13g2-chip"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["diff", str(pair / "masks_a"), str(other), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "uses base array 'sky130-demo' but" in err and "'ihp-sg13g2-chip'" in err


def test_bare_files_of_different_pdks_exit_1(pair, tmp_path, capsys):
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    cell = lib.new_cell("DIE0")
    cell.add(gdstk.rectangle((0, 0), (260, 260), layer=41, datatype=0),   # gf180mcu via4
             gdstk.rectangle((0, 0), (1000, 440), layer=81, datatype=0))  # gf180mcu met5
    lib.write_gds(str(tmp_path / "gf.gds"))
    assert main(["diff", str(pair / "masks_a" / "die0.gds"), str(tmp_path / "gf.gds"), "-q"]) == 1
    assert "holds sky130 layers but" in capsys.readouterr().err


def test_unreadable_file_exit_1(pair, tmp_path, capsys):
    data = (pair / "masks_a" / "die0.gds").read_bytes()
    (tmp_path / "cut.gds").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.gds").write_bytes(b"this is not a mask file\n" * 10)
    for bad in ("cut.gds", "junk.gds", "missing.gds"):
        assert main(["diff", str(pair / "masks_a" / "die0.gds"), str(tmp_path / bad), "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and bad in err and "\n" not in err


def test_bare_gds_and_oasis_files_geometry_only(pair, folder_diff):
    folder = folder_diff
    bare = diff_masks(pair / "masks_a" / "die0.gds", pair / "masks_b" / "die0.oas")
    assert [t.to_json() for t in bare.layers] == [t.to_json() for t in folder.layers]
    assert bare.tensors == [] and any("no tensor attribution" in n for n in bare.notes)
    assert bare.masks == "via mask only"          # sky130 recognised from the layers


def test_json_markdown_heatmap_xor_outputs(pair, folder_diff, tmp_path):
    a, b = str(pair / "masks_a"), str(pair / "masks_b")
    out = {k: tmp_path / f"d.{k}" for k in ("json", "md", "png", "gds")}
    assert main(["diff", a, b, "-q", "--max-changed", "100", "--json", str(out["json"]),
                 "--markdown", str(out["md"]), "--heatmap", str(out["png"]),
                 "--xor", str(out["gds"])]) == 0
    data = json.loads(out["json"].read_text())
    assert data["format"] == "taalasc-diff/1" and data["masks"] == "via mask only"
    assert data["threshold"]["exceeded"] is False
    names = {t["tensor"]: t for t in data["tensors"]}
    assert set(names) == {DOWN, NORM}
    assert names[DOWN]["changed"] == {"codes": 3}
    assert {tuple(e["index"]) for e in names[DOWN]["elements"]} == {(3, 5), (40, 100), (63, 17)}
    assert all(t["column"] is not None for t in data["tiles"])
    md = out["md"].read_text()
    assert md.startswith("### taalasc mask diff:") and f"`{DOWN}`" in md
    assert "via mask only" in md and "codes[40, 100]" in md and "vector[7]" in md
    assert "| 0 | tile (" in md
    # PNG: the die scaled so its longer side is 512 px (sky130-demo: 2 x 7.2 mm), with a
    # title above and a colour scale of the changed shapes per pixel below.
    w, h = struct.unpack(">II", out["png"].read_bytes()[16:24])
    dies, most, nm_per_px, die_w, _ = _heat_dies(folder_diff, 512)
    assert (die_w, dies.shape[0]) == (round(2.0 / 7.2 * 512), 512)
    assert most >= 1 and w > die_w and h > 512 + 100
    assert out["png"].read_bytes() == png_bytes(heatmap_rgb(folder_diff))
    # The XOR file holds exactly the changed vias, as KLayout sees them.
    layout = kdb.Layout()
    layout.read(str(out["gds"]))
    region = kdb.Region(layout.top_cell().begin_shapes_rec(layout.layer(71, 44)))
    assert region.count() == data["xor_polygons"]
    assert "within threshold" in md and "threshold" not in to_markdown(folder_diff)
    assert to_json(folder_diff)["changed_shapes"] == data["changed_shapes"]


def test_summary_fits_80_columns_and_percentages_read_well(pair, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    assert main(["diff", str(pair / "masks_a"), str(pair / "masks_b"),
                 "--max-changed", "0.5%"]) == 0
    text = capsys.readouterr().out
    assert widest(text) <= 80
    for name in (DOWN, NORM, "codes[40, 100]", "vector[7]", "XOR polygons"):
        assert squeeze(name) in shown(text), name
    # 3 significant digits and a space before the sign, not "0.0027%" and "0.5000%"
    assert re.search(r"shapes changed \(0\.00\d{3} %\), limit 0\.5 %$", text, re.M), text


@pytest.mark.parametrize("fraction, text", [
    (1.666573, "167 %"), (0.0, "0 %"), (1e-9, "<0.001 %"), (2.7e-5, "0.0027 %"),
    (0.005, "0.5 %"), (0.123456, "12.3 %"), (1.0, "100 %"), (12.345, "1,234 %")])
def test_percent_format(fraction, text):
    assert format_percent(fraction) == text


def test_html_page_holds_the_heat_map_and_the_changed_tiles_and_tensors(pair, folder_diff,
                                                                       tmp_path):
    page_path = tmp_path / "diff.html"
    assert main(["diff", str(pair / "masks_a"), str(pair / "masks_b"), "-q",
                 "--max-changed", "0.5%", "--html", str(page_path)]) == 0
    page = parse_page(page_path.read_text(encoding="utf-8"))
    heat = heatmap_rgb(folder_diff)
    assert page.images == [(heat.shape[1], heat.shape[0])]
    for name in (DOWN, NORM, "codes[40, 100]", "vector[7]", "via mask only", "re-spin",
                 "cost.via_mask_cost_usd", "within"):
        assert name in page.text, name
    assert len([t for t in folder_diff.tiles if t.label in page.text]) == len(folder_diff.tiles)
    if browser() is not None:   # rendered, the heat map decoded, nothing past 1280 px
        found = browser_check(page_path, tmp_path)
        assert found["images"] == found["decoded"] == 1, found
        assert found["scrollWidth"] <= found["innerWidth"] and not found["wide"], found


def _doc() -> str:
    return (Path(__file__).resolve().parents[1] / "docs" / "ci-diff.md").read_text()


def test_docs_diff_commands_use_real_options(pair, tmp_path, monkeypatch):
    from taalasc.commands.diff import diff_cmd

    known = {opt for p in diff_cmd.params for opt in p.opts}
    commands = re.findall(r"taalasc diff (masks-old (?:[^\n]*\\\n)*[^\n]*)", _doc())
    assert len(commands) >= 2
    for command in sorted({" ".join(c.replace("\\\n", " ").split()) for c in commands}):
        args = command.replace("\\\n", " ").split()
        assert {a for a in args if a.startswith("--")} <= known, command
        # And it runs: on the test pair, in a folder laid out like the workflow's.
        monkeypatch.chdir(tmp_path)
        for name, src in (("masks-old", "masks_a"), ("masks-new", "masks_b")):
            if not (tmp_path / name).exists():
                (tmp_path / name).symlink_to(pair / src)
        assert main(["diff", *args, "-q"]) == 0        # 14 of ~700k shapes: within 0.5 %
        assert (tmp_path / "diff.md").is_file() and (tmp_path / "diff-xor.oas").is_file()


def test_docs_python_example_runs(pair, tmp_path, monkeypatch, capsys):
    code = re.search(r"## From Python\n\n```python\n(.*?)```", _doc(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "masks-old").symlink_to(pair / "masks_a")
    (tmp_path / "masks-new").symlink_to(pair / "masks_b")
    exec(compile(code, "ci-diff.md", "exec"), {})
    out = capsys.readouterr().out
    assert "via mask only" in out and DOWN in out


def test_two_die_folders_diff_the_same_on_two_processes(tmp_path):
    """-j 2 compares dies in worker processes: the same diff as one process, and an OASIS-only
    compile is read in OASIS without --format."""
    config = llama_config(hidden=64, layers=3, intermediate=128, vocab=64)
    model_a = write_llama(tmp_path / "a", config)
    ckpt = open_checkpoint(model_a)
    tensors = {name: ckpt.read(name) for name in ckpt.tensors}
    for name in ("model.layers.0.mlp.up_proj.weight", "lm_head.weight"):   # die 0 and die 1
        tensors[name][2, 3] = -tensors[name][2, 3] + 0.5
    (tmp_path / "b").mkdir()
    write_safetensors(tmp_path / "b" / "model.safetensors", tensors, "BF16")
    shutil.copy(model_a / "config.json", tmp_path / "b" / "config.json")
    for name in ("a", "b"):
        compile_model(tmp_path / name, tmp_path / f"m{name}",
                      CompileOptions(formats=("oas",)))
    serial = diff_masks(tmp_path / "ma", tmp_path / "mb")
    two = diff_masks(tmp_path / "ma", tmp_path / "mb", jobs=2)
    assert len(serial.dies) == 2 and all(d.layers for d in serial.dies)
    assert {t.tensor for t in serial.tensors} >= {"model.layers.0.mlp.up_proj.weight",
                                                  "lm_head.weight"}
    strip = lambda d: {k: v for k, v in to_json(d).items() if k != "seconds"}  # noqa: E731
    assert strip(two) == strip(serial)
    assert all(str(f).endswith(".oas") for f in serial.a.files)
    # keep_shapes=False (the CLI without --xor): every report the same, no die's shapes held
    slim = diff_masks(tmp_path / "ma", tmp_path / "mb", jobs=2, keep_shapes=False)
    assert strip(slim) == strip(serial)
    assert to_markdown(slim) == to_markdown(serial)
    assert np.array_equal(heatmap_rgb(slim), heatmap_rgb(serial))
    assert all(not len(lc.added) and not len(lc.removed) and lc.n_added + lc.n_removed
               for d in slim.dies for lc in d.layers.values() if lc.counts != (0, 0))
    with pytest.raises(ValueError, match="kept no shapes"):
        write_xor(slim, tmp_path / "x.gds")


def test_a_whole_tensor_changed_is_counted_exactly_and_listed_in_part(pair, tmp_path):
    """A new checkpoint changes nearly every weight: the diff counts every changed element
    and bit of the tensor (popcount of the stored codes' XOR) and lists the first
    MAX_ELEMENTS_KEPT in (kind, row, col) order, without holding a record per element."""
    from taalasc.diff.attribute import MAX_ELEMENTS_KEPT

    src, dst = pair / "a", tmp_path / "c"
    shutil.copytree(src, dst)
    ckpt = open_checkpoint(src)
    tensors = {name: ckpt.read(name) for name in ckpt.tensors}
    rng = np.random.default_rng(5)
    tensors[DOWN] = tensors[DOWN] * rng.uniform(0.5, 1.5, tensors[DOWN].shape).astype(np.float32)
    write_safetensors(dst / "model.safetensors", tensors, "BF16")
    compile_model(dst, tmp_path / "masks_c", CompileOptions())
    d = diff_masks(pair / "masks_a", tmp_path / "masks_c")
    [t] = [t for t in d.tensors if t.tensor == DOWN]

    options = CompileOptions()
    specs = assign_bits(ckpt, BitPolicy(default_bits=options.default_bits,
                                        group_size=options.group_size))
    qa = quantize_tensor(DOWN, ckpt.read(DOWN), specs[DOWN])
    qc = quantize_tensor(DOWN, open_checkpoint(dst).read(DOWN), specs[DOWN])
    stored = (1 << qa.bits) - 1
    codes = (qa.codes.astype(np.int64) & stored) ^ (qc.codes.astype(np.int64) & stored)
    scales = (qa.scales.view(np.uint16) ^ qc.scales.view(np.uint16)).astype(np.int64)
    popcount = lambda x: sum(int(((x >> k) & 1).sum()) for k in range(16))   # noqa: E731
    want = sorted([("codes", int(r), int(c)) for r, c in np.argwhere(codes)]
                  + [("scales", int(r), int(c)) for r, c in np.argwhere(scales)])
    assert len(want) > 4 * MAX_ELEMENTS_KEPT              # the test changes what we think
    assert t.changed == {"codes": int((codes != 0).sum()), "scales": int((scales != 0).sum())}
    assert t.bits_changed == popcount(codes) + popcount(scales)
    assert [e[:3] for e in t.elements] == want[:MAX_ELEMENTS_KEPT]
    for kind, r, c, bits in t.elements[:50]:
        x = (codes if kind == "codes" else scales)[r, c]
        assert bits == tuple(k for k in range(16) if (x >> k) & 1)
    assert to_json(d)["tensors"][[x["tensor"] for x in to_json(d)["tensors"]].index(DOWN)][
        "elements_truncated"] is True


def test_tiles_compared_batch_by_batch_give_the_one_pass_diff(pair, tmp_path, monkeypatch):
    """Changed tiles that touch neither each other nor other shapes are counted a batch at a
    time (memory bounded by the batch): the same shapes, sources, counts and XOR file as one
    pass over the whole die."""
    from taalasc.diff import hier

    one = diff_masks(pair / "masks_a", pair / "masks_b")
    write_xor(one, tmp_path / "one.gds")
    taken = []
    apart = hier._apart
    monkeypatch.setattr(hier, "_apart", lambda *a: taken.append(apart(*a)) or taken[-1])
    monkeypatch.setattr(hier, "PAIR_BATCH", 1)     # a batch per changed tile
    split = diff_masks(pair / "masks_a", pair / "masks_b")
    write_xor(split, tmp_path / "split.gds")
    assert taken == [True]                          # the batched path ran
    assert to_json(split) == to_json(one)
    for da, db in zip(one.dies, split.dies):
        assert da.layers.keys() == db.layers.keys()
        for layer, a in da.layers.items():
            b = db.layers[layer]
            for f in ("removed", "removed_src", "added", "added_src", "xor_rects"):
                assert np.array_equal(getattr(a, f), getattr(b, f)), (layer, f)
            assert a.xor_count == b.xor_count
    assert (tmp_path / "one.gds").read_bytes() == (tmp_path / "split.gds").read_bytes()
