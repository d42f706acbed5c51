"""One die of an extraction, as a self-contained work unit (runs in a worker process).

``extract_die`` reads one mask file and decodes every tile of the die at once: each via
centre gives its tile from the grid, its site from the site pitch and its bit from the strap
it sits on; one bincount over (tile, site, strap) then gives every site's bit, opens
(no via) and shorts (both straps) for the whole die. A GDSII file is streamed through our
own reader (emit/gdsread.py) in batches, so memory is one die's bit counts, not its shapes;
OASIS goes through gdstk (emit/readback.read_vias).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray
from taalasc.errors import MaskError

MAX_DEFECTS_KEPT = 1000  # a badly broken mask would list millions; the count stays exact


@dataclass(frozen=True)
class Defect:
    kind: str            # "open" | "short" | "extra-via" | "stray-vias"
    die: int
    tile: tuple[int, int]
    tensor: str
    segment_kind: str    # codes | scales | vector
    element: tuple[int, int] | None   # (row, col) in the source array
    bit: int | None

    def describe(self) -> str:
        where = f"die {self.die} tile {self.tile}"
        if self.element is None:
            return f"{self.kind} at {where} ({self.tensor})"
        return (f"{self.kind} at {where}: {self.tensor} {self.segment_kind} "
                f"[{self.element[0]}, {self.element[1]}] bit {self.bit}")


@dataclass(frozen=True)
class DieReadJob:
    """What a worker needs to decode one die (picklable)."""
    path: str
    base: BaseArray
    die: int
    assignments: tuple        # ((TileSlot, Segment), ...) on this die
    route_vias: int           # vias expected outside the used tiles


@dataclass
class DieValues:
    die: int
    values: list = field(default_factory=list)   # per assignment: int8 codes / fp16 values
    defects: list[Defect] = field(default_factory=list)
    defect_count: int = 0
    vias_read: int = 0


def extract_die(job: DieReadJob) -> DieValues:
    from taalasc.place.pack import unpack_segment

    base, out = job.base, DieValues(job.die)
    decoder = _Decoder(base, job.assignments)
    for piece in _doubled_centres(Path(job.path), base):
        if isinstance(piece, np.ndarray):
            decoder.add(piece)
        else:
            decoder.add_instances(piece)
    out.vias_read = decoder.vias
    high, low = decoder.counts()
    sites = np.arange(base.weight_tile.sites)
    used_sites = np.array([seg.used_sites for _, seg in job.assignments], np.int64)
    below = sites[None, :] < used_sites[:, None]
    # A site below the used count needs exactly one via; one above needs none. Tiles with
    # a defect are found in one pass over the die; only those are looked at one by one.
    bad = np.flatnonzero(np.where(below, (high > 0) == (low > 0), (high + low) > 0).any(axis=1))
    for k in bad.tolist():
        slot, segment = job.assignments[k]
        n_high, n_low, under = high[k], low[k], below[k]
        _defects(out, "open", slot, segment, np.flatnonzero(under & (n_high == 0) & (n_low == 0)))
        _defects(out, "short", slot, segment, np.flatnonzero(under & (n_high > 0) & (n_low > 0)))
        _defects(out, "extra-via", slot, segment, np.flatnonzero(~under & (n_high + n_low > 0)))
    bits = ((high > 0) & (low == 0)).view(np.uint8)
    for k, (slot, segment) in enumerate(job.assignments):
        out.values.append(unpack_segment(segment, bits[k, :segment.used_sites]))
    if decoder.outside != job.route_vias:
        out.defect_count += 1
        out.defects.append(Defect("stray-vias", job.die, (-1, -1),
                                  f"{decoder.outside} vias outside used tiles, "
                                  f"{job.route_vias} route vias expected", "", None, None))
    return out


def _doubled_centres(path: Path, base: BaseArray):
    """Via centres x 2 (exact for any via size), in batches; from GDSII also gdsread
    Instances (small cells placed by translation, e.g. a tile's chunk cells)."""
    from taalasc.emit.readback import custom_layers, read_vias

    if path.suffix.lower() != ".gds":
        yield 2 * read_vias(path, base.pdk)
        return
    from taalasc.emit.gdsflat import check_square, iter_layer
    from taalasc.emit.readback import read_gds_checked

    pdk = base.pdk
    via, metal = custom_layers(pdk)
    size = pdk.rules.via_size_nm
    lib = read_gds_checked(path, {via, metal})
    check_square(lib, via, size, f"{pdk.name} vias are {size} x {size} nm")
    yield from iter_layer(lib, via, centres=True, instances=True)


class _Decoder:
    """Via counts per (used tile, site, strap) of one die, accumulated batch by batch."""

    def __init__(self, base: BaseArray, assignments):
        grid, tile = base.tile_grid, base.weight_tile
        self.grid, self.tile, self.tol = grid, tile, base.pdk.grid_nm
        # Used-tile index of each grid tile, -1 where unused; one extra entry for "off grid".
        self.slot_of_flat = np.full(grid.rows * grid.columns + 1, -1, np.int64)
        for k, (slot, _) in enumerate(assignments):
            self.slot_of_flat[slot.row * grid.columns + slot.column] = k
        self.slots = len(assignments)
        self.keys: list[np.ndarray] = []
        self.outside = 0
        self.vias = 0
        self._local = None
        self.slot_x0 = tile.slot_x_nm(0)
        self.high_y0, self.low_y0 = tile.strap_y_nm(0, True), tile.strap_y_nm(0, False)

    def add_instances(self, inst) -> None:
        """Vias of small-cell instances (gdsread.Instances), decoded per instance where that
        is exact: the instance's origin sits on the site grid of a used tile and the
        cell's vias, all on bit slots relative to it, stay inside that tile. Then site =
        the origin's site + the via's site in the cell, and the strap is the via's own. Any
        other instance is expanded to its vias and decoded one by one (``add``)."""
        memo, child = inst.memo, inst.child
        if not len(child):
            return
        grid, tile = self.grid, self.tile
        local = self._local_tables(memo, child)
        rel_x = inst.origin[:, 0] - grid.origin_nm[0]
        rel_y = inst.origin[:, 1] - grid.origin_nm[1]
        column, row = rel_x // grid.pitch_x_nm, rel_y // grid.pitch_y_nm
        ox, oy = rel_x - column * grid.pitch_x_nm, rel_y - row * grid.pitch_y_nm
        on_grid = (column >= 0) & (row >= 0) & (column < grid.columns) & (row < grid.rows)
        slot = self.slot_of_flat[np.where(on_grid, row * grid.columns + column,
                                          grid.rows * grid.columns)]
        px, py = tile.site_pitch_x_nm, tile.site_pitch_y_nm
        box = self._box[child]  # [n, 4]: cell-relative via x/y min and max; clean flag below
        fast = ((slot >= 0) & self._clean[child] & (ox % px == 0) & (oy % py == 0)
                & (ox + box[:, 0] >= 0) & (ox + box[:, 1] < tile.width_nm)
                & (oy + box[:, 2] >= 0) & (oy + box[:, 3] < tile.height_nm))
        n = memo.size[child]
        self.vias += int(n.sum())
        if not fast.all():
            slow = ~fast
            shapes = _gather(memo.table, memo.start[child[slow]], n[slow])
            self.vias -= len(shapes)  # add() counts them again
            self.add(shapes + 2 * np.repeat(inst.origin[slow], n[slow], axis=0))
            child, n, slot, ox, oy = child[fast], n[fast], slot[fast], ox[fast], oy[fast]
        base = slot * tile.sites + (oy // py) * tile.sites_x + ox // px
        starts = memo.start[child]
        site, high = local
        if len(n) and n.min() == n.max():
            idx = starts[:, None] + np.arange(n[0], dtype=np.int64)
            keys = ((base[:, None] + site[idx]) << 1) | high[idx]
        else:
            idx = _ragged(starts, n)
            keys = ((np.repeat(base, n) + site[idx]) << 1) | high[idx]
        self.keys.append(keys.reshape(-1))

    def _local_tables(self, memo, kids: np.ndarray):
        """Per memo row: the via's site offset and strap relative to its cell's origin; per
        cell: whether every via is on a bit slot, and the vias' x/y range (cached)."""
        tile = self.tile
        if self._local is None or len(self._local[0]) != memo.length:
            c = memo.table >> 1
            px, py = tile.site_pitch_x_nm, tile.site_pitch_y_nm
            i, j = c[:, 0] // px, c[:, 1] // py
            dy = c[:, 1] - j * py
            high = np.abs(dy - self.high_y0) <= self.tol
            low = np.abs(dy - self.low_y0) <= self.tol
            on = (np.abs(c[:, 0] - i * px - self.slot_x0) <= self.tol) & (high | low)
            self._local = (j * tile.sites_x + i, high.astype(np.int64))
            self._local_on, self._local_c = on, c
            self._box = np.zeros((len(memo.start), 4), np.int64)
            self._clean = np.zeros(len(memo.start), bool)
            self._boxed = np.zeros(len(memo.start), bool)
        for k in np.unique(kids[~self._boxed[kids]]).tolist():
            lo, size = int(memo.start[k]), int(memo.size[k])
            c = self._local_c[lo:lo + size]
            if size:
                self._box[k] = (c[:, 0].min(), c[:, 0].max(), c[:, 1].min(), c[:, 1].max())
            self._clean[k] = bool(self._local_on[lo:lo + size].all())
            self._boxed[k] = True
        return self._local

    def add(self, centres2: np.ndarray) -> None:
        grid, tile = self.grid, self.tile
        self.vias += len(centres2)
        # int32 halves the memory traffic when the coordinates allow it (a die always does).
        small = len(centres2) and -(1 << 31) < centres2.min() and centres2.max() < (1 << 31)
        c = (centres2 >> 1).astype(np.int32 if small else np.int64)
        x = c[:, 0] - np.int32(grid.origin_nm[0])
        y = c[:, 1] - np.int32(grid.origin_nm[1])
        column, row = x // grid.pitch_x_nm, y // grid.pitch_y_nm
        x -= column * grid.pitch_x_nm  # now tile-relative
        y -= row * grid.pitch_y_nm
        on_grid = (column >= 0) & (row >= 0) & (column < grid.columns) & (row < grid.rows)
        tile_index = np.where(on_grid, row * grid.columns + column, grid.rows * grid.columns)
        slot = self.slot_of_flat[tile_index]
        slot[(x >= tile.width_nm) | (y >= tile.height_nm)] = -1
        used = slot >= 0
        n_used = int(used.sum())
        self.outside += len(x) - n_used
        if n_used < len(x):
            x, y, slot, column, row = x[used], y[used], slot[used], column[used], row[used]
        px, py = tile.site_pitch_x_nm, tile.site_pitch_y_nm
        i, j = x // px, y // py
        # Slot centres are floored to the grid by at most half a grid step; allow a grid step.
        on_x = np.abs(x - i * px - self.slot_x0) <= self.tol
        dy = y - j * py
        high = np.abs(dy - self.high_y0) <= self.tol
        low = np.abs(dy - self.low_y0) <= self.tol
        stray = ~(on_x & (high | low))
        if stray.any():
            k = int(np.flatnonzero(stray)[0])
            col, rw = int(column[k]), int(row[k])
            ox, oy = self.grid.tile_origin_nm(col, rw)
            raise MaskError(f"tile ({col}, {rw}): via at ({int(x[k]) + ox}, {int(y[k]) + oy}) nm "
                            f"is on no bit slot ({int(stray.sum())} such vias)")
        site = (j * tile.sites_x + i).astype(np.int64)
        self.keys.append(((slot * tile.sites + site) << 1) | high)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(vias on the high strap, vias on the low strap) per [used tile, site]."""
        keys = np.concatenate(self.keys) if self.keys else np.zeros(0, np.int64)
        self.keys = []
        n = np.bincount(keys, minlength=self.slots * self.tile.sites * 2)
        n = n.reshape(self.slots, self.tile.sites, 2)
        return n[..., 1], n[..., 0]


def _ragged(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[k] .. starts[k] + sizes[k]."""
    total = int(sizes.sum())
    return np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(total,
                                                                           dtype=np.int64)


def _gather(table: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return table[_ragged(starts, sizes)]


def _defects(out: DieValues, kind: str, slot, segment, sites: np.ndarray) -> None:
    if not len(sites):
        return
    out.defect_count += len(sites)
    room = MAX_DEFECTS_KEPT - len(out.defects)
    width = segment.cols[1] - segment.cols[0]
    for site in sites[:max(room, 0)].tolist():
        element, bit = divmod(site, segment.bits)
        r, c = divmod(element, width)
        inside = element < segment.elements
        out.defects.append(Defect(
            kind, out.die, (slot.column, slot.row), segment.tensor, segment.kind,
            (segment.rows[0] + r, segment.cols[0] + c) if inside else None,
            bit if inside else None))
