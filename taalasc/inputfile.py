"""Reading small input files safely: config.json, adapter_config.json, YAML, indexes, texts.

One reader for every small file taalasc takes from the user, so that each gets the same
guarantees:

* only a regular file is read: a FIFO would block forever and /dev/zero or /dev/urandom
  never end. The file is opened non-blocking (opening a FIFO does not wait for a writer) and
  checked with fstat on the open descriptor, so a file swapped after a check is seen too;
* at most ``max_bytes`` are read, checked against the size before reading and against what
  was read (a file may grow, and /proc files report size 0);
* JSON nested too deeply for Python's parser (``[[[[...``) and duplicate keys are one error,
  not a RecursionError.

Every failure is raised through ``error(message)`` (the caller's ModelError or ConfigError
with the file named); the message does not repeat the path.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taalasc.errors import ModelError, TaalascError

# A Hugging Face config.json is 1-10 KB; the biggest ones carry label maps (ImageNet-21k's
# 21,843 id2label names are under 1 MB). adapter_config.json is smaller still.
MAX_CONFIG_BYTES = 4 << 20
# A sharded index lists every tensor once (Llama 3.1 405B: ~100 KB; MoE models with thousands
# of experts reach a few MB). A compile manifest is bounded by it too: its placement rows are
# in a file of their own (place/store.py), so it grows with dies and tensors, not tiles
# (an 8 B model on 1,047 dies: a few MB).
MAX_INDEX_BYTES = 100_000_000

_CHUNK_BYTES = 1 << 20  # read in pieces: read(n) would allocate n bytes up front

ErrorFactory = Callable[[str], TaalascError]


def _model_error(path: Path) -> ErrorFactory:
    return lambda message: ModelError(f"{display(path)}: {message}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str | Path, max_bytes: int, what: str = "file",
               error: ErrorFactory | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    ``what`` names the file in messages ("config.json", "calibration text"); ``error`` builds
    the exception (default: ModelError naming the path).
    """
    path = Path(path)
    fail = error or _model_error(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail(f"{what} must be a regular file, not {_kind(info.st_mode)}")
        if info.st_size > max_bytes:
            raise fail(f"is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit for a "
                       f"{what}")
        try:
            chunks, total = [], 0
            while total <= max_bytes:
                chunk = f.read(min(max_bytes + 1 - total, _CHUNK_BYTES))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise fail(f"cannot read: {exc.strerror or exc}") from None
    if total > max_bytes:
        raise fail(f"grew past the {max_bytes:,}-byte limit for a {what} while it was read")
    return b"".join(chunks)


def read_text(path: str | Path, max_bytes: int, what: str = "file",
              error: ErrorFactory | None = None, encoding: str = "utf-8") -> str:
    """``read_bytes`` decoded; an undecodable byte is one error naming its position."""
    raw = read_bytes(path, max_bytes, what, error)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        fail = error or _model_error(Path(path))
        raise fail(f"{what} is not {encoding.upper()} text (byte {exc.start})") from None


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: a key given twice is an error (the last one would win)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str, what: str, error: ErrorFactory) -> Any:
    """Strict JSON: duplicate keys refused; nesting deeper than Python's parser allows (it
    recurses once per level) is one error, not a RecursionError."""
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except RecursionError:
        raise error(f"{what} is nested too deeply for a JSON parser that recurses once per "
                    "level") from None
    except ValueError as exc:  # JSONDecodeError and a duplicate key are ValueErrors
        raise error(f"{what} is not valid JSON: {exc}") from None


def read_json(path: str | Path, max_bytes: int = MAX_CONFIG_BYTES, what: str = "file",
              error: ErrorFactory | None = None) -> Any:
    """A small JSON file: ``read_text`` (regular file, size cap, UTF-8) then ``parse_json``."""
    fail = error or _model_error(Path(path))
    return parse_json(read_text(path, max_bytes, what, fail), what, fail)


def display(path: str | Path) -> str:
    """A path as printable UTF-8: bytes of a file name that are not UTF-8 (Python keeps them
    as lone surrogates, which cannot be printed or written) are shown as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")
