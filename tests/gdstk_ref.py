"""gdstk as the independent reader the tests compare ours with (formats/gdsread.py,
formats/oasparse.py): a mask file read by gdstk in safe_read's child process and flattened
to int64 [n, 4] nm rectangles per layer. Not used by taalasc itself."""

from __future__ import annotations

from pathlib import Path

import gdstk
import numpy as np

from taalasc.errors import MaskError
from taalasc.formats.safe_read import MAX_SHAPES, read_flat

Layer = tuple[int, int]
VIA, METAL = (71, 44), (72, 20)
_EMPTY = np.zeros((0, 4), np.int64)


def sorted_rects(rects) -> np.ndarray:
    """Rectangles as int64 [n, 4], in one order (for comparing two readers' output)."""
    rects = np.asarray(rects, np.int64).reshape(-1, 4)
    return rects[np.lexsort(rects.T[::-1])]


def assert_same_rects(ours: dict, theirs: dict) -> None:
    """Two readers' rectangles per layer are the same sets."""
    assert sorted(ours) == sorted(theirs)
    for layer in ours:
        np.testing.assert_array_equal(sorted_rects(ours[layer]), sorted_rects(theirs[layer]),
                                      str(layer))


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


def random_library(seed: int) -> gdstk.Library:
    """Four levels of cells: leaves of rectangles on two layers, then cells placing earlier
    cells by SREF or AREF at every 90-degree rotation, with and without x reflection, and
    with runs of identical references (as a tile cell has) broken by other elements."""
    rng = np.random.default_rng(seed)
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    cells = []
    for k in range(3):
        leaf = lib.new_cell(f"L{k}" + "x" * int(rng.integers(0, 4)))  # varying name lengths
        for _ in range(int(rng.integers(1, 6))):
            x, y = (int(v) * 10 for v in rng.integers(-500, 500, 2))
            w, h = (int(v) * 10 for v in rng.integers(1, 100, 2))
            layer = VIA if rng.random() < 0.6 else METAL
            leaf.add(gdstk.rectangle((x, y), (x + w, y + h), layer=layer[0], datatype=layer[1]))
        cells.append(leaf)
    for level in range(3):
        for k in range(2):
            cell = lib.new_cell(f"C{level}_{k}")
            for _ in range(int(rng.integers(2, 12))):
                child = cells[int(rng.integers(0, len(cells)))]
                origin = tuple(int(v) * 10 for v in rng.integers(-5000, 5000, 2))
                rotation = float(rng.integers(0, 4)) * np.pi / 2
                reflect = bool(rng.random() < 0.3)
                if rng.random() < 0.25:
                    cell.add(gdstk.Reference(child, origin, rotation=rotation,
                                             x_reflection=reflect,
                                             columns=int(rng.integers(1, 4)),
                                             rows=int(rng.integers(1, 4)),
                                             spacing=(int(rng.integers(1, 50)) * 100,
                                                      int(rng.integers(1, 50)) * 100)))
                else:
                    cell.add(gdstk.Reference(child, origin, rotation=rotation,
                                             x_reflection=reflect))
            if rng.random() < 0.5:
                cell.add(gdstk.rectangle((0, 0), (800, 800), layer=VIA[0], datatype=VIA[1]))
            cells.append(cell)
    top = lib.new_cell("TOP")  # places every cell nothing else places: one top cell
    placed = {ref.cell.name for cell in cells for ref in cell.references}
    for child in cells:
        if child.name not in placed:
            top.add(gdstk.Reference(child, (int(rng.integers(0, 1000)) * 10, 0)))
    top.add(gdstk.Label("labels carry no geometry", (0, 0), layer=VIA[0]))
    return lib


# --- gdstk cells to rectangles (taalasc's own readers need none of this) ----------------

def ref_offsets(ref) -> np.ndarray | None:
    """Integer offsets of a reference's (or polygon's) repetition, None when it has none."""
    if ref.repetition.size > 1:
        return np.rint(np.asarray(ref.repetition.get_offsets())).astype(np.int64)
    return None


def place_rects(rects: np.ndarray, ref: gdstk.Reference, where) -> np.ndarray:
    """A child cell's rectangles placed by ``ref`` (90° steps at 1x only), repetitions included."""
    quarter = ref.rotation / (np.pi / 2)
    if abs(quarter - round(quarter)) > 1e-9 or ref.magnification != 1:
        raise MaskError(f"{where}: reference to {ref.cell_name!r} has rotation {ref.rotation} / "
                        f"magnification {ref.magnification}; only 90° steps at 1x are supported")
    out = rects
    if ref.x_reflection or round(quarter) % 4:
        pts = rects.reshape(-1, 2).copy()
        if ref.x_reflection:
            pts[:, 1] = -pts[:, 1]
        for _ in range(int(round(quarter)) % 4):
            pts = np.stack([-pts[:, 1], pts[:, 0]], axis=1)
        pts = pts.reshape(-1, 4)
        out = np.stack([np.minimum(pts[:, 0], pts[:, 2]), np.minimum(pts[:, 1], pts[:, 3]),
                        np.maximum(pts[:, 0], pts[:, 2]), np.maximum(pts[:, 1], pts[:, 3])], axis=1)
    offsets = np.rint(np.asarray(ref.origin, dtype=np.float64)).astype(np.int64)[None, :]
    repeat = ref_offsets(ref)
    if repeat is not None:
        offsets = offsets + repeat
    return (out[None, :, :] + np.tile(offsets, 2)[:, None, :]).reshape(-1, 4)


def is_plain(ref: gdstk.Reference) -> bool:
    """A placement by translation alone: no rotation, reflection, scaling or repetition."""
    return ref.rotation == 0 and not ref.x_reflection and ref.magnification == 1 \
        and ref.repetition.size <= 1


def add_plain(parts: dict[Layer, list[np.ndarray]], plain: list[tuple[dict, tuple]]) -> None:
    """Add (child rects per layer, origin) placements to ``parts`` as one broadcast per layer:
    a tile cell has hundreds of them."""
    if not plain:
        return
    origins = np.rint(np.array([o for _, o in plain], dtype=np.float64)).astype(np.int64)
    for layer in sorted({k for f, _ in plain for k in f}):
        arrs = [f.get(layer, _EMPTY) for f, _ in plain]
        counts = np.array([len(x) for x in arrs])
        off = np.tile(np.repeat(origins, counts, axis=0), 2)
        parts.setdefault(layer, []).append(np.concatenate(arrs) + off)


def cell_rects(cell: gdstk.Cell, path, allowed: set[Layer] | None = None
               ) -> dict[Layer, np.ndarray]:
    """The cell's own shapes (not its references; repetitions expanded) as int64 [n, 4]
    rectangles per layer. MaskError for paths, non-rectangles, layers outside ``allowed``
    and repetition bombs; ``path`` names the file in messages."""
    if cell.paths:
        raise MaskError(f"{path}: cell {cell.name!r} holds paths; taalasc masks use rectangles")
    polys = cell.polygons
    if not polys:
        return {}
    for poly in polys:
        if len(poly.points) != 4:
            raise MaskError(f"{path}: cell {cell.name!r} has a {len(poly.points)}-point "
                            f"polygon on {poly.layer}/{poly.datatype}; only rectangles allowed")
    pts = np.rint(np.array([p.points for p in polys])).astype(np.int64)  # [n, 4, 2]
    lo, hi = pts.min(axis=1), pts.max(axis=1)
    on_box = ((pts[..., 0] == lo[:, None, 0]) | (pts[..., 0] == hi[:, None, 0])) & \
             ((pts[..., 1] == lo[:, None, 1]) | (pts[..., 1] == hi[:, None, 1]))
    bad = ~on_box.all(axis=1) | np.any(hi == lo, axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise MaskError(f"{path}: cell {cell.name!r} has a non-rectangular shape on "
                        f"{polys[k].layer}/{polys[k].datatype} near {lo[k].tolist()} nm")
    rects = np.concatenate([lo, hi], axis=1)
    parts: dict[Layer, list[np.ndarray]] = {}
    shapes = 0
    for k, poly in enumerate(polys):
        layer = (poly.layer, poly.datatype)
        if allowed is not None and layer not in allowed:
            raise MaskError(f"{path}: cell {cell.name!r} has a shape on layer "
                            f"{layer[0]}/{layer[1]}; only {sorted(allowed)} may appear")
        rect = rects[k:k + 1]
        size = poly.repetition.size
        shapes += max(size, 1)
        if shapes > MAX_SHAPES:  # an OASIS repetition is a bomb of its own
            raise MaskError(f"{path}: cell {cell.name!r} repeats its shapes more than "
                            f"{MAX_SHAPES} times; at most {MAX_SHAPES} shapes are read")
        if size > 1:
            off = np.rint(poly.repetition.get_offsets()).astype(np.int64)
            rect = rect + np.tile(off, 2)
        parts.setdefault(layer, []).append(rect)
    return {k: np.concatenate(v) for k, v in parts.items()}


def edit_tile(src: Path, dst: Path, base, slot, edit) -> None:
    """Copy die file ``src`` to ``dst`` with tile ``slot``'s cell flattened into a new cell
    and ``edit(cell)`` applied to it (a tampered die for the verify tests)."""
    from taalasc.custom.names import TILE

    lib = gdstk.read_gds(str(src))
    top = lib.top_level()[0]
    ox, oy = base.tile_grid.tile_origin_nm(slot.column, slot.row)
    ref = next(r for r in top.references
               if tuple(np.rint(r.origin).astype(int)) == (ox, oy) and TILE.match(r.cell_name))
    flat = ref.cell.copy("T_EDITED", deep_copy=True).flatten()
    edit(flat)
    top.remove(ref)
    top.add(gdstk.Reference(flat, ref.origin))
    edited = gdstk.Library(unit=lib.unit, precision=lib.precision)
    edited.add(top, *top.dependencies(True))
    edited.write_gds(str(dst))
