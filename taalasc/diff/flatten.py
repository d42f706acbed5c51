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

from taalasc.errors import MaskError

Layer = tuple[int, int]
EMPTY = np.zeros((0, 4), np.int64)


def place(rects: np.ndarray, origin, rotation: float = 0.0, x_reflection: bool = False,
          offsets: np.ndarray | None = None, where: str = "") -> np.ndarray:
    """Rectangles of a child cell placed by a reference (90° steps, 1x only)."""
    quarter = rotation / (np.pi / 2)
    if abs(quarter - round(quarter)) > 1e-9:
        raise MaskError(f"{where}: a reference rotated by {np.degrees(rotation):g}° cannot be "
                        "diffed; only 90° steps are supported")
    out = rects
    if x_reflection or round(quarter) % 4:
        pts = rects.reshape(-1, 2).copy()
        if x_reflection:
            pts[:, 1] = -pts[:, 1]
        for _ in range(int(round(quarter)) % 4):
            pts = np.stack([-pts[:, 1], pts[:, 0]], axis=1)
        pts = pts.reshape(-1, 4)
        out = np.stack([np.minimum(pts[:, 0], pts[:, 2]), np.minimum(pts[:, 1], pts[:, 3]),
                        np.maximum(pts[:, 0], pts[:, 2]), np.maximum(pts[:, 1], pts[:, 3])], axis=1)
    base = np.rint(np.asarray(origin, dtype=np.float64)).astype(np.int64)[None, :]
    if offsets is not None and len(offsets) > 1:
        base = base + offsets
    return (out[None, :, :] + np.tile(base, 2)[:, None, :]).reshape(-1, 4)


def ref_offsets(ref) -> np.ndarray | None:
    """Integer offsets of a reference's (or polygon's) repetition, None when it has none."""
    if ref.repetition.size > 1:
        return np.rint(np.asarray(ref.repetition.get_offsets())).astype(np.int64)
    return None


def polygon_rects(cell: gdstk.Cell, where: str) -> dict[Layer, np.ndarray]:
    """The cell's own polygons (not its references) as rectangles per layer."""
    from taalasc.emit.readback import cell_rects

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
        # Plain placements are gathered into one broadcast per layer: a tile has hundreds.
        plain: list[tuple[dict, tuple]] = []
        for ref in cell.references:
            child = self.child(ref)
            if ref.rotation == 0 and not ref.x_reflection and ref.repetition.size <= 1:
                plain.append((child, ref.origin))
                continue
            for layer, rects in child.items():
                parts.setdefault(layer, []).append(self.placed(rects, ref))
        if plain:
            origins = np.rint(np.array([o for _, o in plain], dtype=np.float64)).astype(np.int64)
            for layer in sorted({k for f, _ in plain for k in f}):
                arrs = [f.get(layer, EMPTY) for f, _ in plain]
                counts = np.array([len(x) for x in arrs])
                off = np.tile(np.repeat(origins, counts, axis=0), 2)
                parts.setdefault(layer, []).append(np.concatenate(arrs) + off)
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
        return place(rects, ref.origin, ref.rotation, ref.x_reflection, ref_offsets(ref),
                     self.where)

    def reference(self, ref) -> dict[Layer, np.ndarray]:
        """All rectangles one reference puts into its parent's coordinates."""
        return {layer: self.placed(rects, ref) for layer, rects in self.child(ref).items()}
