"""Bad mask files (GDSII / OASIS) and a crash-safe way to feed them to the reader."""

from __future__ import annotations

import datetime
import os
import select
import subprocess
import sys
from pathlib import Path

import gdstk
import numpy as np

HERE = Path(__file__).parent
FIXED_TIME = datetime.datetime(2020, 1, 1)
# The smallest mutated files found by fuzzing that crash gdstk 1.0.2 itself (abort/SIGSEGV).
GDSTK_CRASHERS = sorted(HERE.glob("gdstk_*.*"))


def _lib() -> gdstk.Library:
    return gdstk.Library(unit=1e-9, precision=1e-9)


def seed_library() -> gdstk.Library:
    """A small valid sky130 mask: a via cell, an array reference, a rotated one, a strap."""
    lib = _lib()
    via = lib.new_cell("VIA")
    via.add(gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44))
    top = lib.new_cell("TOP")
    top.add(gdstk.rectangle((0, 0), (8000, 1600), layer=72, datatype=20))
    top.add(gdstk.Reference(via, (1000, 0), columns=3, rows=2, spacing=(1600, 6400)))
    top.add(gdstk.Reference(via, (0, 20000), rotation=np.pi / 2))
    return lib


def write_seed(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    lib = seed_library()
    gds, oas = folder / "seed.gds", folder / "seed.oas"
    lib.write_gds(gds, timestamp=FIXED_TIME)
    lib.write_oas(oas)
    return gds, oas


def _single(folder: Path, name: str, shape, *, oas=False) -> Path:
    lib = _lib()
    lib.new_cell("TOP").add(shape)
    path = folder / name
    lib.write_oas(path) if oas else lib.write_gds(path, timestamp=FIXED_TIME)
    return path


def aref_bomb(folder: Path, n: int = 1000) -> Path:
    """A few hundred bytes that expand to n**4 vias: an n x n array of n x n arrays."""
    lib = _lib()
    via = lib.new_cell("VIA")
    via.add(gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44))
    mid = lib.new_cell("MID")
    mid.add(gdstk.Reference(via, (0, 0), columns=n, rows=n, spacing=(1600, 1600)))
    top = lib.new_cell("TOP")
    top.add(gdstk.Reference(mid, (0, 0), columns=n, rows=n, spacing=(1600 * n, 1600 * n)))
    path = folder / "aref_bomb.gds"
    lib.write_gds(path, timestamp=FIXED_TIME)
    return path


def mask_cases(folder: Path) -> list[tuple[str, Path, str]]:
    """(id, file, pattern of the MaskError message) for every bad mask file."""
    folder.mkdir(parents=True, exist_ok=True)
    gds, oas = write_seed(folder / "seed")
    g, o = gds.read_bytes(), oas.read_bytes()

    def put(name: str, data: bytes) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + b"\0" * 64
    rng = np.random.default_rng(3)
    two_tops = _lib()
    two_tops.new_cell("A").add(gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44))
    two_tops.new_cell("B")
    two_tops.write_gds(folder / "two_tops.gds", timestamp=FIXED_TIME)
    missing = _lib()
    missing.new_cell("TOP").add(gdstk.Reference("GHOST", (0, 0)))
    missing.write_gds(folder / "missing_ref.gds", timestamp=FIXED_TIME)
    rotated = _lib()
    v = rotated.new_cell("VIA")
    v.add(gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44))
    rotated.new_cell("TOP").add(gdstk.Reference(v, (0, 0), rotation=np.pi / 4))
    rotated.write_gds(folder / "rotated45.gds", timestamp=FIXED_TIME)
    unreadable = r"cannot read mask file"
    return [
        ("truncated-gds", put("truncated.gds", g[: len(g) // 2]), unreadable),
        ("seven-bytes-gds", put("seven.gds", g[:7]), unreadable),
        ("empty-gds", put("empty.gds", b""), unreadable),
        ("random-bytes-gds", put("random.gds", rng.bytes(4096)), unreadable),
        ("png-renamed-gds", put("picture.gds", png), unreadable),
        ("empty-oas", put("empty.oas", b""), unreadable),
        ("random-bytes-oas", put("random.oas", rng.bytes(4096)), unreadable),
        ("gds-renamed-oas", put("really_gds.oas", g), unreadable),
        ("png-renamed-oas", put("picture.oas", png), unreadable),
        ("other-pdk-layers-gds", _single(folder, "layer1.gds", gdstk.rectangle(
            (0, 0), (800, 800), layer=1, datatype=0)), r"shape on layer 1/0; only \[\(59, 28\), \(71, 44\)"),
        ("other-pdk-layers-oas", _single(folder, "layer1.oas", gdstk.rectangle(
            (0, 0), (800, 800), layer=1, datatype=0), oas=True), r"shape on layer 1/0"),
        ("gf180-via-layer", _single(folder, "gf180.gds", gdstk.rectangle(
            (0, 0), (260, 260), layer=41, datatype=0)), r"shape on layer 41/0"),
        ("wrong-via-size", _single(folder, "small_via.gds", gdstk.rectangle(
            (0, 0), (260, 260), layer=71, datatype=44)), r"is 260 x 260 nm; sky130 vias are 800"),
        ("triangle", _single(folder, "triangle.gds", gdstk.Polygon(
            [(0, 0), (800, 0), (0, 800)], layer=71, datatype=44)), r"3-point polygon"),
        ("path-shape", _single(folder, "path.gds", gdstk.FlexPath(
            [(0, 0), (5000, 0)], 800, layer=72, datatype=20, simple_path=True)), r"holds paths"),
        ("two-top-cells", folder / "two_tops.gds", r"expected one top cell, found 2"),
        ("reference-to-missing-cell", folder / "missing_ref.gds",
         r"expected one top cell|references missing cell 'GHOST'|cannot read"),
        ("rotated-45-degrees", folder / "rotated45.gds", r"only 90° steps at 1x are supported"),
        ("no-such-file", folder / "nope.gds", r"no such mask file"),
        ("a-folder", folder, r"no such mask file"),
    ]


def truncated_oas(folder: Path, cut: int) -> Path:
    """The seed OASIS cut after ``cut`` bytes (of 349). gdstk 1.0.2 reads most cuts without
    an error (a silently partial mask) and segfaults on a few (84 is one)."""
    _, oas = write_seed(folder / "seed")
    path = folder / f"truncated_at_{cut}.oas"
    path.write_bytes(oas.read_bytes()[:cut])
    return path


class ReaderWorker:
    """One long-lived worker process (corpus/mask_worker.py); restarted after a crash."""

    def __init__(self, pdk: str = "sky130", memory_cap_bytes: int = 2 << 30):
        self.args = [sys.executable, str(HERE / "mask_worker.py"), pdk, str(memory_cap_bytes)]
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        assert self._line(60) == "ready"

    def _line(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        return self.proc.stdout.readline().rstrip("\n")

    def read(self, path: Path, timeout_s: float = 10.0) -> str:
        """'ok', 'MaskError', 'TypeName: message', 'crash (signal N)' or 'hang'."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self._line(timeout_s)
        if answer is None:
            self.close()
            return "hang"
        if answer == "":
            code = self.proc.wait()
            self.proc = None
            return f"crash (signal {-code})" if code < 0 else f"crash (exit {code})"
        return answer

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
