"""Local worker processes and signals (issue 13): Ctrl-C at a terminal reaches every process
of the group, yet only the parent acts on it (no worker traceback, exit 130, workers gone at
once); a parent killed with SIGKILL takes its workers with it."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg") or not pathlib.Path("/proc").is_dir(),
                                reason="needs POSIX process groups and /proc")

# A unit that appends to its own file every 20 ms for 30 s: a worker that goes on running
# after it should have stopped is seen by its file growing.
_UNITS = '''
import os, pathlib, time
def unit(arg):
    folder, index = arg
    path = pathlib.Path(folder) / f"unit{index}-{os.getpid()}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with open(path, "a") as handle:
            handle.write("x")
        time.sleep(0.02)
    return index
'''

_PARENT = '''
import sys
sys.path.insert(0, sys.argv[1])      # spawned workers get this sys.path too
import slowunits
from taalasc.parallel import run_ordered
try:
    for _ in run_ordered(slowunits.unit, [(sys.argv[2], i) for i in range(4)], jobs=2):
        pass
except KeyboardInterrupt:
    sys.stderr.write("interrupted\\n")
    sys.exit(130)
'''


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _start(tmp_path):
    """The parent running 4 slow units on 2 workers, in its own process group; returns it
    once both workers are writing, with their PIDs."""
    (tmp_path / "slowunits.py").write_text(_UNITS)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path), str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list(work.iterdir())) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.02)
    workers = sorted({int(p.name.split("-")[1]) for p in work.iterdir()})
    return proc, work, workers


def _sizes(work):
    return {p.name: p.stat().st_size for p in work.iterdir()}


def _assert_stopped(work, workers, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} still run"
        time.sleep(0.02)
    before = _sizes(work)
    time.sleep(0.2)
    assert _sizes(work) == before, "a unit file still grows"


@pytest.mark.parametrize("to_group", [True, False], ids=["terminal", "parent-only"])
def test_ctrl_c_stops_workers_without_tracebacks(tmp_path, to_group):
    proc, work, workers = _start(tmp_path)
    try:
        if to_group:   # what Ctrl-C at a terminal does: every process of the group gets it
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err == "interrupted\n"        # nothing from any worker, no traceback
    _assert_stopped(work, workers, within_s=5)


def test_workers_die_with_a_killed_parent(tmp_path):
    proc, work, workers = _start(tmp_path)
    try:
        proc.kill()                       # kill -9 of the parent only
        proc.wait()
        _assert_stopped(work, workers, within_s=3)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


_MASKS = '''
import json, multiprocessing, signal
from concurrent.futures import ProcessPoolExecutor
from taalasc.parallel import _spawning

def blocked(_):
    return sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, set()))

if __name__ == "__main__":
    with _spawning():   # a fresh process: multiprocessing's resource tracker starts in here
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        print(json.dumps(list(pool.map(blocked, range(2)))))
    pool.shutdown()
'''


def test_workers_start_with_ctrl_c_blocked(tmp_path):
    """A worker still booting when Ctrl-C reaches the group must not see it: processes started
    under _spawning inherit a mask blocking SIGINT (no initializer here, so it shows)."""
    script = tmp_path / "masks.py"
    script.write_text(_MASKS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for mask in json.loads(done.stdout):
        assert int(signal.SIGINT) in mask, done.stdout
