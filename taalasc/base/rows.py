"""Standard-cell rows: where each bit site's gate sits, and what fills the rest of a row.

Positions are in placement sites (sky130_fd_sc_hd: 0.46 um) from the row's left end; a row is
filled end to end (abutted cells keep the wells and the follow-pin rails continuous), with a
tap cell at least every ``tap_pitch_sites`` sites.
"""

from __future__ import annotations

from taalasc.base.recipe import CellLibrary
from taalasc.errors import MaskError

Placed = tuple[int, str]   # (site, cell name)


def place_gates(windows_nm: list[tuple[int, int]], pin_x_nm: int, gate_sites: int,
                site_nm: int, row_sites: int) -> list[int]:
    """The leftmost legal site of each gate, left to right: gate k's pin (``pin_x_nm`` from
    its cell origin) must fall inside ``windows_nm[k]``, and gates may not overlap."""
    sites, free = [], 0
    for k, (lo, hi) in enumerate(windows_nm):
        site = max(free, -(-(lo - pin_x_nm) // site_nm))
        if site * site_nm + pin_x_nm > hi or site + gate_sites > row_sites:
            raise MaskError(f"bit site column {k}: no place for its gate in the cell row (pin "
                            f"window {lo}..{hi} nm, {site_nm} nm sites); the site pitch is too "
                            "small for the gate")
        sites.append(site)
        free = site + gate_sites
    return sites


def fill(start: int, end: int, lib: CellLibrary, widths: dict[str, int]) -> list[Placed]:
    """Fill sites [start, end): a tap every ``tap_pitch_sites`` sites, fillers in between."""
    out: list[Placed] = []
    site = start
    while site < end:
        segment = min(end, site + lib.tap_pitch_sites)
        out.append((site, lib.tap))
        site += widths[lib.tap]
        for name in lib.fillers:
            while site + widths[name] <= segment:
                out.append((site, name))
                site += widths[name]
    return out


def row_cells(gate_sites: list[int], lib: CellLibrary, widths: dict[str, int],
              row_sites: int) -> tuple[Placed, ...]:
    """A whole row: the gates at ``gate_sites``, the gaps and both ends filled."""
    out: list[Placed] = []
    free = 0
    for site in gate_sites:
        out += fill(free, site, lib, widths)
        out.append((site, lib.gate))
        free = site + widths[lib.gate]
    out += fill(free, row_sites, lib, widths)
    taps = [s for s, name in out if name == lib.tap] + [row_sites]
    gaps = [b - a for a, b in zip([0] + taps, taps)]
    if max(gaps) > lib.tap_pitch_sites + widths[lib.gate]:
        raise MaskError(f"a cell row has {max(gaps)} sites between tap cells; the gates leave "
                        f"no gap for a tap within {lib.tap_pitch_sites} sites")
    return tuple(out)
