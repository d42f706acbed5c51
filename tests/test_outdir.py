import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taalasc import outdir
from taalasc.errors import OutputError
from taalasc.outdir import (MANIFEST, atomic_file, check_output_file, check_output_folder,
                            staged_output)


def _write_compile(folder, digest):
    (folder / "die0.gds").write_bytes(b"new-" + digest.encode())
    (folder / MANIFEST).write_text(json.dumps({"inputs_digest": digest,
                                               "outputs": {"die0.gds": {}}}))


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


# --- what a compile may replace (issue 13) --------------------------------------------------

def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def _compiled(target, digest="a"):
    with staged_output(target, inputs_digest=digest, force=False) as stage:
        _write_compile(stage, digest)
    return target


def test_same_inputs_with_a_foreign_file_is_refused_without_force(tmp_path):
    target = _compiled(tmp_path / "out")
    (target / "model.safetensors").write_bytes(b"the user's checkpoint")
    with pytest.raises(OutputError, match=r"out: also holds model\.safetensors, not written by "
                                          r"its compile; move them away or pass --force to "
                                          r"replace the whole folder$"):
        with staged_output(target, inputs_digest="a", force=False) as stage:
            _write_compile(stage, "a")
    assert (target / "model.safetensors").read_bytes() == b"the user's checkpoint"
    (target / "notes").mkdir()      # a folder is never one of a compile's outputs
    (target / "model.safetensors").unlink()
    with pytest.raises(OutputError, match=r"also holds notes, not written"):
        with staged_output(target, inputs_digest="a", force=False):
            pass
    with staged_output(target, inputs_digest="a", force=True) as stage:
        _write_compile(stage, "a")
    assert sorted(p.name for p in target.iterdir()) == ["die0.gds", MANIFEST]


def test_an_input_inside_the_output_is_refused_even_with_force(tmp_path):
    target = _compiled(tmp_path / "out")
    model = target / "model.safetensors"
    model.write_bytes(b"weights")
    for inputs in ([model], [target]):
        with pytest.raises(OutputError, match=r"out: holds .*, an input of this command; the "
                                              r"output folder is replaced as a whole, so "
                                              r"choose another -o$"):
            with staged_output(target, inputs_digest="b", force=True, inputs=inputs):
                pass
    assert model.read_bytes() == b"weights"
    with staged_output(target / "sub", inputs_digest="b", force=False,
                       inputs=[tmp_path / "elsewhere.safetensors", None]) as stage:
        _write_compile(stage, "b")


@pytest.mark.parametrize("given", ["", ".", ".."])
def test_current_folder_is_never_an_output(tmp_path, monkeypatch, given):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("precious")
    monkeypatch.chdir(work)
    with pytest.raises(OutputError, match=r"an output folder must be a new folder or one "
                                          r"holding a taalasc output, not the current folder "
                                          r"\(-o \. or an empty -o\) or one above it$"):
        with staged_output(Path(given), inputs_digest="a", force=True):
            pass
    assert (work / "thesis.tex").read_text() == "precious"
    assert check_output_folder(Path("new")) == work / "new"


def test_a_second_writer_fails_at_once_and_the_lock_goes_away(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, inputs_digest="a", force=False) as stage:
        assert (tmp_path / ".out.taalasc-lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputError, match=rf"out: another taalasc run \(pid {os.getpid()}\) "
                                              r"is writing it; wait for it to end or choose "
                                              r"another -o$"):
            with staged_output(target, inputs_digest="b", force=True):
                pass
        _write_compile(stage, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "die0.gds").read_bytes() == b"new-a"


def test_the_check_is_made_again_right_before_install(tmp_path):
    """Something else put a different compile there while this one worked: refused."""
    target = tmp_path / "out"
    with pytest.raises(OutputError, match=r"out: holds a different compile; pass --force"):
        with staged_output(target, inputs_digest="a", force=False) as stage:
            _write_compile(stage, "a")
            target.mkdir()
            _write_compile(target, "other")
    assert (target / "die0.gds").read_bytes() == b"new-other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_install_swaps_in_one_step(tmp_path, monkeypatch):
    """With renameat2(RENAME_EXCHANGE) the target is never missing: no rename of it alone."""
    target = _compiled(tmp_path / "out", "a")
    swapped = []
    real = outdir._exchange
    monkeypatch.setattr(outdir, "_exchange", lambda a, b: swapped.append(real(a, b)) or swapped[-1])
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: moved.append((a, b)) or real_replace(a, b))
    with staged_output(target, inputs_digest="b", force=True) as stage:
        _write_compile(stage, "b")
    assert (target / "die0.gds").read_bytes() == b"new-b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    if swapped == [True]:
        assert moved == []
    else:   # no renameat2 here: the two renames ran instead
        assert [Path(b).name for _, b in moved] == [f".out.taalasc-previous-{os.getpid()}", "out"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("from a")
    (b / "y").write_text("from b")
    if not outdir._exchange(a, b):
        pytest.skip("this filesystem has no RENAME_EXCHANGE")
    assert [p.name for p in a.iterdir()] == ["y"] and [p.name for p in b.iterdir()] == ["x"]


def test_two_renames_when_there_is_no_exchange(tmp_path, monkeypatch):
    target = _compiled(tmp_path / "out", "a")
    monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)
    with staged_output(target, inputs_digest="b", force=True) as stage:
        _write_compile(stage, "b")
    assert (target / "die0.gds").read_bytes() == b"new-b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_next_run_puts_back_an_output_a_kill_left_hidden(tmp_path):
    """Killed between the two renames: OUT missing, the old output in .OUT.taalasc-previous-PID.
    The next run (even one then refused) moves it back and removes dead runs' staging."""
    dead = _dead_pid()
    hidden = _compiled(tmp_path / f".out.taalasc-previous-{dead}", "a")
    staging = tmp_path / f".out.taalasc-staging-{dead}"
    staging.mkdir()
    (staging / "die0.gds").write_bytes(b"half")
    live = tmp_path / f".out.taalasc-staging-{os.getppid()}"   # a running process: kept
    live.mkdir()
    other = tmp_path / f".other.taalasc-staging-{dead}"          # another target's: kept
    other.mkdir()
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="holds a different compile"):
        with staged_output(target, inputs_digest="b", force=False):
            pass
    assert (target / "die0.gds").read_bytes() == b"new-a"
    assert not hidden.exists() and not staging.exists()
    assert live.exists() and other.exists()


def test_leftovers_beside_a_present_output_are_removed(tmp_path):
    dead = _dead_pid()
    target = _compiled(tmp_path / "out", "a")
    old = _compiled(tmp_path / f".out.taalasc-previous-{dead}", "old")
    with staged_output(target, inputs_digest="a", force=False) as stage:
        _write_compile(stage, "a")
    assert not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- single output files ------------------------------------------------------------------------

def test_output_file_must_not_be_an_input(tmp_path):
    compiled = _compiled(tmp_path / "out")
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    (tmp_path / "link.json").symlink_to(model)
    os.link(model, tmp_path / "hard.json")
    inputs = (compiled, model, None)
    for path in (model, tmp_path / "link.json", tmp_path / "hard.json"):
        with pytest.raises(OutputError, match=r": --json would overwrite the input .*"
                                              r"model\.safetensors; write it elsewhere$"):
            check_output_file(path, inputs, "--json")
    for path in (compiled / MANIFEST, compiled / "new.md"):
        with pytest.raises(OutputError, match=r": --markdown lies inside the input folder .*out; "
                                              r"write it elsewhere$"):
            check_output_file(path, inputs, "--markdown")
    check_output_file(tmp_path / "diff.json", inputs, "--json")
    check_output_file(None, inputs, "--json")
    assert model.read_bytes() == b"weights"


def test_atomic_file_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            assert tmp.suffix == ".json" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("died while writing")
    assert path.read_text() == "old"
    with pytest.raises(OutputError, match=r"report\.json: cannot write \(disk full\)$"):
        with atomic_file(path) as tmp:
            raise OutputError(f"{tmp}: cannot write (disk full)")   # the writer's own message
    with atomic_file(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
