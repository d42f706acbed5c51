"""One die of an extraction, as a self-contained work unit (runs in a worker process).

``extract_die`` reads one mask file and decodes every tile of the die at once: each via
centre gives its tile from the grid, its site from the site pitch and its digit from the line
it sits on; one bincount over (tile, site, line) then gives every site's digit, opens
(no via where the encoding needs one) and shorts (vias on two lines) for the whole die.
Zero-skip stores a 0 as no via, so an open there reads as a 0: each tile's via count is
checked against the count the compile drew (the manifest's ``tile_vias``), which finds a
missing or added via in a tile, and verify's codes check then names the element. Both
formats are read by our own readers (formats/gdsread.py, formats/oasparse.py) and decoded in
batches, so memory is one die's via counts, not its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray
from taalasc.formats.readback import SiteDecoder, iter_vias, site_lines, site_opens

MAX_DEFECTS_KEPT = 1000  # a badly broken mask would list millions; the count stays exact


@dataclass(frozen=True)
class Defect:
    kind: str            # "open" | "short" | "extra-via" | "bad-digit" | "via-count" | "stray-vias"
    #                      | "tie-open" | "tie-extra"
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
    placement: object         # taalasc.place.Placement cut to this die (die_part)
    route_vias: int           # vias expected outside the used tiles
    tile_vias: tuple | None = None   # zero-skip: bit vias drawn per assignment (the manifest)

    @cached_property
    def assignments(self) -> tuple:
        """((TileSlot, Segment), ...) on this die, placement order: made in the worker, so
        the jobs carry the die's rows and not these objects."""
        return tuple(self.placement.assignments)


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
    present, tile_vias = decoder.presence(per_tile=job.tile_vias is not None)
    digits, lines = site_lines(present, base.weight_tile)
    del present
    any_via, shorts, opens = lines > 0, lines > 1, site_opens(lines, base.weight_tile)
    sites = np.arange(base.weight_tile.sites)
    used_sites = np.array([seg.used_sites for _, seg in job.assignments], np.int64)
    below = sites[None, :] < used_sites[:, None]
    # A used site needs its via (one line); an unused one none. A digit beyond the segment's
    # digit width (a ternary constant on the -x line) is a defect too. Tiles with a defect
    # are found in one pass over the die; only those are looked at one by one.
    limit = np.array([1 << seg.digit_bits for _, seg in job.assignments], np.uint16)
    wide = digits >= limit[:, None]
    bad = np.flatnonzero(np.where(below, opens | shorts | wide, any_via).any(axis=1))
    for k in bad.tolist():
        slot, segment = job.assignments[k]
        under = below[k]
        _defects(out, "open", slot, segment, np.flatnonzero(under & opens[k]))
        _defects(out, "short", slot, segment, np.flatnonzero(under & shorts[k]))
        _defects(out, "bad-digit", slot, segment, np.flatnonzero(under & wide[k]))
        _defects(out, "extra-via", slot, segment, np.flatnonzero(~under & any_via[k]))
    digits[wide] = 0
    if job.tile_vias is not None:
        _count_defects(out, job, tile_vias)
    _tie_defects(out, job, decoder.tie_counts())
    for k, (slot, segment) in enumerate(job.assignments):
        out.values.append(unpack_segment(segment, digits[k, :segment.used_sites]))
    if decoder.outside != job.route_vias:
        out.defect_count += 1
        out.defects.append(Defect("stray-vias", job.die, (-1, -1),
                                  f"{decoder.outside} vias outside used tiles, "
                                  f"{job.route_vias} route vias expected", "", None, None))
    return out


def _count_defects(out: DieValues, job: DieReadJob, vias: np.ndarray) -> None:
    """Zero-skip: a tile's bit vias must number what the compile drew (a missing via reads
    as a 0 and an added one as a 1, so the count is what finds them)."""
    for k in np.flatnonzero(vias != np.asarray(job.tile_vias)).tolist():
        slot, segment = job.assignments[k]
        out.defect_count += 1
        if len(out.defects) < MAX_DEFECTS_KEPT:
            out.defects.append(Defect(
                "via-count", out.die, (slot.column, slot.row),
                f"{segment.tensor}: {int(vias[k])} bit vias, {int(job.tile_vias[k])} drawn "
                "(a zero-skip open or extra via; verify's codes check names the element)",
                segment.kind, None, None))


def _strap_name(tile, line: int) -> str:
    return {0: "high", 1: "low"}[line] if tile.encoding == "tie-high-low" \
        else f"line {line} ({tile.line_nets[line]})"


def _tie_defects(out: DieValues, job: DieReadJob, ties: np.ndarray) -> None:
    """Every strap of a used tile needs exactly one tie via to its net: without it the strap
    floats and every digit on it is undefined; with two the strap is tied twice (a cut
    between them would go unseen). ``ties``: [used tile, site row, line]."""
    tile = job.base.weight_tile
    for k in np.flatnonzero((ties != 1).any(axis=(1, 2))).tolist():
        slot, segment = job.assignments[k]
        for line in range(ties.shape[2]):
            counts, strap = ties[k, :, line], _strap_name(tile, line)
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
        element, digit = divmod(site, segment.sites_per_element)
        bit = digit * segment.digit_bits   # the digit's lowest bit (the bit itself for d = 1)
        r, c = divmod(element, width)
        inside = element < segment.elements
        out.defects.append(Defect(
            kind, out.die, (slot.column, slot.row), segment.tensor, segment.kind,
            (segment.rows[0] + r, segment.cols[0] + c) if inside else None,
            bit if inside else None))
