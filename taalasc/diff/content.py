"""Content hashes of a layout's cells: a Merkle hash over the hierarchy, not over names.

A cell's hash covers its own rectangles (per layer, sorted: readers list the rectangles of an
OASIS repetition in their own order), then its references'
placements in order (origin, reflection, rotation, array), then the content hash of the cell
each reference places. No name is hashed, so equal hashes mean the same shapes whatever the
cells are called, and the diff may skip a reference to such a cell without flattening it:
two compiles' die files name their cells apart (custom/names.py) and still share the hashes
of what they draw alike. A file whose tile, chunk, strap or fill cell was edited in place
keeps the name but not the hash. Both readers give integer nm, so a GDSII file and an OASIS
file of one layout hash alike when they list the references in the same order.

Computed from our readers' records (formats/gdsread.py, formats/oasparse.py), once per file,
children first: one sha256 per cell over its arrays' bytes, no Python loop over references.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from taalasc.errors import MaskError
from taalasc.formats.gdsflat import children_first
from taalasc.formats.gdsread import GdsLibrary

DIGEST_BYTES = 32


def content_hashes(lib: GdsLibrary, where: str) -> dict[str, bytes]:
    """The content hash (32 bytes) of every cell the top reaches, by cell name."""
    digests = digest_table(lib, where)
    return {lib.cells[k].name: digests[k].tobytes() for k in children_first(lib)}


def digest_table(lib: GdsLibrary, where: str) -> np.ndarray:
    """uint8 [cells, 32]: the content hash of each cell id the top reaches (zeros for the
    others). MaskError for two cells of one name (a name must say which cell is meant) or a
    reference cycle (children_first)."""
    names = [c.name for c in lib.cells]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        twice = next(n for n in names if n in seen or seen.add(n))
        raise MaskError(f"{where}: two cells are named {twice!r}")
    digests = np.zeros((len(lib.cells), DIGEST_BYTES), np.uint8)
    for k in children_first(lib):
        digests[k] = np.frombuffer(_digest(lib.cells[k], digests), np.uint8)
    return digests


def _digest(cell, digests: np.ndarray) -> bytes:
    """Every part is length-prefixed or of fixed width, so no two cells encode alike."""
    parts = [struct.pack("<q", len(cell.rects))]
    for (layer, datatype), rects in sorted(cell.rects.items()):
        if len(rects) > 1:
            rects = rects[np.lexsort(rects.T[::-1])]
        parts += [struct.pack("<qqq", layer, datatype, len(rects)), rects.astype("<i8").tobytes()]
    refs = cell.refs
    if refs is None:
        parts.append(struct.pack("<q", 0))
        return hashlib.sha256(b"".join(parts)).digest()
    plain = not (refs.reflect.any() or refs.quarter.any() or (refs.cols != 1).any()
                 or (refs.rows != 1).any())
    # a plain cell's other fields are all 0 or 1
    parts += [struct.pack("<q?", len(refs.child), plain), refs.origin.astype("<i8").tobytes()]
    if not plain:
        parts += [np.asarray(part, "<i8").tobytes() for part in (
            refs.reflect, refs.quarter, refs.cols, refs.rows, refs.col_step, refs.row_step)]
    parts.append(digests[refs.child].tobytes())
    return hashlib.sha256(b"".join(parts)).digest()
