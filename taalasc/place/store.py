"""The placement file of a compile folder: the placement's rows as one NumPy ``.npy`` array.

The manifest keeps the small part of the placement (Placement.to_json: dies, curve, the
tensor list the rows index, digit widths, counts) and lists this file in its outputs with
its sha256, like every other file the compile wrote. The rows are ROW_DTYPE (place/plan.py),
34 bytes per used tile: an 8 B model's 2.2 M tiles make a 75 MB file, where the same rows
as indented JSON made a 432 MB manifest that took 42.7 s and 3.1 GB to parse. ``.npy`` is
numpy's own format (np.load reads it without taalasc) and ``np.save`` writes the same bytes
for the same rows.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from taalasc.errors import MaskError, PlacementError
from taalasc.inputfile import ErrorFactory, read_bytes
from taalasc.outdir import MANIFEST
from taalasc.place.plan import ROW_DTYPE, Placement

PLACEMENT_FILE = "placement.npy"
_MAX_HEADER_BYTES = 1 << 16   # an .npy header is under 100 bytes for these rows


def write_placement(folder: Path, placement: Placement) -> None:
    """Write ``placement``'s rows to the placement file in ``folder``."""
    with open(Path(folder) / PLACEMENT_FILE, "wb") as f:
        np.save(f, placement.rows, allow_pickle=False)


def read_placement(folder: Path, manifest: dict, error: ErrorFactory | None = None
                   ) -> Placement:
    """The placement of the compile folder ``folder`` whose manifest is ``manifest``.

    The file must be the one the manifest lists (bytes and sha256) and its rows must fit the
    manifest's placement; otherwise ``error`` (default MaskError) names what is wrong."""
    path, where = Path(folder) / PLACEMENT_FILE, Path(folder) / MANIFEST
    fail = error or (lambda message: MaskError(message))
    doc = manifest.get("placement") if isinstance(manifest, dict) else None
    tiles = doc.get("tiles_used") if isinstance(doc, dict) else None
    if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 0:
        raise fail(f"{where}: placement.tiles_used must be a count of tiles")
    listed = manifest.get("outputs", {}).get(PLACEMENT_FILE) \
        if isinstance(manifest.get("outputs"), dict) else None
    if not isinstance(listed, dict) or not isinstance(listed.get("sha256"), str):
        raise fail(f"{where}: outputs must list {PLACEMENT_FILE} with its sha256")
    data = read_bytes(path, tiles * ROW_DTYPE.itemsize + _MAX_HEADER_BYTES, PLACEMENT_FILE,
                      lambda message: fail(f"{path}: {message}"))
    if hashlib.sha256(data).hexdigest() != listed["sha256"]:
        raise fail(f"{path}: sha256 differs from the one {MANIFEST} lists (not the file the "
                   "compile wrote)")
    try:
        rows = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise fail(f"{path}: not a NumPy .npy array ({exc})") from None
    try:
        return Placement.from_json(doc, rows)
    except PlacementError as exc:
        raise fail(f"{path}: {exc}") from None
