"""One die of an extraction, as a self-contained work unit (runs in a worker process).

``extract_die`` reads one mask file and decodes every tile of the die at once: each via
centre gives its tile from the grid, its site from the site pitch and its bit from the strap
it sits on; one bincount over (tile, site, strap) then gives every site's bit, opens
(no via) and shorts (both straps) for the whole die. A GDSII file is streamed through our
own reader (formats/gdsread.py) in batches, so memory is one die's bit counts, not its shapes;
OASIS goes through gdstk (formats/readback.read_vias).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray
from taalasc.formats.readback import SiteDecoder, iter_vias

MAX_DEFECTS_KEPT = 1000  # a badly broken mask would list millions; the count stays exact


@dataclass(frozen=True)
class Defect:
    kind: str            # "open" | "short" | "extra-via" | "stray-vias" | "tie-open" | "tie-extra"
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
    decoder = SiteDecoder(base, job.assignments)
    for piece in iter_vias(Path(job.path), base.pdk, instances=True):
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
    _tie_defects(out, job, *decoder.tie_counts())
    bits = ((high > 0) & (low == 0)).view(np.uint8)
    for k, (slot, segment) in enumerate(job.assignments):
        out.values.append(unpack_segment(segment, bits[k, :segment.used_sites]))
    if decoder.outside != job.route_vias:
        out.defect_count += 1
        out.defects.append(Defect("stray-vias", job.die, (-1, -1),
                                  f"{decoder.outside} vias outside used tiles, "
                                  f"{job.route_vias} route vias expected", "", None, None))
    return out


def _tie_defects(out: DieValues, job: DieReadJob, high: np.ndarray, low: np.ndarray) -> None:
    """Every strap of a used tile needs exactly one tie via to its rail: without it the strap
    floats and every bit under it is undefined; with two the strap is tied twice (a cut
    between them would go unseen)."""
    for k in np.flatnonzero(((high != 1) | (low != 1)).any(axis=1)).tolist():
        slot, segment = job.assignments[k]
        for strap, counts in (("high", high[k]), ("low", low[k])):
            for kind, rows in (("tie-open", np.flatnonzero(counts == 0)),
                               ("tie-extra", np.flatnonzero(counts > 1))):
                if not len(rows):
                    continue
                out.defect_count += len(rows)
                if len(out.defects) < MAX_DEFECTS_KEPT:
                    out.defects.append(Defect(
                        kind, out.die, (slot.column, slot.row),
                        f"{segment.tensor}: {strap} strap of site row {int(rows[0])}"
                        + (f" and {len(rows) - 1} more rows" if len(rows) > 1 else ""),
                        segment.kind, None, None))


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
