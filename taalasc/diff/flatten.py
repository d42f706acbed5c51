"""Flatten gdstk cells to integer-nm rectangles per layer, memoised per cell.

The diff only ever flattens the parts of two layouts that differ (see ``hier.py``), so this
module works on in-memory gdstk cells, not on files. Rectangles are int64 ``[n, 4]``
(x0, y0, x1, y1) in database units of 1 nm. Anything that is not an axis-aligned rectangle
(a path, a 5-point polygon, a 45° rotation) raises MaskError: taalasc masks hold rectangles
only, and the XOR count in ``geom.py`` is exact for rectangles.
"""

from __future__ import annotations

import gdstk
import numpy as np

from taalasc.formats.readback import add_plain, cell_rects, is_plain, place_rects, ref_offsets
from taalasc.errors import MaskError

__all__ = ["EMPTY", "Flattener", "Layer", "polygon_rects", "ref_offsets"]

Layer = tuple[int, int]
EMPTY = np.zeros((0, 4), np.int64)


def polygon_rects(cell: gdstk.Cell, where: str) -> dict[Layer, np.ndarray]:
    """The cell's own polygons (not its references) as rectangles per layer."""
    return dict(sorted(cell_rects(cell, where).items()))


class Flattener:
    """Flattened rectangles of the cells of one library, memoised by cell name."""

    def __init__(self, where: str):
        self.where = where
        self._memo: dict[str, dict[Layer, np.ndarray]] = {}

    def cell(self, cell: gdstk.Cell) -> dict[Layer, np.ndarray]:
        if cell.name in self._memo:
            return self._memo[cell.name]
        own = polygon_rects(cell, self.where)
        parts: dict[Layer, list[np.ndarray]] = {k: [v] for k, v in own.items()}
        plain: list[tuple[dict, tuple]] = []
        for ref in cell.references:
            child = self.child(ref)  # refuses magnified references
            if is_plain(ref):
                plain.append((child, ref.origin))
                continue
            for layer, rects in child.items():
                parts.setdefault(layer, []).append(self.placed(rects, ref))
        add_plain(parts, plain)
        flat = {k: np.concatenate(v) for k, v in sorted(parts.items())}
        self._memo[cell.name] = flat
        return flat

    def child(self, ref) -> dict[Layer, np.ndarray]:
        if isinstance(ref.cell, str):
            raise MaskError(f"{self.where}: a reference to missing cell {ref.cell!r}")
        if ref.magnification != 1:
            raise MaskError(f"{self.where}: reference to {ref.cell.name!r} is magnified "
                            f"{ref.magnification}x; the diff handles 1x only")
        return self.cell(ref.cell)

    def placed(self, rects: np.ndarray, ref) -> np.ndarray:
        return place_rects(rects, ref, self.where)

    def reference(self, ref) -> dict[Layer, np.ndarray]:
        """All rectangles one reference puts into its parent's coordinates."""
        return {layer: self.placed(rects, ref) for layer, rects in self.child(ref).items()}
