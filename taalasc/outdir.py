"""Atomic output folders: a compile either replaces the whole folder or leaves it as it was.

Everything is written into a hidden staging folder beside the target (same filesystem, so the
final step is a rename). On success the staging folder takes the target's place; on any error
or interrupt it is removed and the previous good output stays untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from taalasc.errors import OutputError

MANIFEST = "manifest.json"
_FSYNC_THREADS = 8


def _is_compile_output(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _same_inputs(path: Path, inputs_digest: str) -> bool:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("inputs_digest") == inputs_digest


@contextlib.contextmanager
def staged_output(target: Path, *, inputs_digest: str, force: bool) -> Iterator[Path]:
    """Yield a staging folder; on clean exit, atomically install it as ``target``.

    A target that exists and is not empty is replaced only when it holds a compile of the
    same inputs, or with ``force``. A target that is not a taalasc output is never replaced.
    """
    target = target.resolve() if target.exists() else target.absolute()
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{target}: exists and is not a folder")
        if any(target.iterdir()):
            if not _is_compile_output(target):
                raise OutputError(f"{target}: folder is not empty and holds no taalasc compile "
                                  f"({MANIFEST} missing); choose another -o")
            if not force and not _same_inputs(target, inputs_digest):
                raise OutputError(f"{target}: holds a different compile; pass --force to replace it")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: not writable")
    staging = parent / f".{target.name}.taalasc-staging-{os.getpid()}"
    backup = parent / f".{target.name}.taalasc-previous-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
    except OSError as exc:
        raise OutputError(f"{staging}: cannot create ({exc.strerror})") from None
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists():
            os.replace(target, backup)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(backup, target)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_folder(parent)
    except OSError as exc:
        raise OutputError(f"{target}: writing failed ({exc.strerror or exc}); "
                          "the previous output is unchanged") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file below ``folder``, then every folder (deepest first, ``folder`` last).

    Files written by other processes (die workers) are included: whoever wrote them, they are
    durable before the rename publishes them. Each fsync waits for a disk cache flush even
    when the file is already clean, so they run on a few threads to overlap those waits; the
    folders come after all their files.
    """
    files: list[str] = []
    folders: list[str] = []
    for dirpath, _, names in os.walk(folder):
        folders.append(dirpath)
        files.extend(os.path.join(dirpath, n) for n in sorted(names)
                     if os.path.isfile(os.path.join(dirpath, n)))
    if len(files) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(_FSYNC_THREADS, len(files)),
                                thread_name_prefix="taalasc-fsync") as pool:
            for _ in pool.map(_fsync_path, files):  # re-raises the first OSError
                pass
    else:
        for path in files:
            _fsync_path(path)
    if os.name == "posix":  # elsewhere a folder cannot be opened to fsync it
        for dirpath in reversed(folders):
            _fsync_path(dirpath)


def _fsync_folder(folder: Path) -> None:
    """Make the rename inside ``folder`` durable, best effort: the output is installed by
    then, so a filesystem that cannot fsync a folder must not turn that into a failure."""
    if os.name == "posix":
        with contextlib.suppress(OSError):
            _fsync_path(str(folder))


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
