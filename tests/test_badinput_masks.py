"""Bad mask files through the reader used by verify and diff (taalasc.emit.readback).

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
from taalasc.emit.readback import read_vias
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


@pytest.mark.xfail(strict=True, reason="gdstk prints '[GDSTK] Unable to read input file. ...' "
                   "on file descriptor 2 before taalasc's own error, so verify/diff print two "
                   "lines: taalasc/emit/readback.py::_load should redirect fd 2 to a pipe or "
                   "/dev/null around gdstk.read_gds/read_oas (os.dup/os.dup2) and put gdstk's text "
                   "into the MaskError, and run them under warnings.catch_warnings() (gdstk "
                   "also warns 'Unsupported record in file.')")
def test_reader_prints_nothing_itself(tmp_path, sky130, capfd):
    path = dict((c[0], c[1]) for c in mask_cases(tmp_path))["truncated-gds"]
    capfd.readouterr()
    with pytest.raises(MaskError):
        read_vias(path, sky130)
    assert capfd.readouterr().err == ""


@pytest.mark.xfail(strict=True, reason="gdstk.read_oas returns a partial library for an OASIS "
                   "file cut short (no END record): taalasc/emit/readback.py::_load should check "
                   "that an .oas file starts with b'%SEMI-OASIS\\r\\n' and that its last 256 bytes "
                   "hold the END record (record id 2), and that a .gds file's last record is "
                   "ENDLIB (00 04 04 00), before handing it to gdstk")
def test_truncated_oasis_is_refused(tmp_path, worker):
    assert worker.read(truncated_oas(tmp_path, 174)) == "MaskError"


CRASHERS = [pytest.param(p, id=p.name) for p in GDSTK_CRASHERS] + [
    pytest.param(None, id="truncated_at_84.oas")]


@pytest.mark.xfail(strict=True, reason="gdstk 1.0.2 aborts (free(): invalid pointer) or "
                   "segfaults on these small corrupt files, killing taalasc verify/diff: "
                   "taalasc/emit/readback.py::_load must not hand untrusted bytes to gdstk "
                   "in-process - validate the GDSII record stream / OASIS structure in Python "
                   "first, or read in a child process and turn a crash into MaskError")
@pytest.mark.parametrize("path", CRASHERS)
def test_files_that_crash_gdstk_give_a_mask_error(tmp_path, worker, path):
    path = path or truncated_oas(tmp_path, 84)
    assert worker.read(path) == "MaskError"


@pytest.mark.xfail(strict=True, reason="a 358-byte GDS (1000x1000 array of 1000x1000 arrays) "
                   "asks numpy for 29 TiB in read_rects (MemoryError; a 100x smaller one really "
                   "allocates GBs): taalasc/emit/readback.py::read_rects should count the shapes "
                   "a cell expands to (len * repetition.size, recursively, memoised) before "
                   "flattening and raise MaskError above a cap derived from the base array "
                   "(e.g. 2 x sites x tiles + route shapes, or a fixed 50 M)")
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


@pytest.mark.xfail(strict=True, reason="gdstk's own '[GDSTK] ...' line on fd 2 comes before "
                   "taalasc's error: same fix as test_reader_prints_nothing_itself "
                   "(taalasc/emit/readback.py::_load)")
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
