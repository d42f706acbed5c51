"""File names read from a compile folder's manifest: plain names of files inside the folder.

A manifest is data that may come from anyone (a downloaded compile, a CI artifact), so a
name in it must not open a file elsewhere: not an absolute path, not ``../x``, not a name
with a separator, not a symlink that leads out of the folder, not a FIFO or device (reading
one would hang). One function, for every reader of manifests (diff, verify, extract).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from taalasc.errors import MaskError


def inside(folder: Path, name: str, where: str) -> Path:
    """``folder / name`` when ``name`` is a regular file directly inside ``folder``.

    ``where`` says where the name came from, e.g. ``'out/manifest.json: dies[1].files.gds'``;
    anything else raises MaskError ``'{where}: {name!r} is not a file inside the folder'``
    (or ``'... does not exist'`` for a plain name with no file). A symlink is followed and
    accepted when its target is a regular file directly inside the folder itself.
    """
    folder = Path(folder)
    bad = MaskError(f"{where}: {name!r} is not a file inside the folder")
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name \
            or "/" in name or (os.altsep and os.altsep in name) or os.sep in name:
        raise bad
    path = folder / name
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise MaskError(f"{where}: {name!r} does not exist in {folder}") from None
    except (OSError, RuntimeError):   # RuntimeError: a symlink loop (Python < 3.13)
        raise bad from None
    if real.parent != folder.resolve() or not stat.S_ISREG(mode):
        raise bad
    return path
