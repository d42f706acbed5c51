"""What the extraction says about each bit site, compared with the via-position decoder.

Two independent readers of the same die: ``taalasc.formats.readback.SiteDecoder`` reads each
site's bit from *where* its via sits (high or low strap), the extraction (lvs.py) from
*which rail* the site's gate input is connected to. A used site passes when both give the
same bit and the gate input reaches exactly one rail; an unused site must reach none.
Disagreements are grouped by strap where the strap explains them (a strap that floats, is
cut, or reaches the other rail), else reported per site; each names the die, tile, tensor
and element (or strap), with a box for the marker database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.custom.geometry import landing_rects, strap_rects
from taalasc.signoff.lvs import Connectivity

# Finding kinds: what they mean (the marker database's category descriptions).
KINDS = {
    "open": "used site without a via: its gate input floats",
    "two-vias": "used site with vias on both straps: its gate input joins both rails",
    "floating": "via present, but the gate input reaches no rail (the via lands on no "
                "landing, or its piece of strap reaches no tie)",
    "strap-floats": "strap reaching no rail: its tie via is missing (or the strap is cut "
                    "next to it); every gate input on it floats",
    "strap-cut": "strap cut in two: the gate inputs on the piece away from the tie via float",
    "strap-short": "strap joined to the other rail: its gate inputs reach VPWR and VGND",
    "wrong-rail": "strap reaching only the other rail: its sites read the opposite bit",
    "unused-tied": "unused site whose gate input reaches a rail (a via where none belongs)",
    "rails-shorted": "VPWR and VGND are one net in the merged die",
    "pad-unlabelled": "tie pad whose net carries none of the die's rail labels (it reaches "
                      "no supply of the base die)",
    "route-via-on-nothing": "custom via outside the used tiles (a route via) touching no "
                            "metal below",
    "decoder": "the via-position decoder refused the die",
}


@dataclass(frozen=True)
class Finding:
    kind: str
    die: int
    where: str                           # tile, tensor and element or strap
    count: int                           # gate inputs (or pads, vias) affected
    box: tuple[int, int, int, int] | None  # die nm, for the marker database

    def describe(self) -> str:
        n = f" ({self.count} {_UNITS.get(self.kind, 'sites')})" if self.count > 1 else ""
        return f"{self.kind}: die {self.die} {self.where}{n}"


_UNITS = {"rails-shorted": "tie pads", "pad-unlabelled": "tie pads",
          "route-via-on-nothing": "vias"}


def via_counts(path: Path, base: BaseArray, assignments) -> tuple[np.ndarray, np.ndarray]:
    """(vias on the high strap, on the low strap) per [used tile, site] of one die file,
    from the via positions (the decoder ``taalasc extract`` and ``verify`` use)."""
    from taalasc.formats.readback import SiteDecoder

    decoder = SiteDecoder(base, assignments)
    decoder.read(Path(path))
    counts = decoder.counts()   # [tile, site, line]: tie-high-low's line 0 is the high strap
    return counts[..., 0], counts[..., 1]


def compare(die: int, conn: Connectivity, counts: tuple[np.ndarray, np.ndarray] | None,
            assignments, base: BaseArray) -> list[Finding]:
    """Findings for every used tile of one die. ``counts``: the decoder's (high, low) via
    counts per site, or None when it refused the die (then only connectivity is judged)."""
    tile = base.weight_tile
    sx = tile.sites_x
    v, g = conn.vpwr, conn.vgnd
    c1, c0 = (v > 0) & (g == 0), (g > 0) & (v == 0)
    floating, both = (v == 0) & (g == 0), (v > 0) & (g > 0)
    out: list[Finding] = []
    site_box, strap_box = _boxes(base)
    for k, (slot, segment) in enumerate(assignments):
        origin = np.tile(np.array(base.tile_grid.tile_origin_nm(slot.column, slot.row)), 2)
        used = np.arange(tile.sites) < segment.used_sites
        name = _Namer(die, slot, segment, origin, site_box, sx)
        out += name.sites("unused-tied", ~used & ~floating[k])
        if counts is None:
            out += name.sites("floating", used & floating[k])
            out += name.sites("two-vias", used & both[k])
            continue
        high, low = counts[0][k] > 0, counts[1][k] > 0
        out += name.sites("open", used & ~high & ~low)
        out += name.sites("two-vias", used & high & low)
        for bit, on in ((1, used & high & ~low), (0, used & low & ~high)):
            right, wrong = (c1, c0) if bit else (c0, c1)
            for j in np.flatnonzero((on & ~right[k]).reshape(-1, sx).any(axis=1)).tolist():
                row = slice(j * sx, (j + 1) * sx)
                strap = f"{'high' if bit else 'low'} strap of site row {j}"
                box = tuple((strap_box[2 * j + (0 if bit else 1)] + origin).tolist())
                cols = np.flatnonzero(on[row])
                bad_float = np.flatnonzero(on[row] & floating[k][row])
                if len(bad_float) == len(cols):
                    out.append(name.strap("strap-floats", strap, j, cols, box))
                elif len(bad_float) and bad_float.max() < (
                        first_tied := np.setdiff1d(cols, bad_float).min()):
                    out.append(name.strap("strap-cut", f"{strap}, cut between its vias in "
                                          f"columns {bad_float.max()} and {first_tied}",
                                          j, bad_float, box))
                else:
                    alone = np.zeros(tile.sites, bool)
                    alone[j * sx + bad_float] = True
                    out += name.sites("floating", alone)
                for kind, bad in (("strap-short", both[k]), ("wrong-rail", wrong[k])):
                    hit = np.flatnonzero(on[row] & bad[row])
                    if len(hit):
                        out.append(name.strap(kind, strap, j, hit, box))
    return out


def rail_findings(die: int, conn: Connectivity, assignments, base: BaseArray) -> list[Finding]:
    """On a merged die with the rails connected: the tie pads must reach two different
    supply nets, each labelled when the die has labels."""
    out: list[Finding] = []
    shorted = (conn.pad_vpwr > 0) & (conn.pad_vgnd > 0)
    if shorted.any():
        slot = assignments[int(np.argwhere(shorted)[0, 0])][0]
        out.append(Finding("rails-shorted", die, f"tile ({slot.column}, {slot.row}) and every "
                           "tie pad on the same net", int(shorted.sum()), None))
    if conn.labels:
        unlabelled = np.argwhere(conn.pad_names == "")
        for k, p in unlabelled[:_MAX_LISTED].tolist():
            slot = assignments[k][0]
            out.append(Finding("pad-unlabelled", die, f"tile ({slot.column}, {slot.row}) "
                               f"{'VPWR' if p % 2 == 0 else 'VGND'} tie pad of site row "
                               f"{p // 2}", 1, None))
        if len(unlabelled) > _MAX_LISTED:
            out.append(Finding("pad-unlabelled", die, "more tie pads",
                               len(unlabelled) - _MAX_LISTED, None))
    return out


def via_findings(die: int, conn: Connectivity) -> list[Finding]:
    """Vias on nothing outside the used tiles (route vias on a merged die); those inside
    show as floating sites or straps."""
    return [Finding("route-via-on-nothing", die, f"via at ({b[0]}, {b[1]}) nm", 1, tuple(b))
            for b in conn.vias_on_nothing[conn.outside_tiles].tolist()]


_MAX_LISTED = 1000   # per kind and die; counts stay exact in the metrics


def _boxes(base: BaseArray) -> tuple[np.ndarray, np.ndarray]:
    """Tile-relative marker boxes: every site's landing, every strap."""
    pdk, tile = base.pdk, base.weight_tile
    r = pdk.rules
    return (landing_rects(tile, r.via_size_nm, r.via_enclosure_below_nm, pdk.grid_nm),
            strap_rects(tile, pdk.grid_nm))


class _Namer:
    """Findings of one used tile, named by tensor and element."""

    def __init__(self, die, slot, segment, origin, site_box, sites_x):
        self.die, self.slot, self.segment, self.sites_x = die, slot, segment, sites_x
        self.origin, self.site_box = origin, site_box
        self.tile = f"tile ({slot.column}, {slot.row}) {segment.tensor} {segment.kind}"

    def element(self, site: int) -> str:
        seg = self.segment
        element, bit = divmod(site, seg.bits)
        if element >= seg.elements:
            return f"unused site {site}"
        r, c = divmod(element, seg.cols[1] - seg.cols[0])
        return f"[{seg.rows[0] + r}, {seg.cols[0] + c}] bit {bit}"

    def sites(self, kind: str, mask: np.ndarray) -> list[Finding]:
        hit = np.flatnonzero(mask)
        return [Finding(kind, self.die, f"{self.tile} {self.element(s)}", 1,
                        tuple((self.site_box[s] + self.origin).tolist()))
                for s in hit[:_MAX_LISTED].tolist()] + \
            ([Finding(kind, self.die, f"{self.tile}: {len(hit) - _MAX_LISTED} more sites",
                      len(hit) - _MAX_LISTED, None)] if len(hit) > _MAX_LISTED else [])

    def strap(self, kind: str, strap: str, row: int, columns: np.ndarray, box) -> Finding:
        first = self.element(row * self.sites_x + int(columns[0]))
        return Finding(kind, self.die, f"{self.tile}: {strap} (first {first})",
                       len(columns), box)
