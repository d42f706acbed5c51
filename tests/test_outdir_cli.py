"""Output folders and files that never lose a file (issue 13), through the command line:
each refusal is one `error:` line, exit 1, and every file that was there is still there."""

from __future__ import annotations

import shutil

import pytest

from corpus.bad_inputs import assert_one_error, run_cli, small_llama, tree
from taalasc.outdir import MANIFEST, _locked, check_output_folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small model and a good compile of it (copied per test)."""
    root = tmp_path_factory.mktemp("models")
    model = small_llama(root / "model")
    good = root / "good"
    from taalasc.cli import main
    assert main(["compile", str(model), "-o", str(good), "--quiet"]) == 0
    return model, good


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_recompile_keeps_a_file_it_did_not_write(capfd, tmp_path, models):
    model, good = models
    out = _copy(good, tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    code, lines = run_cli(capfd, ["compile", model, "-o", out, "--quiet"])
    assert_one_error(code, lines, r"out: also holds notes\.txt, not written by its compile; "
                                  r"move them away or pass --force to replace the whole folder$")
    assert tree(out) == before
    code, lines = run_cli(capfd, ["compile", model, "-o", out, "--quiet", "--force"])
    assert code == 0, lines
    assert "notes.txt" not in tree(out) and tree(out)[MANIFEST] == before[MANIFEST]


def test_checkpoint_inside_the_output_is_never_deleted(capfd, tmp_path, models):
    model, good = models
    out = _copy(good, tmp_path / "out")
    shutil.copy(model / "model.safetensors", out / "model.safetensors")
    before = tree(out)
    for argv in (["compile", out / "model.safetensors", "-o", out, "--force"],
                 ["compile", model, "-o", model, "--force"]):
        code, lines = run_cli(capfd, [*argv, "--quiet"])
        assert_one_error(code, lines, r": holds .*, an input of this command; the output "
                                      r"folder is replaced as a whole, so choose another -o$")
    assert tree(out) == before
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("given", ["", "."])
def test_current_folder_is_refused(capfd, tmp_path, models, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.tex").write_text("precious")
    for argv in (["compile", models[0], "-o", given, "--quiet", "--force"],
                 ["demo", "-o", given, "--force"]):
        code, lines = run_cli(capfd, argv)
        assert_one_error(code, lines, r"^\.: an output folder must be a new folder or one "
                                      r"holding a taalasc output, not the current folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_demo_refuses_a_folder_holding_other_files(capfd, tmp_path):
    out = tmp_path / "demo"
    (out / "model").mkdir(parents=True)
    (out / "model" / "tokenizer.json").write_text("{}")
    code, lines = run_cli(capfd, ["demo", "-o", out])
    assert_one_error(code, lines, r"demo: holds model/tokenizer\.json, not a taalasc demo's; "
                                  r"choose another -o$")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "model", "model/tokenizer.json"]


def test_a_concurrent_writer_fails_in_one_line(capfd, tmp_path, models):
    model, good = models
    out = _copy(good, tmp_path / "out")
    before = tree(out)
    with _locked(check_output_folder(out)):   # another compile is writing OUT
        code, lines = run_cli(capfd, ["compile", model, "-o", out, "--quiet", "--force"])
    assert_one_error(code, lines, r"out: another taalasc run \(pid \d+\) is writing it; wait "
                                  r"for it to end or choose another -o$")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_report_files_never_overwrite_an_input(capfd, tmp_path, models):
    model, good = models
    a = _copy(good, tmp_path / "a")
    b = _copy(good, tmp_path / "b")
    text = tmp_path / "text.txt"
    text.write_text("w1 w2 w3\n")
    before = {"a": tree(a), "b": tree(b), "model": tree(model), "text": text.read_text()}
    cases = [
        (["diff", a, b, "--json", a / MANIFEST], r"--json lies inside the input folder"),
        (["diff", a, b, "--markdown", b / "diff.md"], r"--markdown lies inside the input folder"),
        (["diff", a / "die0.gds", b / "die0.gds", "--xor", a / "die0.gds"],
         r"--xor would overwrite the input"),
        (["diff", a, b, "--heatmap", b], r"--heatmap would overwrite the input"),
        (["verify", a, model, "--json", model / "config.json"],
         r"--json lies inside the input folder"),
        (["faults", a, model, "--markdown", a / "report.md"],
         r"--markdown lies inside the input folder"),
        (["quality", model, "--text", text, "--json", text], r"--json would overwrite the input"),
        (["estimate", model, "--sweep-bits", "3,4", "--plot", model / "plot.png"],
         r"--plot lies inside the input folder"),
        (["simulate", a, "--model", model, "--tokens", "1 2", "--save-logits", a],
         r"--save-logits would overwrite the input"),
    ]
    for argv, pattern in cases:
        code, lines = run_cli(capfd, argv)
        assert_one_error(code, lines, pattern + r" .*; write it elsewhere$")
    assert {"a": tree(a), "b": tree(b), "model": tree(model), "text": text.read_text()} == before


def test_diff_writes_its_files_whole(capfd, tmp_path, models, monkeypatch):
    """A writer that fails half-way leaves the previous file and no temporary one."""
    import taalasc.diff.report as report

    _, good = models
    out = tmp_path / "diff.json"
    out.write_text("previous")

    def half(diff, path, threshold=None):
        path.write_text('{"half": ')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_json", half)
    code, lines = run_cli(capfd, ["diff", good, good, "--json", out, "--quiet"])
    assert_one_error(code, lines, r"diff\.json: cannot write \(No space left on device\)$")
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.json"]
    monkeypatch.undo()
    code, lines = run_cli(capfd, ["diff", good, good, "--json", out, "--quiet"])
    assert code == 0, lines
    assert out.read_text() != "previous"
