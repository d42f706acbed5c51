"""gdstk as the independent reader the tests compare ours with (formats/gdsread.py,
formats/oasparse.py): a mask file read by gdstk in safe_read's child process and flattened
to int64 [n, 4] nm rectangles per layer. Not used by taalasc itself."""

from __future__ import annotations

from pathlib import Path

import gdstk
import numpy as np

from taalasc.errors import MaskError
from taalasc.formats.readback import add_plain, cell_rects, is_plain, place_rects
from taalasc.formats.safe_read import MAX_SHAPES, read_flat

Layer = tuple[int, int]


def gdstk_rects(path: Path, allowed: set[Layer] | None = None) -> dict[Layer, np.ndarray]:
    """Every shape of the file's single top cell, flattened by gdstk (in a child process)."""
    path = Path(path)
    return read_flat(path, lambda lib: _flatten(lib, path, allowed))


def _flatten(lib: gdstk.Library, path: Path, allowed: set[Layer] | None
             ) -> dict[Layer, np.ndarray]:
    """gdstk_rects' work on a library gdstk has read (runs in safe_read's child process).

    Two passes: each cell's own rectangles plus a count of the shapes it expands to
    (memoised, x repetition sizes, reference cycles refused), then - only when the top cell
    stays within MAX_SHAPES - the flattening itself. A few hundred bytes of nested arrays
    would otherwise ask numpy for terabytes.
    """
    tops = lib.top_level()
    if len(tops) != 1:
        raise MaskError(f"{path}: expected one top cell, found {len(tops)}")
    own_memo: dict[str, dict[Layer, np.ndarray]] = {}
    count_memo: dict[str, int] = {}
    active: set[str] = set()

    def count(cell: gdstk.Cell) -> int:
        if cell.name in count_memo:
            return count_memo[cell.name]
        if cell.name in active:
            raise MaskError(f"{path}: cell {cell.name!r} is part of a reference cycle")
        active.add(cell.name)
        own_memo[cell.name] = cell_rects(cell, path, allowed)
        total = sum(len(v) for v in own_memo[cell.name].values())
        for ref in cell.references:
            if isinstance(ref.cell, str):
                raise MaskError(f"{path}: cell {cell.name!r} references missing cell {ref.cell!r}")
            total += count(ref.cell) * max(ref.repetition.size, 1)
        active.discard(cell.name)
        count_memo[cell.name] = total
        return total

    total = count(tops[0])
    if total > MAX_SHAPES:
        raise MaskError(f"{path}: the mask would expand to {total} shapes when flattened; "
                        f"at most {MAX_SHAPES} are read")
    memo: dict[str, dict[Layer, np.ndarray]] = {}

    def flat(cell: gdstk.Cell) -> dict[Layer, np.ndarray]:
        if cell.name in memo:
            return memo[cell.name]
        parts = {k: [v] for k, v in own_memo[cell.name].items()}
        plain: list[tuple[dict, tuple]] = []
        for ref in cell.references:
            if is_plain(ref):
                plain.append((flat(ref.cell), ref.origin))
                continue
            for layer, child in flat(ref.cell).items():
                parts.setdefault(layer, []).append(place_rects(child, ref, path))
        add_plain(parts, plain)
        memo[cell.name] = {k: np.concatenate(v) for k, v in parts.items()}
        return memo[cell.name]

    return flat(tops[0])
