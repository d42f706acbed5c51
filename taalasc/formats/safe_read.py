"""Read an untrusted GDSII/OASIS file without letting gdstk take the process down.

gdstk is C code: on some small corrupt files it aborts or segfaults, on others it prints
``[GDSTK] ...`` on file descriptor 2, and it accepts an OASIS file cut short as a partial
library. So a mask file is (1) checked in Python - the whole GDSII record stream, or the
OASIS magic and END record - then (2) read, counted and flattened by gdstk in a forked child
whose fd 1/2 go to a temporary file. The child streams the flattened rectangle arrays back
through a pipe; a crash, a gdstk message or a too-large expansion becomes one MaskError line.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from taalasc.errors import MaskError
from taalasc.formats.oasread import MAGIC as OASIS_MAGIC, Cursor, read_start

Layer = tuple[int, int]
# A flattened file may hold at most this many shapes (~8.6 GiB of int64 rectangles, ~500x
# the demo die): a few hundred bytes of nested arrays can otherwise ask for terabytes.
MAX_SHAPES = 2**28
_OASIS_END_BYTES = 256  # the END record is padded to exactly 256 bytes (OASIS spec, END)

_GDS_HEADER = b"\x00\x06\x00\x02"  # HEADER record: 6 bytes, int16 version
_GDS_ENDLIB = b"\x00\x04\x04\x00"


def check_gds(path: Path) -> None:
    """A GDSII file starts with a HEADER record and ends with ENDLIB (then only zero
    padding): gdstk reads a cut file without complaint. Everything in between is left to
    gdstk in the child process (a Python walk of every record costs more than the read)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != _GDS_HEADER:
            raise MaskError(f"{path}: cannot read mask file (" + (
                "empty file)" if size == 0 else "no GDSII HEADER record at the start)"))
        # Zero padding after ENDLIB fills tape blocks of 2048 bytes at most.
        f.seek(max(size - 2048, 4))
        raw = f.read()
        tail = raw.rstrip(b"\0")  # ENDLIB's own last byte is a zero too
        if len(tail) == len(raw) or not tail.endswith(_GDS_ENDLIB[:3]):
            raise MaskError(f"{path}: cannot read mask file (no ENDLIB record at the end: "
                            f"truncated?)")


def check_oas(path: Path) -> None:
    """The OASIS magic, a START record and, filling exactly the last 256 bytes, an END record
    (with a matching CRC32/checksum when it carries one): gdstk reads a cut file as a
    partial mask, and crashes on some."""
    size = path.stat().st_size

    def bad(what: str) -> MaskError:
        return MaskError(f"{path}: cannot read mask file ({what})")

    with open(path, "rb") as f:
        head = f.read(512)
        if not head.startswith(OASIS_MAGIC):
            raise bad("no OASIS magic '%SEMI-OASIS\\r\\n' at the start")
        if size < len(OASIS_MAGIC) + 4 + _OASIS_END_BYTES:
            raise bad(f"{size} bytes is too short for OASIS START and END records: truncated?")
        f.seek(size - _OASIS_END_BYTES)
        end = f.read()
        try:
            _, tables_in_end, _ = read_start(head)
            tail = Cursor(end, 0)
            if tail.uint() != 2:
                raise ValueError("the last 256 bytes are not an OASIS END record: truncated?")
            if tables_in_end:
                for _ in range(12):
                    tail.uint()
            tail.string()  # padding
            scheme = tail.uint()
            if (scheme, len(end) - tail.pos) not in ((0, 0), (1, 4), (2, 4)):
                raise ValueError("the OASIS END record is malformed: truncated?")
        except (ValueError, IndexError) as exc:
            raise bad(str(exc) if isinstance(exc, ValueError) else
                      "an OASIS START/END record is cut short") from None
        if scheme:
            f.seek(0)
            crc = total = 0
            left = size - 4
            while left > 0:
                block = f.read(min(left, 1 << 20))
                crc, total, left = zlib.crc32(block, crc), total + sum(block), left - len(block)
            got = crc if scheme == 1 else total & 0xFFFFFFFF
            if got != int.from_bytes(end[-4:], "little"):
                raise bad(f"OASIS {('CRC32', 'checksum32')[scheme - 1]} does not match: "
                          f"the file is damaged")


def read_flat(path: Path, flatten: Callable[[object], dict[Layer, np.ndarray]]
              ) -> dict[Layer, np.ndarray]:
    """Check ``path``, read it with gdstk and ``flatten(library)`` in a child process.

    Returns what ``flatten`` returned (int64 [n, 4] arrays per layer); any failure of the
    child - a MaskError, a gdstk error or a crash - is raised here as one MaskError line.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: no such mask file")
    oas = path.suffix.lower() in (".oas", ".oasis")
    check_oas(path) if oas else check_gds(path)
    if not hasattr(os, "fork"):  # no fork (Windows): the checks above are all we can do
        return _child_work(path, oas, flatten, None)
    with tempfile.TemporaryFile() as err:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns
            os.close(read_fd)
            _child(path, oas, flatten, write_fd, err)
        os.close(write_fd)
        reaped = False
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                result = _receive(pipe)
            _, status = os.waitpid(pid, 0)
            reaped = True
        finally:
            if not reaped:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        noise = _one_line(os.pread(err.fileno(), 2000, 0).decode(errors="replace"))
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise MaskError(f"{path}: cannot read mask file (gdstk crashed with {name}"
                        + (f": {noise})" if noise else ")"))
    if isinstance(result, str):
        raise MaskError(result)
    if code != 0 or result is None:
        raise MaskError(f"{path}: cannot read mask file (reader process exited with {code}"
                        + (f": {noise})" if noise else ")"))
    return result


def load_library(path: Path, flattened: bool = True):
    """A gdstk Library of an untrusted file, for a caller that needs gdstk's cells (the OASIS
    merge's base die; the diff reads with our own readers).

    The file is first checked and read once in a child process (crash, gdstk error, reference
    cycle or more than MAX_SHAPES shapes -> MaskError); only then is it read in-process, with
    gdstk's fd-2 chatter and warnings swallowed. Costs one extra read of the file. The shapes
    bounded are those the caller will hold: flattened (``flattened``, as diff expands its
    tiles), or as the file stores them, for a caller that keeps the hierarchy (the OASIS
    merge's base die: one tile cell arrayed 2,116 times on a reticle, 3.4 G shapes flat).
    """
    import gdstk

    path = Path(path)
    read_flat(path, lambda lib: _probe(lib, path, flattened))
    oas = path.suffix.lower() in (".oas", ".oasis")
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            try:
                return gdstk.read_oas(str(path), unit=1e-9) if oas else \
                    gdstk.read_gds(str(path), unit=1e-9)
            except Exception as exc:  # the file changed since the probe
                raise MaskError(f"{path}: cannot read mask file ({_one_line(str(exc))})") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _probe(lib, path: Path, flattened: bool = True) -> dict:
    """Child-side check for load_library: shape count (flattened, or as stored) with cycles
    refused, nothing sent."""
    memo: dict[str, int] = {}
    active: set[str] = set()

    def count(cell) -> int:
        if cell.name not in memo:
            if cell.name in active:
                raise MaskError(f"{path}: cell {cell.name!r} is part of a reference cycle")
            active.add(cell.name)
            total = sum(max(p.repetition.size, 1) for p in cell.polygons + cell.paths)
            for ref in cell.references:
                if not isinstance(ref.cell, str):
                    total += count(ref.cell) * max(ref.repetition.size, 1)
            active.discard(cell.name)
            memo[cell.name] = total
        return memo[cell.name]

    total = max((count(c) for c in lib.cells), default=0)   # refuses cycles too
    if not flattened:
        total = sum(sum(max(p.repetition.size, 1) for p in c.polygons + c.paths)
                    + len(c.references) for c in lib.cells)
    if total > MAX_SHAPES:
        what = f"would expand to {total} shapes when flattened" if flattened else \
            f"holds {total} shapes"
        raise MaskError(f"{path}: the mask {what}; at most {MAX_SHAPES} are read")
    return {}


def _one_line(text: str) -> str:
    return " ".join(text.replace("[GDSTK]", "").split())[:300]


def _child_work(path: Path, oas: bool, flatten, err) -> dict[Layer, np.ndarray]:
    import gdstk

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            lib = gdstk.read_oas(str(path), unit=1e-9) if oas else \
                gdstk.read_gds(str(path), unit=1e-9)
        except Exception as exc:  # gdstk raises plain RuntimeError/OSError on bad files
            said = [str(exc)] + [str(w.message) for w in caught]
            if err is not None:  # gdstk's own "[GDSTK] ..." text, written to fd 2 unbuffered
                said.insert(0, os.pread(err.fileno(), 2000, 0).decode(errors="replace"))
            raise MaskError(f"{path}: cannot read mask file ({_one_line('; '.join(said))})"
                            ) from None
    return flatten(lib)


def _child(path: Path, oas: bool, flatten, write_fd: int, err) -> None:
    code = 0
    try:
        faulthandler.disable()  # pytest/-X faulthandler would dump to a saved copy of fd 2
        os.dup2(err.fileno(), 1)
        os.dup2(err.fileno(), 2)
        with os.fdopen(write_fd, "wb") as pipe:
            try:
                rects = _child_work(path, oas, flatten, err)
            except MaskError as exc:
                _send_error(pipe, str(exc))
            except MemoryError:
                _send_error(pipe, f"{path}: cannot read mask file (out of memory flattening it)")
            except Exception as exc:  # noqa: BLE001 - anything else is still a bad file
                _send_error(pipe, f"{path}: cannot read mask file "
                                  f"({_one_line(f'{type(exc).__name__}: {exc}')})")
            else:
                _send_rects(pipe, rects)
    except BaseException:  # noqa: BLE001 - the parent reports a non-zero exit
        code = 70
    finally:
        os._exit(code)


# Pipe protocol: b"E" + u32 length + UTF-8 message, or b"R" + u32 layer count, then per
# layer three int64 (layer, datatype, rows) and the rows as raw int64 [rows, 4].
def _send_error(pipe, message: str) -> None:
    text = " ".join(message.split()).encode()
    pipe.write(b"E" + struct.pack("<I", len(text)) + text)


def _send_rects(pipe, rects: dict[Layer, np.ndarray]) -> None:
    pipe.write(b"R" + struct.pack("<I", len(rects)))
    for (layer, datatype), arr in sorted(rects.items()):
        arr = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1, 4)
        pipe.write(struct.pack("<qqq", layer, datatype, len(arr)))
        pipe.write(memoryview(arr).cast("B"))


def _read_exact(pipe, n: int) -> bytes | None:
    data = pipe.read(n)
    return data if len(data) == n else None


def _receive(pipe) -> dict[Layer, np.ndarray] | str | None:
    """The child's answer: rect arrays, an error message, or None when it died mid-way."""
    head = _read_exact(pipe, 5)
    if head is None:
        return None
    (n,) = struct.unpack("<I", head[1:])
    if head[:1] == b"E":
        text = _read_exact(pipe, n)
        return None if text is None else text.decode(errors="replace")
    out: dict[Layer, np.ndarray] = {}
    for _ in range(n):
        meta = _read_exact(pipe, 24)
        if meta is None:
            return None
        layer, datatype, rows = struct.unpack("<qqq", meta)
        arr = np.empty((rows, 4), np.int64)
        view = memoryview(arr).cast("B")
        got = 0
        while got < len(view):  # straight into the array: no second copy in the parent
            k = pipe.readinto(view[got:])
            if not k:
                return None
            got += k
        out[(layer, datatype)] = arr
    return out
