"""Content hashes of a layout's cells: a Merkle hash over the hierarchy, not over names.

A cell's hash covers its own rectangles (per layer, in file order), then each reference's
placement in order (origin, rotation, reflection, magnification, repetition offsets), then
for each reference the content hash of the cell it places. No name is hashed, so equal
hashes mean the same shapes whatever the cells are called, and the diff may skip a
reference to such a cell without flattening it: two compiles' die files name their cells
apart (custom/names.py) and still share the hashes of what they draw alike. A file whose
tile, chunk, strap or fill cell was edited in place keeps the name but not the hash. Values
are hashed exactly as read (OASIS origins read back as 99999.99999999999 where GDSII gives
100000): two encodings of one layout may hash apart and are then compared shape by shape -
correct, only slower.

Computed from the records gdstk has parsed, once per file: one C-level attribute fetch and
one ``marshal`` per reference, against a full read of the file."""

from __future__ import annotations

import hashlib
import marshal
import struct
from operator import attrgetter, itemgetter

import gdstk
import numpy as np

from taalasc.diff.flatten import polygon_rects
from taalasc.errors import MaskError

# One C-level call per reference and attribute: the hot path (a tile holds hundreds of them).
_CELL = attrgetter("cell")      # the child Cell (gdstk returns one object per cell), or its
                                # name when the library lacks it
_PLACE = attrgetter("origin", "rotation", "x_reflection", "magnification", "repetition.size")
_REPEATS = itemgetter(4)


def content_hashes(lib: gdstk.Library, where: str) -> dict[str, bytes]:
    """The content hash (32 bytes) of every cell of ``lib``, by cell name.

    hash(cell) = sha256(own rectangles, placements of its references, then the content hash
    of each referenced cell in reference order).
    """
    cells = lib.cells
    if len({c.name for c in cells}) != len(cells):   # a name must say which cell is meant
        seen: set[str] = set()
        twice = next(c.name for c in cells if c.name in seen or seen.add(c.name))
        raise MaskError(f"{where}: two cells are named {twice!r}")
    local: dict = {}                  # Cell -> (hash of own records, child per reference)
    digests: dict = {}                # Cell (or a missing cell's name) -> content hash
    for root in cells:
        stack = [root]                # iterative: a hierarchy may be deep
        while stack:
            cell = stack[-1]
            if cell in digests:
                stack.pop()
                continue
            if isinstance(cell, str):   # referenced but absent: reported if the diff needs it
                digests[cell] = hashlib.sha256(b"missing cell\0" + cell.encode()).digest()
                continue
            if cell not in local:
                local[cell] = _local(cell, where)
            own, children = local[cell]
            try:   # the common case: every child already hashed
                tail = b"".join(map(digests.__getitem__, children))
            except KeyError:
                pending = [c for c in dict.fromkeys(children) if c not in digests]
                # started but not finished: it waits for this cell, its descendant
                looped = next((c for c in pending if c in local), None)
                if looped is not None:
                    raise MaskError(f"{where}: cell {looped.name!r} is part of a reference "
                                    "cycle") from None
                stack.extend(pending)
                continue
            digests[cell] = hashlib.sha256(own + tail).digest()
            del local[cell]
            stack.pop()
    return {c.name: digests[c] for c in cells}


def _local(cell: gdstk.Cell, where: str) -> tuple[bytes, list]:
    """(hash of the cell's own records, the child of each reference). Every part is
    length-prefixed or self-delimiting, so no two cells encode alike."""
    h = hashlib.sha256()
    own = polygon_rects(cell, where)
    h.update(struct.pack("<q", len(own)))
    for (layer, datatype), rects in own.items():                          # sorted by layer
        h.update(struct.pack("<qqq", layer, datatype, len(rects)))
        h.update(rects.tobytes())
    refs = cell.references
    places = list(map(_PLACE, refs))   # (origin, rotation, reflection, magnification, repeats)
    h.update(marshal.dumps(places, 2))
    if places and max(map(_REPEATS, places)) > 1:
        for k, ref in enumerate(refs):
            if places[k][4] > 1:   # a repeated reference: its offsets, not just their count
                offsets = np.asarray(ref.repetition.get_offsets(), np.float64)
                h.update(struct.pack("<qq", k, len(offsets)))
                h.update(offsets.tobytes())
    return h.digest(), list(map(_CELL, refs))
