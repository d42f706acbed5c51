"""Bad mask files through the reader used by verify and diff (taalasc.formats.readback).

Files that gdstk handles are read in-process; files that crash gdstk (it is C code) are read by
a worker process (corpus/mask_worker.py), so a crash fails one test instead of killing pytest.
"""

from __future__ import annotations

import re
import shutil

import pytest

from corpus.bad_inputs import assert_one_error, run_cli, small_llama
from corpus.masks import GDSTK_CRASHERS, ReaderWorker, aref_bomb, mask_cases, truncated_oas
from taalasc.cli import COMMANDS
from taalasc.config import load_pdk
from taalasc.formats.readback import read_vias
from taalasc.errors import MaskError



def _ids() -> list[str]:
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory(prefix="taalasc-mask-ids-") as folder:
        return [c[0] for c in mask_cases(Path(folder))]


MASK_IDS = _ids()


@pytest.fixture(scope="module")
def sky130():
    return load_pdk("sky130")


@pytest.fixture(scope="module")
def worker():
    w = ReaderWorker()
    yield w
    w.close()


@pytest.mark.parametrize("case_id", MASK_IDS)
def test_reader_refuses_bad_mask_file(tmp_path, sky130, case_id):
    cases = {c[0]: c for c in mask_cases(tmp_path)}
    _, path, pattern = cases[case_id]
    with pytest.raises(MaskError) as info:
        read_vias(path, sky130)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert re.search(pattern, message), message


def test_reader_prints_nothing_itself(tmp_path, sky130, capfd):
    path = dict((c[0], c[1]) for c in mask_cases(tmp_path))["truncated-gds"]
    capfd.readouterr()
    with pytest.raises(MaskError):
        read_vias(path, sky130)
    assert capfd.readouterr().err == ""


def test_truncated_oasis_is_refused(tmp_path, worker):
    assert worker.read(truncated_oas(tmp_path, 174)) == "MaskError"


CRASHERS = [pytest.param(p, id=p.name) for p in GDSTK_CRASHERS] + [
    pytest.param(None, id="truncated_at_84.oas")]


@pytest.mark.parametrize("path", CRASHERS)
def test_files_that_crash_gdstk_give_a_mask_error(tmp_path, worker, path):
    path = path or truncated_oas(tmp_path, 84)
    assert worker.read(path) == "MaskError"


def test_array_reference_bomb_is_refused_without_allocating(tmp_path, worker):
    assert worker.read(aref_bomb(tmp_path)) == "MaskError"


# --- through the commands that read masks -----------------------------------------------------

@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A good compile of a small model: (model folder, output folder)."""
    from taalasc.cli import main
    root = tmp_path_factory.mktemp("compiled")
    model = small_llama(root / "model")
    assert main(["compile", str(model), "-o", str(root / "out"), "--quiet"]) == 0
    return model, root / "out"


# Mask files gdstk parses: taalasc's own checks refuse them (layers, sizes, shapes, cells).
# (All of them are read at library level above; a few go through the command.)
VERIFY_CLEAN = ["other-pdk-layers-gds", "other-pdk-layers-oas", "wrong-via-size",
                "two-top-cells"]
# Mask files gdstk itself cannot parse: it prints "[GDSTK] ..." on stderr first.
VERIFY_UNREADABLE = ["truncated-gds", "png-renamed-gds", "random-bytes-oas"]


def _verify_with(capfd, tmp_path, compiled, case_id):
    model, good = compiled
    _, path, pattern = {c[0]: c for c in mask_cases(tmp_path / "cases")}[case_id]
    out = tmp_path / "out"
    shutil.copytree(good, out)
    fmt = path.suffix.lstrip(".")
    shutil.copyfile(path, out / f"die0.{fmt}")
    code, lines = run_cli(capfd, ["verify", out, model, "--format", fmt])
    assert_one_error(code, lines, pattern)


@pytest.mark.parametrize("case_id", VERIFY_CLEAN)
def test_verify_refuses_a_wrong_mask_file(capfd, tmp_path, compiled, case_id):
    if "verify" not in COMMANDS:
        pytest.skip("`taalasc verify` is not wired into taalasc/cli.py yet")
    _verify_with(capfd, tmp_path, compiled, case_id)


@pytest.mark.parametrize("case_id", VERIFY_UNREADABLE)
def test_verify_refuses_an_unreadable_mask_file(capfd, tmp_path, compiled, case_id):
    if "verify" not in COMMANDS:
        pytest.skip("`taalasc verify` is not wired into taalasc/cli.py yet")
    _verify_with(capfd, tmp_path, compiled, case_id)


def test_diff_refuses_bad_mask_files(capfd, tmp_path, compiled):
    if "diff" not in COMMANDS:
        pytest.skip("`taalasc diff` is not wired into taalasc/cli.py yet")
    cases = {c[0]: c[1] for c in mask_cases(tmp_path / "cases")}
    for case_id in VERIFY_CLEAN[:3]:
        out = tmp_path / case_id
        shutil.copytree(compiled[1], out)
        shutil.copyfile(cases[case_id], out / "die0.gds")
        code, lines = run_cli(capfd, ["diff", compiled[1], out])
        assert_one_error(code, lines, r".")
