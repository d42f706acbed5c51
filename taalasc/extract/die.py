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
    for centres2 in _doubled_centres(Path(job.path), base):
        out.vias_read += len(centres2)
        decoder.add(centres2)
    high, low = decoder.counts()
    sites = np.arange(base.weight_tile.sites)
    for k, (slot, segment) in enumerate(job.assignments):
        used = segment.used_sites
        n_high, n_low = high[k], low[k]
        below = sites < used
        _defects(out, "open", slot, segment, np.flatnonzero(below & (n_high == 0) & (n_low == 0)))
        _defects(out, "short", slot, segment, np.flatnonzero(below & (n_high > 0) & (n_low > 0)))
        _defects(out, "extra-via", slot, segment, np.flatnonzero(~below & (n_high + n_low > 0)))
        bits = ((n_high[:used] > 0) & (n_low[:used] == 0)).astype(np.uint8)
        out.values.append(unpack_segment(segment, bits))
    if decoder.outside != job.route_vias:
        out.defect_count += 1
        out.defects.append(Defect("stray-vias", job.die, (-1, -1),
                                  f"{decoder.outside} vias outside used tiles, "
                                  f"{job.route_vias} route vias expected", "", None, None))
    return out


def _doubled_centres(path: Path, base: BaseArray):
    """Via centres x 2 (exact for any via size), in batches."""
    from taalasc.emit.readback import custom_layers, read_vias

    if path.suffix.lower() != ".gds":
        yield 2 * read_vias(path, base.pdk)
        return
    from taalasc.emit.gdsread import check_square, iter_layer
    from taalasc.emit.readback import read_gds_checked

    pdk = base.pdk
    via, metal = custom_layers(pdk)
    size = pdk.rules.via_size_nm
    lib = read_gds_checked(path, {via, metal})
    check_square(lib, via, size, f"{pdk.name} vias are {size} x {size} nm")
    yield from iter_layer(lib, via, centres=True)


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
        self.slot_x0 = tile.slot_x_nm(0)
        self.high_y0, self.low_y0 = tile.strap_y_nm(0, True), tile.strap_y_nm(0, False)

    def add(self, centres2: np.ndarray) -> None:
        grid, tile = self.grid, self.tile
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
