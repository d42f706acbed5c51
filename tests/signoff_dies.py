"""Dies for the sign-off tests: a merged die drawn here (the base die's landings, tie pads,
rail vias and labelled rails under a compile's custom layers) and edited copies of a die
(a strap cut, a short, a via or a landing removed).

The base drawn here follows taalasc.custom.geometry, the contract the base die builder
(issue 14) implements: per used tile, a met4 landing under both slots of every site and a
met4 tie pad under every tie via; per pad a via3 down to one of two met3 rails under the tie
column, VPWR under the high straps' pads and VGND under the low ones, labelled on 70/5; a
met4 pad under every route via. sky130 layers (google/skywater-pdk gds_layers.csv).
"""

from __future__ import annotations

from pathlib import Path

import klayout.db as kdb
import numpy as np

from taalasc.custom.geometry import landing_rects, tie_pad_rects
from taalasc.extract.extract import base_of, read_manifest
from taalasc.place.store import read_placement

MET3, VIA3, MET4, VIA4, MET5 = (70, 20), (70, 44), (71, 20), (71, 44), (72, 20)
MET3_LABEL = (70, 5)
RAIL_NM, VIA3_NM = 400, 200   # sky130 m3.1 0.3, via3.1 0.2, via3.5 met3 enclosure 0.09


def used_tiles(compile_dir: Path, die: int = 0):
    manifest = read_manifest(compile_dir)
    base = base_of(manifest, compile_dir)
    return base, list(read_placement(compile_dir, manifest).on_die(die))


def merge(compile_dir: Path, out_dir: Path, die: int = 0, *, drop_landing=None) -> Path:
    """``out_dir/die{die}.gds``: the compile's die over a base drawn here. ``drop_landing``
    (tile index, site) leaves one landing out (the via above it lands on nothing)."""
    base, assignments = used_tiles(compile_dir, die)
    tile, rules, g = base.weight_tile, base.pdk.rules, base.pdk.grid_nm
    ly = kdb.Layout()
    ly.read(str(Path(compile_dir) / f"die{die}.gds"))
    custom = ly.top_cell()
    layer = {k: ly.layer(*v) for k, v in dict(met3=MET3, via3=VIA3, met4=MET4,
                                              label=MET3_LABEL).items()}
    landings = landing_rects(tile, rules.via_size_nm, rules.via_enclosure_below_nm, g)
    pads = tie_pad_rects(tile, rules.via_size_nm, rules.via_enclosure_below_nm, g)
    cell = ly.create_cell("TEST_BASE_TILE")
    for r in np.concatenate([landings, pads]).tolist():
        cell.shapes(layer["met4"]).insert(kdb.Box(*r))
    x0, x1 = int(pads[0, 0]), int(pads[0, 2])
    rails = {"VPWR": (x0, x0 + RAIL_NM), "VGND": (x1 - RAIL_NM, x1)}
    for k, r in enumerate(pads.tolist()):
        a, b = rails["VPWR" if k % 2 == 0 else "VGND"]
        cx, cy = (a + b) // 2, (r[1] + r[3]) // 2 // g * g
        h = VIA3_NM // 2
        cell.shapes(layer["via3"]).insert(kdb.Box(cx - h, cy - h, cx + h, cy + h))
    for name, (a, b) in rails.items():
        cell.shapes(layer["met3"]).insert(kdb.Box(a, 0, b, tile.height_nm))
        cell.shapes(layer["label"]).insert(kdb.Text(name, kdb.Trans((a + b) // 2, 100)))
    top = ly.create_cell("TEST_MERGED")
    top.insert(kdb.CellInstArray(custom.cell_index(), kdb.Trans()))
    base_cell = ly.create_cell("TEST_BASE")
    top.insert(kdb.CellInstArray(base_cell.cell_index(), kdb.Trans()))
    for k, (slot, _) in enumerate(assignments):
        x, y = base.tile_grid.tile_origin_nm(slot.column, slot.row)
        if drop_landing is not None and drop_landing[0] == k:
            # this tile's own copy, one landing short
            own = ly.cell(ly.add_cell("TEST_BASE_TILE_SHORT"))
            own.copy_shapes(cell)
            gone = kdb.Box(*landings[drop_landing[1]].tolist())
            for shape in list(own.shapes(layer["met4"]).each_overlapping(gone)):
                if shape.box == gone:
                    own.shapes(layer["met4"]).erase(shape)
            base_cell.insert(kdb.CellInstArray(own.cell_index(), kdb.Trans(x, y)))
        else:
            base_cell.insert(kdb.CellInstArray(cell.cell_index(), kdb.Trans(x, y)))
    # a met4 pad under every via outside the used tiles (the route vias)
    vias = kdb.Region(custom.begin_shapes_rec(ly.layer(*VIA4)))
    tiles = kdb.Region()
    for slot, _ in assignments:
        x, y = base.tile_grid.tile_origin_nm(slot.column, slot.row)
        tiles.insert(kdb.Box(x, y, x + tile.width_nm, y + tile.height_nm))
    e = rules.via_enclosure_below_nm
    for via in vias.not_interacting(tiles).each():
        base_cell.shapes(layer["met4"]).insert(via.bbox().enlarged(e, e))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"die{die}.gds"
    ly.write(str(path))
    return path


def edit_die(src: Path, dst: Path, *, cut=(), add=(), remove=()) -> Path:
    """A copy of a die, flattened where it holds an edited layer: ``cut`` (layer, box)
    clears a box of a layer, ``add`` (layer, box) draws one, ``remove`` (layer, box)
    deletes the shapes inside the box."""
    ly = kdb.Layout()
    ly.read(str(src))
    top = ly.top_cell()
    edited = [ly.layer(*lay) for lay, _ in (*cut, *add, *remove)]
    for inst in list(top.each_inst()):   # fill and the like stay arrays
        if any(not inst.cell.bbox(layer).empty() for layer in edited):
            inst.flatten(-1)
    for index in [i for i in ly.each_top_cell() if i != top.cell_index()]:
        ly.prune_cell(index, -1)         # the cells flattened away
    for lay, box in cut:
        index = ly.layer(*lay)
        region = kdb.Region(top.shapes(index)) - kdb.Region(kdb.Box(*box))
        top.shapes(index).clear()
        top.shapes(index).insert(region)
    for lay, box in remove:
        shapes = top.shapes(ly.layer(*lay))
        for shape in list(shapes.each_touching(kdb.Box(*box))):
            if kdb.Box(*box).contains(shape.bbox().center()):
                shapes.erase(shape)
    for lay, box in add:
        top.shapes(ly.layer(*lay)).insert(kdb.Box(*box))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    ly.write(str(dst))
    return Path(dst)


def shared_decks() -> Path | None:
    """The PDK deck copies the tests run (``$TAALASC_PDK_DECKS``, else ../shared/pdk-decks
    beside the repository; see that folder's SOURCES.md), or None."""
    import os

    given = os.environ.get("TAALASC_PDK_DECKS")
    folder = Path(given) if given else Path(__file__).resolve().parents[2] / "shared" / "pdk-decks"
    return folder if (folder / "sky130" / "sky130A_mr.drc").is_file() else None
