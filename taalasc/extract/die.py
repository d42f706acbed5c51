"""One die of an extraction, as a self-contained work unit (runs in a worker process).

``extract_die`` reads one mask file and decodes every tile of the die at once: each via
centre gives its tile from the grid, its site from the site pitch and its digit from the line
it sits on (formats/readback.SiteDecoder; a chunk cell placed on a byte of 8 sites is
decoded once per cell and placed as bytes, not via by via). Whether each (tile, site, line)
has a via then gives every site's digit, opens (no via where the encoding needs one) and
shorts (vias on two lines) for the whole die. Zero-skip stores a 0 as no via, so an open
there reads as a 0: each tile's via count is checked against the count the compile drew (the
manifest's ``tile_vias``), which finds a missing or added via in a tile, and verify's codes
check then names the element. Both formats are read by our own readers (formats/gdsread.py,
formats/oasparse.py) and decoded in batches, so memory is one die's site lines (one byte
each), not its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray
from taalasc.formats.readback import SiteDecoder, site_lines, site_opens

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
    tile = base.weight_tile
    decoder = SiteDecoder(base, job.assignments)
    decoder.read(Path(job.path))
    out.vias_read = decoder.vias
    present, tile_vias = decoder.presence(per_tile=job.tile_vias is not None)
    digits, lines = site_lines(present, tile)
    del present
    used_sites = np.array([seg.used_sites for _, seg in job.assignments], np.int64)
    # A used site needs its via on one line (zero-skip: at most one, no via being a 0); an
    # unused one none; a digit beyond the segment's digit width (a ternary constant on the
    # -x line) is a defect too. Tiles with a defect are found in one pass over the die, at
    # two byte operations a site; only those are looked at one by one.
    good = lines <= 1 if -1 in tile.line_of_value else lines == 1
    limit = np.array([1 << seg.digit_bits for _, seg in job.assignments], np.uint16)
    top_digit = max(v for v, line in enumerate(tile.line_of_value) if line >= 0)
    wide = None
    if len(limit) and top_digit >= limit.min():
        wide = digits >= limit[:, None]
        good &= ~wide
    bad = ~good.all(axis=1)
    for k in np.flatnonzero(used_sites < tile.sites).tolist():
        u = int(used_sites[k])
        bad[k] = not (good[k, :u].all() and not lines[k, u:].any())
    for k in np.flatnonzero(bad).tolist():
        slot, segment = job.assignments[k]
        under = np.arange(tile.sites) < used_sites[k]
        row = lines[k]
        _defects(out, "open", slot, segment, np.flatnonzero(under & site_opens(row, tile)))
        _defects(out, "short", slot, segment, np.flatnonzero(under & (row > 1)))
        if wide is not None:
            _defects(out, "bad-digit", slot, segment, np.flatnonzero(under & wide[k]))
        _defects(out, "extra-via", slot, segment, np.flatnonzero(~under & (row > 0)))
    if wide is not None:
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
