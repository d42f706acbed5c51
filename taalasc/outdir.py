"""Output folders and files that never lose a file.

A compile writes everything into a hidden staging folder beside the target (same filesystem,
so the final step is a rename). On success the staging folder takes the target's place in one
atomic swap; on any error or interrupt it is removed and the previous good output stays
untouched. Around that:

* a target is replaced only when it is new, empty, or holds exactly a previous compile of the
  same inputs (its manifest's outputs and the manifest); anything else needs ``--force``, and
  a folder with no manifest, the current folder, or a folder holding one of the command's
  inputs is never replaced;
* one writer at a time: a lock file ``.NAME.taalasc-lock`` beside the target, held from the
  first check to the install, so a second run fails at once instead of replacing the first;
* leftovers of killed runs (``.NAME.taalasc-staging-PID``, ``.NAME.taalasc-previous-PID``
  whose PID is gone) are cleaned by the next run, and a previous output that a kill left
  hidden is put back first;
* single output files (``--json``, ``--markdown``, ...) are checked against the command's
  inputs (``check_output_file``) and written through a temporary file (``atomic_file``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator

from taalasc.errors import OutputError

MANIFEST = "manifest.json"
# The manifest's layout. 2: the placement rows moved to their own file (place/store.py).
MANIFEST_FORMAT = "taalasc-manifest/2"
_FSYNC_THREADS = 8
_LEFTOVER = r"\.taalasc-(staging|previous)-(\d+)"


def check_output_folder(path: Path) -> Path:
    """The absolute folder ``path`` names; OutputError for the current folder (which ``-o .``
    and an empty ``-o ''`` name), one above it, or the filesystem root: replacing those as a
    whole would take the user's other files, or the shell's working folder, with them."""
    folder = Path(path).resolve()
    cwd = Path.cwd().resolve()
    if folder == cwd or folder in cwd.parents or folder.name == "":
        raise OutputError(f"{path}: an output folder must be a new folder or one holding a "
                          "taalasc output, not the current folder (-o . or an empty -o) or "
                          "one above it")
    return folder


def check_output_file(path: Path | None, inputs: Iterable[Path | str | None], option: str) -> None:
    """OutputError when the output ``path`` given to ``option`` is one of ``inputs`` (the same
    path, a link to it or a hard link of it) or lies inside an input folder (a compile or a
    model folder). Call it before the work starts; None inputs and a None path are skipped."""
    if path is None:
        return
    out = Path(path).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source or (out.exists() and source.exists() and os.path.samefile(out, source)):
            raise OutputError(f"{path}: {option} would overwrite the input {given}; "
                              "write it elsewhere")
        if source.is_dir() and source in out.parents:
            raise OutputError(f"{path}: {option} lies inside the input folder {given}; "
                              "write it elsewhere")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that look at it still
    choose the right format); on clean exit it replaces ``path``, otherwise it is removed and
    ``path`` is as it was: a failure never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.taalasc-tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OutputError as exc:  # the writer named the temporary file: name the real one
        raise OutputError(str(exc).replace(str(tmp), str(path))) from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def output_entries(folder: Path, names: set[str]) -> tuple[dict[str, os.DirEntry],
                                                           list[tuple[str, str]]]:
    """The entries of ``folder`` that ``names`` lists (paths relative to it, '/' between
    parts: a compile's 'merged/die0.gds'), and every other entry as (path, 'file' / 'folder'
    / 'link'). Only real sub-folders that hold a listed name are entered; links never."""
    folders = {n.rsplit("/", k)[0] for n in names for k in range(1, n.count("/") + 1)}
    found: dict[str, os.DirEntry] = {}
    others: list[tuple[str, str]] = []

    def walk(path: str, prefix: str) -> None:
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                rel = prefix + entry.name
                if rel in folders and entry.is_dir(follow_symlinks=False):
                    walk(entry.path, rel + "/")
                elif rel in names:
                    found[rel] = entry
                else:
                    others.append((rel, "link" if entry.is_symlink() else
                                   "folder" if entry.is_dir(follow_symlinks=False) else "file"))

    walk(str(folder), "")
    return found, others


def _check_inputs_outside(target: Path, inputs: Iterable[Path | str | None]) -> None:
    """The whole target is replaced, so an input inside it would be deleted: never, even
    with --force."""
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source == target or target in source.parents:
            raise OutputError(f"{target}: holds {given}, an input of this command; the output "
                              "folder is replaced as a whole, so choose another -o")


def _check_replaceable(target: Path, inputs_digest: str, force: bool) -> None:
    """OutputError unless ``target`` may be replaced: missing, empty, or exactly a previous
    compile (the manifest's outputs and the manifest) of the same inputs; with ``force``
    any folder holding a manifest. A folder without one is never replaced."""
    if not os.path.lexists(target):
        return
    if not target.is_dir():
        raise OutputError(f"{target}: exists and is not a folder")
    names = set(os.listdir(target))
    if not names:
        return
    if MANIFEST not in names:
        raise OutputError(f"{target}: folder is not empty and holds no taalasc compile "
                          f"({MANIFEST} missing); choose another -o")
    if force:
        return
    manifest = _read_manifest(target)
    if manifest is None or manifest.get("inputs_digest") != inputs_digest:
        raise OutputError(f"{target}: holds a different compile; pass --force to replace it")
    outputs = manifest.get("outputs")
    ours = {str(n) for n in outputs} if isinstance(outputs, dict) else set()
    from taalasc.model.arch import natural_key  # die2 before die10

    found, others = output_entries(target, ours | {MANIFEST})
    extra = sorted([n for n, _ in others] + [n for n, e in found.items()
                                             if e.is_symlink() or not e.is_file()],
                   key=natural_key)
    if extra:
        listed = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise OutputError(f"{target}: also holds {listed}, not written by its compile; move "
                          "them away or pass --force to replace the whole folder")


@contextlib.contextmanager
def staged_output(target: Path, *, inputs_digest: str, force: bool,
                  inputs: Iterable[Path | str | None] = ()) -> Iterator[Path]:
    """Yield a staging folder; on clean exit, atomically install it as ``target``.

    ``target`` may be replaced when it is missing, empty or holds exactly a previous compile
    of the same inputs; ``force`` allows any folder that holds a compile. The current folder,
    a folder without a manifest, and a folder holding one of ``inputs`` (the checkpoint,
    calibration or config files) are never replaced. The check is made before the work and
    again, under the lock, right before the install.
    """
    target = check_output_folder(target)
    inputs = list(inputs)
    _check_inputs_outside(target, inputs)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: not writable")
    staging = parent / f".{target.name}.taalasc-staging-{os.getpid()}"
    backup = parent / f".{target.name}.taalasc-previous-{os.getpid()}"
    with _locked(target):
        _recover(target)
        _check_replaceable(target, inputs_digest, force)
        try:
            staging.mkdir()
        except OSError as exc:
            raise OutputError(f"{staging}: cannot create ({exc.strerror})") from None
        try:
            yield staging
            _fsync_tree(staging)
            _check_replaceable(target, inputs_digest, force)  # changed while we worked?
            _install(staging, target, backup)
            _fsync_folder(parent)
        except OSError as exc:
            raise OutputError(f"{target}: writing failed ({exc.strerror or exc}); "
                              "the previous output is unchanged") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _install(staging: Path, target: Path, backup: Path) -> None:
    """Put ``staging`` in ``target``'s place with no moment where ``target`` is missing: one
    atomic swap where the system has one (the old output is then in ``staging``, removed by
    the caller), else two renames, undone on failure and recovered by the next run when a
    kill falls between them (``_recover``)."""
    if not os.path.lexists(target):
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        return
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


_RENAME_EXCHANGE = 2   # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux renameat2(RENAME_EXCHANGE); False when this
    system or filesystem has no such call (the caller then renames twice)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2   # glibc >= 2.28
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.taalasc-lock`` beside ``target``; OutputError at once
    when another run holds it. The file is removed on release (while still locked, so a run
    that opened it meanwhile sees it was unlinked and opens a new one)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the checks before the install still run
        yield
        return
    path = target.parent / f".{target.name}.taalasc-lock"
    for _ in range(100):  # capped: each retry means another run released and removed it
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise OutputError(f"{target}: another taalasc run (pid {holder or '?'}) is writing "
                              "it; wait for it to end or choose another -o") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise OutputError(f"{path}: could not take the lock")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():  # ours, from an earlier call that could not clean up: we hold the lock
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _recover(target: Path) -> None:
    """Clean what killed runs left beside ``target`` (called under the lock): when ``target``
    is missing, the newest ``.NAME.taalasc-previous-PID`` of a dead run is the output a kill
    hid between two renames, and is put back; then staging and previous folders of dead
    runs are removed. Only names of our pattern with this target's name are touched."""
    pattern = re.compile(re.escape(f".{target.name}") + _LEFTOVER)
    staging, previous = [], []
    with os.scandir(target.parent) as entries:
        for entry in entries:
            found = pattern.fullmatch(entry.name)
            if found and entry.is_dir(follow_symlinks=False) \
                    and not _pid_alive(int(found.group(2))):
                (staging if found.group(1) == "staging" else previous).append(Path(entry.path))
    previous.sort(key=lambda p: p.stat().st_ctime, reverse=True)
    if previous and not os.path.lexists(target):
        os.replace(previous.pop(0), target)
    for folder in staging + previous:
        shutil.rmtree(folder, ignore_errors=True)


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
