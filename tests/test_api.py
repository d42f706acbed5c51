"""The Python API (taalasc/api.py, docs/api.md): typed results, the errors the CLI prints,
a failed verify that can be inspected, lazy imports, and every example of docs/api.md run."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import taalasc
from corpus.bad_inputs import run_cli, small_llama
from taalasc.errors import (CheckFailed, ConfigError, MaskError, ModelError, OutputError,
                            TaalascError)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    model = small_llama(root / "model")
    return model, taalasc.compile(model, root / "out", bits=4, group_size=16, format="gds")


# --------------------------------------------------------------------------- the docs


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_every_example_in_docs_api_runs(tmp_path, monkeypatch, capsys):
    """The blocks run in order as one script, in an empty folder, as the page says."""
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_api"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "error: verify failed: quality" in out
    assert "True 0 shapes changed, limit 0 none" in out


def test_readme_points_at_the_api_and_its_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    assert "docs/api.md" in section
    (block,) = _python_blocks(section)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md Python API", "exec"), {"__name__": "readme"})


# --------------------------------------------------------------------------- typed results


def test_compile_returns_its_folder_report_and_files(compiled):
    model, result = compiled
    assert isinstance(result, taalasc.CompileResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.out_dir = Path("elsewhere")
    assert result.mask_files == [result.out_dir / "die0.gds"]
    assert all(p.is_file() for p in result.mask_files) and result.merged_files == []
    report = result.report
    assert isinstance(report, taalasc.Report)
    written = json.loads((result.out_dir / "report.json").read_text())
    area = next(m for m in written["metrics"] if m["name"] == "design__die__area")
    assert report.value("design__die__area") == area["value"]
    assert isinstance(report["design__die__area"], taalasc.Metric)
    assert taalasc.read_report(result.out_dir).to_dict() == report.to_dict()
    assert result.manifest == json.loads((result.out_dir / "manifest.json").read_text())


def test_the_cli_compiles_through_the_api(compiled, tmp_path, capfd):
    model, result = compiled
    code, lines = run_cli(capfd, ["compile", model, "-o", tmp_path / "cli", "--bits", "4",
                                  "--group-size", "16", "--format", "gds", "--quiet"])
    assert code == 0, lines
    for name in ("manifest.json", "report.json", "die0.gds"):
        assert (tmp_path / "cli" / name).read_bytes() == (result.out_dir / name).read_bytes()


def test_verify_returns_every_check(compiled):
    model, result = compiled
    checked = taalasc.verify(result.out_dir, model)
    assert isinstance(checked, taalasc.VerifyResult) and checked.passed
    assert [c.name for c in checked.checks] == ["model", "files", "codes", "datapath",
                                                "quality"]
    assert 0 <= checked.figures["top1_agreement"] <= 1


def test_a_failed_verify_is_a_result_or_the_clis_error(compiled, capfd):
    model, result = compiled
    strict = taalasc.verify(result.out_dir, model, min_cosine=1.0)   # no chip meets it
    assert not strict.passed
    assert [c.name for c in strict.checks if not c.passed] == ["quality"]
    with pytest.raises(CheckFailed) as raised:
        taalasc.verify(result.out_dir, model, min_cosine=1.0, raise_on_failure=True)
    code, lines = run_cli(capfd, ["verify", result.out_dir, model, "--min-cosine", "1"])
    assert (code, lines[-1]) == (raised.value.exit_code, f"error: {raised.value}") == \
        (2, "error: verify failed: quality")


def test_estimate_and_sweep_return_reports():
    report = taalasc.estimate(preset="bert-base-uncased", bits=4, rules=["*.value.*=6"])
    assert isinstance(report, taalasc.Report)
    assert report.meta["bits"] == "4 bits, *.value.*=6, group 32"
    assert report.to_dict() == taalasc.estimate(preset="bert-base-uncased", bits=4,
                                                rules=[("*.value.*", 6)]).to_dict()
    points = taalasc.sweep(preset="bert-base-uncased", bases=["sky130-reticle", "hc1-n6"],
                           bits=[3, 4])
    assert [p.label for p in points] == ["sky130-reticle 3 bits", "sky130-reticle 4 bits",
                                         "hc1-n6 3 bits", "hc1-n6 4 bits"]
    assert all(isinstance(p, taalasc.SweepPoint) for p in points)
    assert points[1].report.to_dict() == \
        taalasc.estimate(preset="bert-base-uncased", base="sky130-reticle", bits=4).to_dict()


def test_estimate_takes_a_changed_base_array():
    base = taalasc.load_base_array("sky130-reticle")
    fewer = dataclasses.replace(base, name="one die", max_dies=1)
    assert taalasc.load_base_array(fewer) is fewer
    report = taalasc.estimate(preset="llama-3.2-1b", base=fewer)
    assert report.meta["base_array"] == "one die"
    assert not report.value("design__die__fits")
    assert any("allows at most 1" in note for note in report.notes)


# --------------------------------------------------------------------------- the same errors


def _cli_error(capfd, argv) -> tuple[int, str]:
    code, lines = run_cli(capfd, argv)
    assert lines and lines[0].startswith("error: "), lines
    return code, "\n".join(lines)


def _api_error(call, kind: type[TaalascError]) -> tuple[int, str]:
    with pytest.raises(kind) as raised:
        call()
    lines = raised.value.lines()
    return raised.value.exit_code, "\n".join([f"error: {lines[0]}", *lines[1:]])


@pytest.mark.parametrize("argv, call, kind", [
    (["compile", "no-such-model", "-o", "out"],
     lambda: taalasc.compile("no-such-model", "out"), ModelError),
    (["compile", "no-such-model", "-o", "."],
     lambda: taalasc.compile("no-such-model", "."), OutputError),
    (["verify", "no-such-folder", "no-such-model"],
     lambda: taalasc.verify("no-such-folder", "no-such-model"), MaskError),
    (["estimate", "--preset", "llama-9"],
     lambda: taalasc.estimate(preset="llama-9"), ModelError),
    (["estimate", "--preset", "llama-3.2-1b", "--base", "no-such-base"],
     lambda: taalasc.estimate(preset="llama-3.2-1b", base="no-such-base"), ConfigError),
    (["estimate"], lambda: taalasc.estimate(), ModelError),
    (["quality", "no-such-model", "--bits", "4"],
     lambda: taalasc.quality("no-such-model", bits=[4]), ModelError),
    (["diff", "no-such-a", "no-such-b"],
     lambda: taalasc.diff_masks("no-such-a", "no-such-b"), MaskError),
    (["report", "no-such-folder"], lambda: taalasc.read_report("no-such-folder"), OutputError),
])
def test_the_api_raises_what_the_cli_prints(argv, call, kind, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert _api_error(call, kind) == _cli_error(capfd, argv)


# --------------------------------------------------------------------------- lazy imports


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}).stdout


def test_import_taalasc_loads_nothing_else():
    loaded = json.loads(_fresh_python(
        "import sys, json; before = set(sys.modules); import taalasc; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"))
    assert loaded == ["taalasc"]


def test_the_functions_keep_their_names_over_the_modules():
    out = _fresh_python(
        "import taalasc; from taalasc.compile import CompileOptions; import taalasc.verify; "
        "import sys; print(taalasc.compile.__module__, taalasc.verify.__module__, "
        "sys.modules['taalasc.compile'].CompileOptions is CompileOptions)")
    assert out.split() == ["taalasc.api", "taalasc.api", "True"]
    assert set(taalasc.__all__) <= set(dir(taalasc))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        taalasc.nothing
