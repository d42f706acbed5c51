import json
import re

import pytest

from taalasc.errors import OutputError
from taalasc.outdir import MANIFEST, staged_output


def _write_compile(folder, digest):
    (folder / MANIFEST).write_text(json.dumps({"inputs_digest": digest}))
    (folder / "die0.gds").write_bytes(b"new-" + digest.encode())


def test_success_installs_the_staged_folder(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, inputs_digest="a", force=False) as stage:
        _write_compile(stage, "a")
        assert not target.exists()
    assert (target / "die0.gds").read_bytes() == b"new-a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_previous_output_and_no_staging(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, inputs_digest="a", force=False) as stage:
        _write_compile(stage, "a")
    with pytest.raises(RuntimeError):
        with staged_output(target, inputs_digest="a", force=False) as stage:
            (stage / "die0.gds").write_bytes(b"half")
            raise RuntimeError("disk full in the middle")
    assert (target / "die0.gds").read_bytes() == b"new-a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_interrupt_leaves_previous_output(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, inputs_digest="a", force=False) as stage:
        _write_compile(stage, "a")
    with pytest.raises(KeyboardInterrupt):
        with staged_output(target, inputs_digest="b", force=True) as stage:
            (stage / "die0.gds").write_bytes(b"half")
            raise KeyboardInterrupt
    assert (target / "die0.gds").read_bytes() == b"new-a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_different_compile_is_refused_without_force(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, inputs_digest="a", force=False) as stage:
        _write_compile(stage, "a")
    with pytest.raises(OutputError, match=r"holds a different compile; pass --force to replace it$"):
        with staged_output(target, inputs_digest="b", force=False):
            pass
    with staged_output(target, inputs_digest="b", force=True) as stage:
        _write_compile(stage, "b")
    assert (target / "die0.gds").read_bytes() == b"new-b"


def test_foreign_folder_is_never_replaced(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match=re.escape("holds no taalasc compile")):
        with staged_output(target, inputs_digest="a", force=True):
            pass
    assert (target / "thesis.tex").read_text() == "precious"


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(OutputError, match=r"exists and is not a folder$"):
        with staged_output(target, inputs_digest="a", force=False):
            pass
