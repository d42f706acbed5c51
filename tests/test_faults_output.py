"""Faults during a compile: disk full, Ctrl-C, an output folder holding another compile,
read-only output. The previous good output stays byte-identical and no partial or staging file
is left; every fault is one `error: ` line and a non-zero exit."""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from corpus.bad_inputs import assert_one_error, demo_model, run_cli, small_llama, tree

STAGING = (".taalasc-staging-", ".taalasc-previous-")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different small models and a good compile of the first (copied per test)."""
    root = tmp_path_factory.mktemp("models")
    a = small_llama(root / "a")
    b = small_llama(root / "b", hidden=64, heads=4, kv_heads=2)
    good = root / "good"
    from taalasc.cli import main
    assert main(["compile", str(a), "-o", str(good), "--quiet"]) == 0
    return a, b, good


def _previous(tmp_path, models):
    """A folder holding a good compile of model a: (path, its bytes)."""
    out = tmp_path / "out"
    shutil.copytree(models[2], out)
    return out, tree(out)


def _no_leftovers(folder: pathlib.Path) -> None:
    left = [p.name for p in folder.iterdir() if any(s in p.name for s in STAGING)]
    assert not left, left


# --- an output folder that already holds something --------------------------------------------

def test_different_compile_is_refused_without_force(capfd, tmp_path, models):
    out, before = _previous(tmp_path, models)
    code, lines = run_cli(capfd, ["compile", models[1], "-o", out, "--quiet"])
    assert_one_error(code, lines, r"out: holds a different compile; pass --force to replace it$")
    assert tree(out) == before
    _no_leftovers(tmp_path)


def test_force_replaces_and_same_inputs_recompile(capfd, tmp_path, models):
    out, before = _previous(tmp_path, models)
    code, lines = run_cli(capfd, ["compile", models[0], "-o", out, "--quiet"])
    assert code == 0, lines  # same inputs: allowed without --force, same bytes
    assert tree(out) == before
    code, lines = run_cli(capfd, ["compile", models[1], "-o", out, "--quiet", "--force"])
    assert code == 0, lines
    assert tree(out)["manifest.json"] != before["manifest.json"]
    _no_leftovers(tmp_path)


def test_folder_that_is_not_a_compile_is_never_replaced(capfd, tmp_path, models):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    code, lines = run_cli(capfd, ["compile", models[0], "-o", out, "--quiet", "--force"])
    assert_one_error(code, lines, r"folder is not empty and holds no taalasc compile "
                                  r"\(manifest\.json missing\); choose another -o$")
    assert (out / "chapter1.tex").read_text() == "precious"
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]


def test_output_path_is_a_file(capfd, tmp_path, models):
    out = tmp_path / "out"
    out.write_text("x")
    code, lines = run_cli(capfd, ["compile", models[0], "-o", out, "--quiet", "--force"])
    assert_one_error(code, lines, r"out: exists and is not a folder$")
    assert out.read_text() == "x"


# --- disk full ----------------------------------------------------------------------------------

def test_disk_full_while_writing_keeps_previous_output(capfd, tmp_path, models, monkeypatch):
    """ENOSPC raised by the last write of the compile (the manifest): one line, old output."""
    out, before = _previous(tmp_path, models)
    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if ".taalasc-staging-" in str(self) and self.name == "manifest.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    code, lines = run_cli(capfd, ["compile", models[1], "-o", out, "--quiet", "--force"])
    assert_one_error(code, lines, r"writing failed \(No space left on device\); the previous "
                                  r"output is unchanged$")
    assert tree(out) == before
    _no_leftovers(tmp_path)


@contextmanager
def _tmpfs(path: pathlib.Path, size: str):
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _compile_in_child(argv, cwd, preexec=None, timeout=120):
    return subprocess.run([sys.executable, "-c", "import sys; from taalasc.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *map(str, argv)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def test_real_full_disk_keeps_previous_output(tmp_path, models):
    """A 1.5 MB tmpfs holds the previous compile (~0.6 MB) but not a bigger new one."""
    with _tmpfs(tmp_path / "disk", "1500k") as disk:
        out = disk / "out"
        shutil.copytree(models[2], out)
        before = tree(out)
        demo = demo_model(tmp_path / "demo")
        done = _compile_in_child(["compile", demo, "-o", out, "--quiet", "--force"], disk)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert tree(out) == before
        _no_leftovers(disk)


def test_real_full_disk_says_so_in_one_line(tmp_path, models):
    with _tmpfs(tmp_path / "disk", "1500k") as disk:
        out = disk / "out"
        shutil.copytree(models[2], out)
        demo = demo_model(tmp_path / "demo")
        done = _compile_in_child(["compile", demo, "-o", out, "--quiet", "--force"], disk)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert_one_error(done.returncode, lines, r"No space left on device")


def test_file_size_limit_keeps_previous_output(tmp_path, models):
    """RLIMIT_FSIZE (works without root): every write past 300 kB fails with EFBIG."""
    out, before = _previous(tmp_path, models)
    demo = demo_model(tmp_path / "demo")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    done = _compile_in_child(["compile", demo, "-o", out, "--quiet", "--force"], tmp_path,
                             preexec=limit)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert_one_error(done.returncode, lines, r"out: writing failed \(File too large\); the "
                                             r"previous output is unchanged$")
    assert tree(out) == before
    _no_leftovers(tmp_path)


# --- Ctrl-C in the middle of a compile ------------------------------------------------------------

_SLOW_COMPILE = """
import pathlib, sys, time
import taalasc.place.pack as pack
real, marker = pack.pack_segment, pathlib.Path(sys.argv[1])
def slow(*args, **kwargs):  # make every tile take 20 ms so that Ctrl-C lands mid-compile
    marker.touch()
    time.sleep(0.02)
    return real(*args, **kwargs)
pack.pack_segment = slow
from taalasc.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_mid_compile_leaves_previous_output(tmp_path, models):
    out, before = _previous(tmp_path, models)
    demo = demo_model(tmp_path / "demo")
    marker = tmp_path / "packing-started"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_COMPILE, str(marker), "compile",
                             str(demo), "-o", str(out), "--quiet", "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "compile never reached the tile loop"
            time.sleep(0.01)
        staging = [p for p in tmp_path.iterdir() if ".taalasc-staging-" in p.name]
        assert staging and any(staging[0].iterdir())  # really mid-compile: partial files exist
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    # click turns the KeyboardInterrupt into Abort ("error: interrupted") after echoing a
    # newline; either of taalasc's two interrupt messages is fine.
    assert [line for line in err.splitlines() if line.strip()] in (
        ["error: interrupted"], ["error: interrupted; outputs left as they were"]), err
    assert tree(out) == before
    marker.unlink()
    _no_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "out"]


# --- read-only output -----------------------------------------------------------------------------

@contextmanager
def _read_only(folder: pathlib.Path):
    """Make ``folder`` unwritable: chmod for a normal user; as root chmod does not stop
    writes, so use `chattr +i` (skip when the filesystem does not support it)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True) \
        if shutil.which("chattr") else None
    if done is None or done.returncode != 0:
        pytest.skip("running as root and `chattr +i` is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_parent_new_output(capfd, tmp_path, models):
    parent = tmp_path / "ro"
    parent.mkdir()
    with _read_only(parent):
        code, lines = run_cli(capfd, ["compile", models[0], "-o", parent / "out", "--quiet"])
    assert_one_error(code, lines, r"ro: not writable$|cannot create")
    assert list(parent.iterdir()) == []


def test_read_only_parent_existing_output(capfd, tmp_path, models):
    parent = tmp_path / "ro"
    parent.mkdir()
    out = parent / "out"
    shutil.copytree(models[2], out)
    before = tree(out)
    with _read_only(parent):
        code, lines = run_cli(capfd, ["compile", models[1], "-o", out, "--quiet", "--force"])
    assert_one_error(code, lines, r"ro: not writable$|cannot create")
    assert tree(out) == before
    assert [p.name for p in parent.iterdir()] == ["out"]


def test_read_only_output_folder_itself(capfd, tmp_path, models):
    """The output folder is immutable but its parent is writable: the swap must fail cleanly."""
    out, before = _previous(tmp_path, models)
    with _read_only(out):
        code, lines = run_cli(capfd, ["compile", models[1], "-o", out, "--quiet", "--force"])
        assert tree(out) == before
    if code == 0:  # as a normal user a 0555 folder can still be renamed away: that is fine
        assert tree(out) != before
        return
    assert_one_error(code, lines, r"writing failed|not writable|cannot")
    _no_leftovers(tmp_path)


def _children(pid: int) -> list[int]:
    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_with_worker_processes(tmp_path, models):
    """`-j 2`: Ctrl-C while spawned workers write the dies; no worker outlives the compile."""
    out, before = _previous(tmp_path, models)
    demo = demo_model(tmp_path / "demo")  # at 8 bits it needs 2 dies: 2 work units
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from taalasc.cli import main; "
                             "sys.exit(main(sys.argv[1:]))", "compile", str(demo), "--bits", "8",
                             "-j", "2", "-o", str(out), "--quiet", "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            staging = [p for p in tmp_path.iterdir() if ".taalasc-staging-" in p.name]
            if staging and any(staging[0].iterdir()):
                break
            if proc.poll() is not None:
                pytest.skip(f"compile ended before the interrupt: {proc.communicate()}")
            assert time.monotonic() < deadline, "compile never started writing"
            time.sleep(0.005)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.skip("compile finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] in (
        ["error: interrupted"], ["error: interrupted; outputs left as they were"]), err
    assert tree(out) == before
    _no_leftovers(tmp_path)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"worker processes {workers} outlived the compile"
        time.sleep(0.05)
