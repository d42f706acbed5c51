"""Tampered compile folders for `taalasc verify` (issue 13): a folder that does not hold
exactly the compiled model must fail verify.

``build_genuine(root)`` compiles a tiny synthetic Llama (hidden 64, 3 layers, vocabulary 64:
271 tiles, so it spills onto two dies of the built-in sky130-demo base) into GDSII and OASIS,
and the same shapes with another seed: the "foreign" compile whose valid files are planted.

``CASES`` lists every attack as a ``Case``: a name ``class/attack/variant``, the mask format
verify is asked to read, and ``mutate(folder, genuine)``, which edits a copy of the genuine
folder in place. Cases are made from fixed seeds without the compile (pytest names them at
collection time); a case's random choices come from a seed derived from its name, so every
run makes the same bytes. Geometry is edited with gdstk (the file-format library, not
taalasc's writer); files and the manifest with plain byte and JSON edits.

The genuine die file, as drawn by taalasc (every cell name but a chunk cell's after the die's
prefix T<hash>_D<n>_, taalasc/custom/names.py): the top cell DIE holds the route vias and route
wires, one reference per used tile to a tile cell T<hash> (same content, same cell) and one
to FILL; a tile cell references STRAPS (the tile's straps) and, per eight bit sites, a chunk
cell V8<xx><tag>: eight vias that spell the byte xx (tag: the base array's via geometry, no
prefix). FILL holds fill bars and arrays of FILLSQ.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gdstk
import numpy as np

from corpus.masks import FIXED_TIME
from taalasc.compile import CompileOptions, _dumps, compile_model
from taalasc.config import BaseArray, load_base_array
from taalasc.custom.names import PREFIX, TILE, chunk_name, local_name, parse_chunk
from taalasc.model.synth import llama_config, write_llama
from taalasc.outdir import MANIFEST, sha256_file
from taalasc.place.store import PLACEMENT_FILE

CLASSES = ("metal", "via", "hierarchy", "files", "manifest")


@dataclass(frozen=True)
class Genuine:
    model: Path
    folder: Path          # the genuine compile: verify passes it
    foreign: Path         # a compile of the same shapes with other weights (seed 1)
    base: BaseArray
    snapshot: dict        # snapshot(folder), to prove that every case changes something

    @property
    def via_layer(self) -> tuple[int, int]:
        via = self.base.pdk.layers.via
        return via.gds_layer, via.gds_datatype

    @property
    def metal_layer(self) -> tuple[int, int]:
        metal = self.base.pdk.layers.top_metal
        return metal.gds_layer, metal.gds_datatype

    @property
    def grid_nm(self) -> int:
        return self.base.pdk.grid_nm


@dataclass(frozen=True)
class Case:
    name: str                                  # class/attack/variant
    fmt: str                                   # the mask format verify reads
    mutate: Callable[[Path, Genuine], None]

    @property
    def klass(self) -> str:
        return self.name.split("/")[0]


def build_genuine(root: Path) -> Genuine:
    config = llama_config(hidden=64, layers=3, intermediate=128, vocab=64)
    model = write_llama(root / "model", config)
    foreign_model = write_llama(root / "foreign-model", config, seed=1)
    folder, foreign = root / "masks", root / "foreign"
    compile_model(model, folder, CompileOptions())
    compile_model(foreign_model, foreign, CompileOptions())
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["placement"]["dies"] == 2, "the tamper corpus needs a two-die compile"
    return Genuine(model, folder, foreign, load_base_array(CompileOptions().base),
                   snapshot(folder))


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (relative path) -> ('link', target) / ('dir',) /
    ('file', sha256): equal snapshots mean the same names, kinds and bytes."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = ("link", os.readlink(path))
        elif path.is_dir():
            out[key] = ("dir",)
        else:
            out[key] = ("file", sha256_file(path))
    return out


def tampered(genuine: Genuine, case: Case, dest: Path) -> Path:
    """A copy of the genuine folder in ``dest``, with the case applied."""
    folder = Path(dest) / "masks"
    shutil.copytree(genuine.folder, folder)
    case.mutate(folder, genuine)
    return folder


# --- small tools ----------------------------------------------------------------------------

def _seed(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _chain(*steps: Callable[[Path, Genuine], None]) -> Callable[[Path, Genuine], None]:
    def mutate(folder: Path, g: Genuine) -> None:
        for step in steps:
            step(folder, g)
    return mutate


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    """In the compile's own JSON style, so that only the edited values differ."""
    (folder / MANIFEST).write_text(_dumps(manifest) + "\n")


def _edit_manifest(edit: Callable[[dict, Genuine], None]) -> Callable[[Path, Genuine], None]:
    def mutate(folder: Path, g: Genuine) -> None:
        manifest = _manifest(folder)
        edit(manifest, g)
        _write_manifest(folder, manifest)
    return mutate


def _output_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _reseal(*names: str) -> Callable[[Path, Genuine], None]:
    """What a careful forger does next: the manifest's size and sha256 of the edited files."""
    def mutate(folder: Path, g: Genuine) -> None:
        manifest = _manifest(folder)
        for name in names:
            manifest["outputs"][name] = _output_entry(folder / name)
        _write_manifest(folder, manifest)
    return mutate


def _read_lib(path: Path) -> gdstk.Library:
    """The library of a mask file; OASIS repetitions of polygons (a chunk's vias may be one
    repeated square) are expanded, so that an edit touches one shape as in GDSII."""
    if path.suffix == ".gds":
        return gdstk.read_gds(str(path), unit=1e-9)
    lib = gdstk.read_oas(str(path), unit=1e-9)   # coordinates in nm, as taalasc draws them
    for cell in lib.cells:
        for poly in [p for p in cell.polygons if p.repetition.size > 1]:
            cell.add(*poly.apply_repetition())
    return lib


def _write_lib(lib: gdstk.Library, path: Path) -> None:
    if path.suffix == ".gds":
        lib.write_gds(str(path), timestamp=FIXED_TIME)
    else:
        lib.write_oas(str(path))


def _cell(lib: gdstk.Library, name: str) -> gdstk.Cell:
    """The cell of this local name (the name after the die's prefix)."""
    return next(c for c in lib.cells if local_name(c.name) == name)


def _cells(lib: gdstk.Library, start: str) -> list[gdstk.Cell]:
    """Cells whose local name starts with ``start``, by name."""
    return sorted((c for c in lib.cells if local_name(c.name).startswith(start)),
                  key=lambda c: c.name)


def _die_top(lib: gdstk.Library) -> gdstk.Cell:
    return _cell(lib, "DIE")


def _bbox(poly) -> tuple[int, int, int, int]:
    (x0, y0), (x1, y1) = poly.bounding_box()
    return round(x0), round(y0), round(x1), round(y1)


def _rect(x0, y0, x1, y1, layer: tuple[int, int]) -> gdstk.Polygon:
    return gdstk.rectangle((x0, y0), (x1, y1), layer=layer[0], datatype=layer[1])


def _via_at(g: Genuine, cx: int, cy: int) -> gdstk.Polygon:
    half = g.base.pdk.rules.via_size_nm // 2
    return _rect(cx - half, cy - half, cx + half, cy + half, g.via_layer)


def _nm(g: Genuine, step: int | str) -> int:
    """A distance in nm; "grid" is one manufacturing grid step of the PDK."""
    return g.grid_nm if step == "grid" else step


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _replace_ref(cell: gdstk.Cell, ref: gdstk.Reference, target: gdstk.Cell) -> None:
    cell.remove(ref)
    cell.add(gdstk.Reference(target, ref.origin))


def _tile_cells(lib: gdstk.Library) -> list[gdstk.Cell]:
    return sorted((c for c in lib.cells if TILE.match(c.name)), key=lambda c: c.name)


def _tile_refs(top: gdstk.Cell) -> list[gdstk.Reference]:
    return [r for r in top.references if TILE.match(r.cell_name)]


def _drop_orphans(lib: gdstk.Library) -> None:
    """Remove cells nothing references any more (besides the die's top cell)."""
    while True:
        used = {r.cell.name for c in lib.cells for r in c.references}
        orphans = [c for c in lib.cells if c.name not in used and local_name(c.name) != "DIE"]
        if not orphans:
            return
        for cell in orphans:
            lib.remove(cell)


# --- geometry: every edit is applied to one die file -------------------------------------

Op = Callable[[gdstk.Library, gdstk.Cell, Genuine, int, np.random.Generator], None]

# (die, format edited, format verify reads). Each op runs on one pair, alternating, so that
# every op edits a GDSII and an OASIS file and each die is edited; "read gds" edits only the
# OASIS file and asks verify to read GDSII, the files it did not touch.
VARIANT_PAIRS = (((0, "gds", "gds"), (1, "oas", "oas")),
                 ((1, "gds", "gds"), (0, "oas", "gds")))


def _edit_die(die: int, fmt: str, op: Op, seed_name: str) -> Callable[[Path, Genuine], None]:
    def mutate(folder: Path, g: Genuine) -> None:
        path = folder / f"die{die}.{fmt}"
        lib = _read_lib(path)
        op(lib, _die_top(lib), g, die, _seed(seed_name))
        _write_lib(lib, path)
    return mutate


def _geometry_cases(klass: str, ops: list[tuple[str, Op]], variants=None,
                    then: Callable[[int], Callable] | None = None) -> list[Case]:
    """Every op on its variants (default: a pair of VARIANT_PAIRS, alternating); ``then(die)``
    is a step after the die edit (a manifest edit)."""
    cases = []
    for k, (attack, op) in enumerate(ops):
        for die, edited, read in variants or VARIANT_PAIRS[k % 2]:
            name = f"{klass}/{attack}/die{die}.{edited}" + ("" if edited == read
                                                             else f"-read-{read}")
            steps = [_edit_die(die, edited, op, name)] + ([then(die)] if then else [])
            cases.append(Case(name, read, _chain(*steps)))
    return cases


# top metal

def _straps(lib) -> gdstk.Cell:
    return _cell(lib, "STRAPS")


def delete_all_straps(lib, top, g, die, rng):
    straps = _straps(lib)
    straps.remove(*straps.polygons)


def delete_one_strap(lib, top, g, die, rng):
    straps = _straps(lib)
    straps.remove(_pick(rng, straps.polygons))


def half_a_strap(lib, top, g, die, rng):
    straps = _straps(lib)
    strap = _pick(rng, straps.polygons)
    x0, y0, x1, y1 = _bbox(strap)
    middle = (x0 + x1) // 2 // g.grid_nm * g.grid_nm
    straps.remove(strap)
    straps.add(_rect(x0, y0, middle, y1, g.metal_layer))


def short_two_straps(lib, top, g, die, rng):
    """One top-level rectangle over the gap between two neighbouring straps of a used tile."""
    rows = sorted((_bbox(p) for p in _straps(lib).polygons), key=lambda b: b[1])
    k = int(rng.integers(len(rows) - 1))
    lower, upper = rows[k], rows[k + 1]
    ox, oy = (round(v) for v in _pick(rng, _tile_refs(top)).origin)
    x0 = ox + lower[0] + 4 * g.base.pdk.rules.top_metal_width_nm
    top.add(_rect(x0, oy + lower[1], x0 + g.base.pdk.rules.top_metal_width_nm,
                  oy + upper[3], g.metal_layer))


def move_strap(dy: int | str) -> Op:
    def op(lib, top, g, die, rng):
        _pick(rng, _straps(lib).polygons).translate(0, _nm(g, dy))
    return op


def add_metal_rect(lib, top, g, die, rng):
    die_box, size = g.base.die, 2000
    x = int(rng.integers(0, (die_box.width_nm - size) // g.grid_nm)) * g.grid_nm
    y = int(rng.integers(0, (die_box.height_nm - size) // g.grid_nm)) * g.grid_nm
    top.add(_rect(x, y, x + size, y + size, g.metal_layer))


def _fill_square_refs(lib) -> list[gdstk.Reference]:
    return [r for r in _cell(lib, "FILL").references if local_name(r.cell_name) == "FILLSQ"]


def delete_fill_squares(lib, top, g, die, rng):
    _cell(lib, "FILL").remove(_pick(rng, _fill_square_refs(lib)))


def delete_fill_bar(lib, top, g, die, rng):
    fill = _cell(lib, "FILL")
    fill.remove(_pick(rng, fill.polygons))


def move_fill_squares(lib, top, g, die, rng):
    ref = _pick(rng, _fill_square_refs(lib))
    x, y = ref.origin
    ref.origin = (x + g.grid_nm, y)


def add_fill_square(lib, top, g, die, rng):
    """One more fill square, one fill pitch below an array of them."""
    ref = _pick(rng, _fill_square_refs(lib))
    x, y = ref.origin
    top.add(gdstk.Reference(_cell(lib, "FILLSQ"), (x, y - ref.repetition.spacing[1])))


def strap_datatype(lib, top, g, die, rng):
    for p in _straps(lib).polygons:
        p.datatype = 0


METAL_OPS: list[tuple[str, Op]] = [
    ("delete-every-strap", delete_all_straps),
    ("delete-one-strap", delete_one_strap),
    ("half-a-strap", half_a_strap),
    ("short-two-straps", short_two_straps),
    ("move-strap-1-grid", move_strap("grid")),
    ("move-strap-1nm", move_strap(1)),
    ("add-metal-rect", add_metal_rect),
    ("delete-fill-square-array", delete_fill_squares),
    ("delete-fill-bar", delete_fill_bar),
    ("move-fill-squares-1-grid", move_fill_squares),
    ("add-fill-square", add_fill_square),
    ("strap-datatype-0", strap_datatype),
]


# vias

def _chunks(lib) -> list[gdstk.Cell]:
    """The chunk cells of 8 sites, by name."""
    return sorted((c for c in lib.cells if (parse_chunk(c.name) or (0,))[0] == 8),
                  key=lambda c: c.name)


def _is_chunk(name: str) -> bool:
    return parse_chunk(name) is not None


def _route_vias(top, g) -> list[gdstk.Polygon]:
    return [p for p in top.polygons if (p.layer, p.datatype) == g.via_layer]


def _local_straps(g) -> tuple[int, int]:
    """Centre y of the high and low strap of site row 0, tile-relative (= chunk-relative)."""
    tile = g.base.weight_tile
    return tile.strap_y_nm(0, True), tile.strap_y_nm(0, False)


def _other_strap(g, poly) -> int:
    """dy that moves a via of a chunk to the other strap of its site."""
    high, low = _local_straps(g)
    x0, y0, x1, y1 = _bbox(poly)
    return (low - high) if abs((y0 + y1) // 2 - high) < abs((y0 + y1) // 2 - low) else (high - low)


def vias_to_one_point(lib, top, g, die, rng):
    vias = _route_vias(top, g)
    x, y, _, _ = _bbox(vias[0])
    for via in vias[1:]:
        x0, y0, _, _ = _bbox(via)
        via.translate(x - x0, y - y0)


def via_outside_tiles(lib, top, g, die, rng):
    """A via in the die margin, below and left of the tile grid."""
    gx, gy = g.base.tile_grid.origin_nm
    top.add(_via_at(g, gx // 2, gy // 2))


def via_in_unused_tile(lib, top, g, die, rng):
    """A via on a bit site of a tile the placement leaves empty (die 1 has such tiles)."""
    tile, grid = g.base.weight_tile, g.base.tile_grid
    used = {tuple(round(v) for v in r.origin) for r in _tile_refs(top)}
    free = [(c, r) for r in range(grid.rows) for c in range(grid.columns)
            if grid.tile_origin_nm(c, r) not in used]
    ox, oy = grid.tile_origin_nm(*_pick(rng, free))
    top.add(_via_at(g, ox + tile.slot_x_nm(3), oy + tile.strap_y_nm(5, True)))


def shift_bit_via(dx: int | str, dy: int | str) -> Op:
    """One via of a chunk moved a little: still over its own site and strap."""
    def op(lib, top, g, die, rng):
        _pick(rng, _pick(rng, _chunks(lib)).polygons).translate(_nm(g, dx), _nm(g, dy))
    return op


def resize_via(lib, top, g, die, rng):
    chunk = _pick(rng, _chunks(lib))
    via = _pick(rng, chunk.polygons)
    x0, y0, x1, y1 = _bbox(via)
    chunk.remove(via)
    chunk.add(_rect(x0 - g.grid_nm, y0 - g.grid_nm, x1 + g.grid_nm, y1 + g.grid_nm, g.via_layer))


def duplicate_via(lib, top, g, die, rng):
    chunk = _pick(rng, _chunks(lib))
    chunk.add(_pick(rng, chunk.polygons).copy())


def swap_bits_in_chunk(lib, top, g, die, rng):
    """Two vias of one chunk, one on each strap, each moved to the other strap."""
    high, _ = _local_straps(g)
    mixed = [c for c in _chunks(lib) if parse_chunk(c.name)[1] not in (0x00, 0xFF)]
    chunk = _pick(rng, mixed)
    on_high = [p for p in chunk.polygons if abs(sum(_bbox(p)[1::2]) // 2 - high) < 100]
    on_low = [p for p in chunk.polygons if p not in on_high]
    for via in (_pick(rng, on_high), _pick(rng, on_low)):
        via.translate(0, _other_strap(g, via))


def swap_chunks_in_tile(lib, top, g, die, rng):
    """Two chunk references of one tile cell exchange their chunks (values)."""
    tile = _pick(rng, _tile_cells(lib))
    refs = [r for r in tile.references if _is_chunk(r.cell_name)]
    a = _pick(rng, refs)
    b = _pick(rng, [r for r in refs if r.cell_name != a.cell_name])
    cell_a, cell_b = a.cell, b.cell
    _replace_ref(tile, a, cell_b)
    _replace_ref(tile, b, cell_a)


def delete_bit_via(lib, top, g, die, rng):
    chunk = _pick(rng, _chunks(lib))
    chunk.remove(_pick(rng, chunk.polygons))


def delete_route_via(lib, top, g, die, rng):
    top.remove(_pick(rng, _route_vias(top, g)))


VIA_OPS: list[tuple[str, Op]] = [
    ("route-vias-to-one-point", vias_to_one_point),
    ("add-via-outside-tiles", via_outside_tiles),
    ("shift-bit-via-1nm", shift_bit_via(1, 0)),
    ("shift-bit-via-1-grid", shift_bit_via(0, "grid")),
    ("resize-via", resize_via),
    ("duplicate-via", duplicate_via),
    ("swap-bits-in-chunk", swap_bits_in_chunk),
    ("swap-chunks-in-tile", swap_chunks_in_tile),
    ("delete-bit-via", delete_bit_via),
    ("delete-route-via", delete_route_via),
]


def _raise_via_counts(die: int) -> Callable[[Path, Genuine], None]:
    """The manifest made to expect the one added via (route_vias and via_count + 1)."""
    def edit(manifest, g):
        manifest["dies"][die]["route_vias"] += 1
        manifest["dies"][die]["via_count"] += 1
    return _edit_manifest(edit)


# hierarchy

def retarget_tile_ref(lib, top, g, die, rng):
    """Inside one T<hash> cell (same name), one chunk reference points to another chunk."""
    tile = _pick(rng, _tile_cells(lib))
    ref = _pick(rng, [r for r in tile.references if _is_chunk(r.cell_name)])
    _replace_ref(tile, ref, _pick(rng, [c for c in _chunks(lib) if c.name != ref.cell_name]))


def flip_bit_in_chunk(lib, top, g, die, rng):
    """Inside one V8<xx><tag> cell (same name), one via moves to the other strap."""
    via = _pick(rng, _pick(rng, _chunks(lib)).polygons)
    via.translate(0, _other_strap(g, via))


def rename(which: str, new: str) -> Op:
    """A cell whose local name starts with ``which`` (a tile cell: "T") renamed to the die's
    prefix + ``new``: a name the writer could have given."""
    def op(lib, top, g, die, rng):
        cells = [top] if which == "DIE" else _tile_cells(lib) if which == "T" \
            else _cells(lib, which)
        cell = _pick(rng, cells)
        cell.name = PREFIX.match(top.name).group() + new
    return op


def rename_chunk(lib, top, g, die, rng):
    """A chunk cell renamed to its name on another geometry (same n and pattern, another
    tag): a name the writer could have given on another base array."""
    cell = _pick(rng, _chunks(lib))
    n, value, _ = parse_chunk(cell.name)
    cell.name = chunk_name(n, value, "A" * 8)


def extra_top_cell(lib, top, g, die, rng):
    lib.new_cell("EXTRA")


def unused_cell_with_a_via(lib, top, g, die, rng):
    lib.new_cell("V8_zz").add(_via_at(g, 1200, 1600))


def add_label(lib, top, g, die, rng):
    top.add(gdstk.Label("tampered", (0, 0), layer=g.metal_layer[0], texttype=g.metal_layer[1]))


def relabel_strap(lib, top, g, die, rng):
    """One strap's net label names the other rail (VPWR <-> VGND): the same shapes, but LVS
    would name that strap's net wrong in every tile."""
    label = _pick(rng, _straps(lib).labels)
    label.text = {"VPWR": "VGND", "VGND": "VPWR"}[label.text]


def add_path(lib, top, g, die, rng):
    width = g.base.pdk.rules.top_metal_width_nm
    top.add(gdstk.FlexPath([(10000, 10000), (40000, 10000)], width, layer=g.metal_layer[0],
                           datatype=g.metal_layer[1], simple_path=True))  # a PATH record


def flatten_one_tile(lib, top, g, die, rng):
    """One tile reference replaced by a flat copy of its cell: the same shapes."""
    ref = _pick(rng, _tile_refs(top))
    flat = ref.cell.copy("T_FLAT", deep_copy=True).flatten()
    lib.add(flat)
    _replace_ref(top, ref, flat)
    _drop_orphans(lib)


def mirror_tile_ref(lib, top, g, die, rng):
    ref = _pick(rng, _tile_refs(top))
    ref.x_reflection = True


HIERARCHY_OPS: list[tuple[str, Op]] = [
    ("retarget-ref-in-tile-cell", retarget_tile_ref),
    ("flip-bit-in-chunk-cell", flip_bit_in_chunk),
    ("rename-tile-cell", rename("T", "T" + "0" * 16)),
    ("rename-chunk-cell", rename_chunk),
    ("rename-top-cell", rename("DIE", "TOP")),
    ("extra-top-cell", extra_top_cell),
    ("unused-cell-with-a-via", unused_cell_with_a_via),
    ("add-label", add_label),
    ("relabel-strap", relabel_strap),
    ("add-path", add_path),
    ("flatten-one-tile", flatten_one_tile),
    ("mirror-tile-ref", mirror_tile_ref),
]


# --- files ------------------------------------------------------------------------------------

def _replace_with(name: str, source: Callable[[Path, Genuine], Path]):
    def mutate(folder: Path, g: Genuine) -> None:
        data = source(folder, g).read_bytes()
        (folder / name).unlink()
        (folder / name).write_bytes(data)
    return mutate


def _swap(a: str, b: str):
    def mutate(folder: Path, g: Genuine) -> None:
        data_a, data_b = (folder / a).read_bytes(), (folder / b).read_bytes()
        (folder / a).write_bytes(data_b)
        (folder / b).write_bytes(data_a)
    return mutate


def _truncate(name: str, keep: float | int):
    """Keep a fraction of the file, or drop ``-keep`` bytes from its end."""
    def mutate(folder: Path, g: Genuine) -> None:
        data = (folder / name).read_bytes()
        size = len(data) + keep if isinstance(keep, int) else int(len(data) * keep)
        (folder / name).write_bytes(data[:size])
    return mutate


def _garbage(name: str):
    def mutate(folder: Path, g: Genuine) -> None:
        size = (folder / name).stat().st_size
        (folder / name).write_bytes(_seed(name).bytes(size))
    return mutate


def _delete(name: str):
    def mutate(folder: Path, g: Genuine) -> None:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return mutate


def _put(name: str, data: bytes | None):
    """A new file (``data``) or an empty folder (None) inside the compile folder."""
    def mutate(folder: Path, g: Genuine) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if data is None else path.write_bytes(data)
    return mutate


def _copy(src: str, dst: str):
    def mutate(folder: Path, g: Genuine) -> None:
        shutil.copyfile(folder / src, folder / dst)
    return mutate


def _symlink(name: str, target: Callable[[Path, Genuine], Path]):
    def mutate(folder: Path, g: Genuine) -> None:
        goal = target(folder, g)
        (folder / name).unlink()
        (folder / name).symlink_to(goal)
    return mutate


def _one_byte(name: str):
    """One digit (text) or one byte (binary) changed, past the file's middle."""
    def mutate(folder: Path, g: Genuine) -> None:
        data = bytearray((folder / name).read_bytes())
        at = len(data) // 2
        if name.endswith((".json", ".md", ".html", ".lyp")):
            at = next(i for i in range(at, len(data)) if chr(data[i]).isdigit())
            data[at] = ord("7") if data[at] != ord("7") else ord("3")
        else:
            data[at] ^= 0x01
        (folder / name).write_bytes(bytes(data))
    return mutate


def _gdstk_rewrite(name: str):
    """The same shapes written again by gdstk: equal geometry, other bytes."""
    def mutate(folder: Path, g: Genuine) -> None:
        _write_lib(_read_lib(folder / name), folder / name)
    return mutate


def _foreign(name: str):
    return _replace_with(name, lambda folder, g: g.foreign / name)


OUTPUTS = ("die0.gds", "die0.oas", "die0.png", "die1.gds", "die1.oas", "die1.png", "overview.png",
           "report.html", "report.json", "report.md", "sky130.lyp")


def _file_cases() -> list[Case]:
    gds = lambda name, mutate: Case(f"files/{name}", "gds", mutate)   # noqa: E731
    oas = lambda name, mutate: Case(f"files/{name}", "oas", mutate)   # noqa: E731
    cases = [
        gds("swap-die0-die1.gds", _swap("die0.gds", "die1.gds")),
        oas("swap-die0-die1.oas", _swap("die0.oas", "die1.oas")),
        gds("die1.gds-is-die0.gds", _replace_with("die1.gds", lambda f, g: f / "die0.gds")),
        gds("die0.oas-holds-gds-bytes", _replace_with("die0.oas", lambda f, g: f / "die0.gds")),
        gds("duplicate-die0.gds-as-die2.gds", _copy("die0.gds", "die2.gds")),
        gds("truncate-die0.gds-half", _truncate("die0.gds", 0.5)),
        gds("truncate-die1.gds-minus-4-bytes", _truncate("die1.gds", -4)),
        oas("truncate-die0.oas-minus-1-byte", _truncate("die0.oas", -1)),
        gds("truncate-die1.oas-half-read-gds", _truncate("die1.oas", 0.5)),
        gds("truncate-manifest.json", _truncate(MANIFEST, -2)),
        oas("garbage-die0.oas", _garbage("die0.oas")),
        gds("garbage-die1.oas-read-gds", _garbage("die1.oas")),
        gds("foreign-die1.gds", _foreign("die1.gds")),
        oas("foreign-die1.oas", _foreign("die1.oas")),
        gds("foreign-die0.oas-read-gds", _foreign("die0.oas")),
        gds("foreign-report.json", _foreign("report.json")),
        gds("foreign-every-die-file", _chain(*(_foreign(n) for n in OUTPUTS if "die" in n))),
        *(gds(f"delete-{name}", _delete(name))
          for name in ("die0.gds", "die1.oas", "report.json", "report.md", "report.html",
                       "overview.png", "sky130.lyp", MANIFEST)),
        gds("extra-notes.txt", _put("notes.txt", b"nothing to see\n")),
        gds("extra-hidden-file", _put(".DS_Store", b"\0\0\0\1Bud1")),
        gds("extra-empty-sub-folder", _put("sub", None)),
        gds("extra-sub-folder-with-die", _chain(_put("old", None),
                                                _copy("die0.gds", "old/die0.gds"))),
        gds("symlink-die0.gds-to-genuine", _symlink("die0.gds",
                                                    lambda f, g: g.folder / "die0.gds")),
        oas("symlink-die1.oas-to-hidden-copy", _chain(
            _copy("die1.oas", ".die1.oas"), _symlink("die1.oas", lambda f, g: Path(".die1.oas")))),
        gds("symlink-report.md-to-genuine", _symlink("report.md",
                                                     lambda f, g: g.folder / "report.md")),
        gds("gdstk-rewrite-die0.gds", _gdstk_rewrite("die0.gds")),
        oas("gdstk-rewrite-die1.oas", _gdstk_rewrite("die1.oas")),
        gds("gdstk-rewrite-die1.gds-resealed", _chain(_gdstk_rewrite("die1.gds"),
                                                      _reseal("die1.gds"))),
        gds("one-byte-report.json", _one_byte("report.json")),
        gds("one-byte-report.json-resealed", _chain(_one_byte("report.json"),
                                                    _reseal("report.json"))),
        gds("one-byte-report.md", _one_byte("report.md")),
        gds("one-byte-report.html", _one_byte("report.html")),
        gds("one-byte-report.html-resealed", _chain(_one_byte("report.html"),
                                                    _reseal("report.html"))),
        gds("foreign-report.html", _foreign("report.html")),
        gds("one-byte-overview.png", _one_byte("overview.png")),
        gds("one-byte-overview.png-resealed", _chain(_one_byte("overview.png"),
                                                     _reseal("overview.png"))),
        gds("one-byte-die1.png-resealed", _chain(_one_byte("die1.png"), _reseal("die1.png"))),
        gds("one-byte-sky130.lyp", _one_byte("sky130.lyp")),
    ]
    # A geometry edit with the manifest's sha256 and size made to match the edited file.
    for attack, op, die, fmt in (("delete-one-strap", delete_one_strap, 0, "gds"),
                                 ("add-metal-rect", add_metal_rect, 1, "oas"),
                                 ("duplicate-via", duplicate_via, 1, "gds"),
                                 ("rename-tile-cell", rename("T", "T" + "0" * 16), 0, "gds")):
        name = f"files/{attack}-die{die}.{fmt}-resealed"
        cases.append(Case(name, fmt, _chain(_edit_die(die, fmt, op, name),
                                            _reseal(f"die{die}.{fmt}"))))
    return cases


# --- the manifest -----------------------------------------------------------------------------

def _set(path: str, value) -> Callable[[dict, Genuine], None]:
    """Set a value by path ('dies/0/route_vias'); a callable value maps the old one."""
    def edit(manifest: dict, g: Genuine) -> None:
        *head, last = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = functools.reduce(lambda n, k: n[k], head, manifest)
        node[last] = value(node[last]) if callable(value) else value
    return edit


def _pop(path: str) -> Callable[[dict, Genuine], None]:
    def edit(manifest: dict, g: Genuine) -> None:
        *head, last = [int(k) if k.isdigit() else k for k in path.split("/")]
        functools.reduce(lambda n, k: n[k], head, manifest).pop(last)
    return edit


def _die_file_elsewhere(die: int, fmt: str, where: str):
    """The manifest names a genuine die file outside the folder (an absolute path, '../', or a
    symlink inside it), while the folder's own die file loses every strap."""
    name = f"die{die}.{fmt}"

    def mutate(folder: Path, g: Genuine) -> None:
        if where == "absolute":
            target = str(g.folder / name)
        elif where == "dotdot":
            shutil.copyfile(g.folder / name, folder.parent / name)
            target = f"../{name}"
        else:
            target = f"genuine-{name}"
            (folder / target).symlink_to(g.folder / name)
        _edit_die(die, fmt, delete_all_straps, name)(folder, g)
        _edit_manifest(_set(f"dies/{die}/files/{fmt}", target))(folder, g)
    return mutate


def _remove_tensors(names: Callable[[str], bool], drop_quant: bool = False):
    """A forged smaller compile: the placement rows of some tensors and their tiles in every
    die file removed (the cells they alone used too), counts made to match."""
    def mutate(folder: Path, g: Genuine) -> None:
        manifest = _manifest(folder)
        tensors = [name for name, _ in manifest["placement"]["layers"]]
        rows = _placement_rows(folder)
        mine = np.array([names(tensors[t]) for t in rows["tensor"].tolist()], dtype=bool)
        gone = [(d, c, r, tensors[t]) for d, c, r, t in
                rows[mine][["die", "column", "row", "tensor"]].tolist()]
        assert gone, "the case names no placed tensor"
        _write_placement_rows(folder, manifest, rows[~mine])
        if drop_quant:
            for row in gone:
                manifest["quantization"].pop(row[3], None)
        grid = g.base.tile_grid
        for die in sorted({row[0] for row in gone}):
            origins = {grid.tile_origin_nm(row[1], row[2]) for row in gone if row[0] == die}
            for fmt in ("gds", "oas"):
                path = folder / f"die{die}.{fmt}"
                lib = _read_lib(path)
                top = _die_top(lib)
                top.remove(*[r for r in _tile_refs(top)
                              if tuple(round(v) for v in r.origin) in origins])
                _drop_orphans(lib)
                _write_lib(lib, path)
                manifest["outputs"][path.name] = _output_entry(path)
        _write_manifest(folder, manifest)
    return mutate


def _base_yaml_elsewhere(change: bool):
    """inputs.base_array.path names a copy of the built-in YAML outside the folder (with its
    description changed and the sha256 updated when ``change``)."""
    def mutate(folder: Path, g: Genuine) -> None:
        text = Path(g.base.path).read_text()
        if change:
            text = text.replace("description: ", "description: (edited) ", 1)
        copy = folder.parent / "sky130-demo.yaml"
        copy.write_text(text)

        def edit(manifest, g):
            manifest["inputs"]["base_array"]["path"] = str(copy)
            manifest["inputs"]["base_array"]["sha256"] = sha256_file(copy)
        _edit_manifest(edit)(folder, g)
    return mutate


def _text(transform: Callable[[str], str]):
    def mutate(folder: Path, g: Genuine) -> None:
        (folder / MANIFEST).write_text(transform((folder / MANIFEST).read_text()))
    return mutate


def _reorder(text: str) -> str:
    """The same JSON value, keys in reverse order: semantically equal, other bytes."""
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in sorted(value, reverse=True)}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value
    return json.dumps(reverse(json.loads(text)), indent=1) + "\n"


def _named(tensor: str) -> Callable[[str], bool]:
    return lambda name: name == tensor


def _manifest_cases() -> list[Case]:
    m = lambda name, mutate, fmt="gds": Case(f"manifest/{name}", fmt, mutate)   # noqa: E731
    e = lambda name, edit, fmt="gds": m(name, _edit_manifest(edit), fmt)        # noqa: E731
    q1, down2 = "model.layers.1.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight"
    removed = ("lm_head.weight", "model.norm.weight", down2, q1, "model.embed_tokens.weight",
               "model.layers.0.input_layernorm.weight")
    return [
        *(m(f"die-file-{where}/die{d}.{fmt}", _die_file_elsewhere(d, fmt, where), fmt)
          for where in ("absolute", "dotdot", "symlink")
          for d, fmt in ((0, "gds"), (1, "oas"))),
        e("die-entries-swapped", _swap_die_entries),
        e("die0-gds-names-die0.oas", _set("dies/0/files/gds", "die0.oas")),
        *(m(f"remove-tensor/{t}.{fmt}", _remove_tensors(_named(t)), fmt)
          for t, fmt in zip(removed, ("gds", "oas") * 3)),
        m("remove-tensor-and-its-quantization/lm_head.weight",
          _remove_tensors(_named("lm_head.weight"), drop_quant=True)),
        m("remove-layer-2", _remove_tensors(lambda n: ".layers.2." in n)),
        m("layers-claim/layer-2-removed", _chain(
            _remove_tensors(lambda n: ".layers.2." in n),
            _edit_manifest(_set("inputs/options/layers", "embed,0-1,head")),
            _edit_manifest(_set("selection/layers", "embed,0-1,head")))),
        e("layers-claim/options-only", _set("inputs/options/layers", "embed,0-2,head")),
        e("layers-claim/options-and-selection", _chain_edits(
            _set("inputs/options/layers", "embed,0-2,head"),
            _set("selection/layers", "embed,0-2,head"))),
        *(e(f"quantization/{q1}-bits-{bits}", _set(f"quantization/{q1}/bits", bits))
          for bits in (3, 8)),
        *(e(f"quantization/{down2}-group-size-{gs}", _set(f"quantization/{down2}/group_size", gs))
          for gs in (16, None)),
        e("quantization/sqnr-edited", _set(f"quantization/{q1}/sqnr_db", lambda v: v + 1)),
        e("quantization/entry-removed", _pop(f"quantization/{q1}")),
        *(e(f"options/{label}", _set(f"inputs/options/{key}", value))
          for label, key, value in (
              ("default-bits-8", "default_bits", 8), ("group-size-64", "group_size", 64),
              ("curve-rowmajor", "curve", "rowmajor"), ("auto", "auto", True),
              ("formats-gds-only", "formats", ["gds"]), ("asymmetric", "asymmetric", True),
              ("method-gptq", "method", "gptq"),
              ("base-sky130-reticle", "base", "sky130-reticle"))),
        e("base-array/sha256-zeroed", _set("inputs/base_array/sha256", "0" * 64)),
        e("base-array/name-only", _set("inputs/base_array/name", "sky130-reticle")),
        e("base-array/placement-base-name", _set("placement/base_name", "sky130-reticle")),
        m("base-array/yaml-copy-outside", _base_yaml_elsewhere(change=False)),
        m("base-array/edited-yaml-outside-sha-updated", _base_yaml_elsewhere(change=True)),
        e("tool-version", _set("inputs/tool/version", "0.0.1")),
        e("inputs-digest", _set("inputs_digest", "0" * 64)),
        e("model-file-bytes", _set("inputs/model/files/0/bytes", lambda v: v + 1)),
        *(e(f"count/{path.replace('/', '-')}+1", _set(path, lambda v: v + 1))
          for path in ("dies/0/via_count", "dies/1/route_vias",
                       "placement/tiles_used", "outputs/report.md/bytes")),
        e("overview-legend", _set("overview_legend/0/1", "tampered")),
        e("output-entry-removed", _pop("outputs/sky130.lyp")),
        e("output-entry-added", _set("outputs/notes.txt", {"bytes": 0, "sha256": "0" * 64})),
        e("selection/removed", _pop("selection")),
        e("selection/partial", _set("selection/partial", True)),
        e("die0-marked-absent", _set("dies/0/present", False)),
        m("json/keys-reversed", _text(_reorder)),
        m("json/compact", _text(lambda t: json.dumps(json.loads(t), sort_keys=True))),
        m("json/indent-2", _text(lambda t: json.dumps(json.loads(t), indent=2,
                                                      sort_keys=True) + "\n")),
        m("json/no-final-newline", _text(lambda t: t.rstrip("\n"))),
        m("json/crlf", _text(lambda t: t.replace("\n", "\r\n"))),
        # the first "format" is overridden by the real one that follows: the same value
        m("json/duplicate-key", _text(lambda t: t.replace('{\n "dies"',
                                                          '{\n "format": "x",\n "dies"', 1))),
        m("placement/two-rows-swap-tiles", _edit_rows(lambda r: _swap_rows(r, 5, 6))),
        m("placement/segment-bits", _edit_rows(lambda r: _set_bits(r, 7))),
        m("placement/row-dropped", _edit_rows(lambda r: np.delete(r, 9))),
        m("placement/segment-bits-not-resealed", _edit_rows(lambda r: _set_bits(r, 7), False)),
    ]


def _chain_edits(*edits: Callable[[dict, Genuine], None]) -> Callable[[dict, Genuine], None]:
    def edit(manifest: dict, g: Genuine) -> None:
        for one in edits:
            one(manifest, g)
    return edit


def _swap_die_entries(manifest: dict, g: Genuine) -> None:
    """Die 0's entry names die 1's files and counts, and the other way round."""
    first, second = manifest["dies"]
    manifest["dies"] = [dict(second, die=0), dict(first, die=1)]


def _placement_rows(folder: Path) -> np.ndarray:
    return np.load(folder / PLACEMENT_FILE, allow_pickle=False)


def _write_placement_rows(folder: Path, manifest: dict, rows: np.ndarray) -> None:
    """The placement file holds ``rows``; the manifest's counts and its outputs entry are
    made to match (a forger who knows the format)."""
    with open(folder / PLACEMENT_FILE, "wb") as f:
        np.save(f, rows, allow_pickle=False)
    manifest["placement"]["tiles_used"] = len(rows)
    manifest["placement"]["sites_used"] = int(sum(
        (r1 - r0) * (c1 - c0) * bits
        for bits, r0, r1, c0, c1 in rows[["bits", "row0", "row1", "col0", "col1"]].tolist()))
    manifest["outputs"][PLACEMENT_FILE] = _output_entry(folder / PLACEMENT_FILE)


def _edit_rows(edit: Callable[[np.ndarray], np.ndarray], reseal: bool = True):
    """The placement file's rows edited; with ``reseal`` the manifest is made to match."""
    def mutate(folder: Path, g: Genuine) -> None:
        rows = edit(_placement_rows(folder).copy())
        if reseal:
            manifest = _manifest(folder)
            _write_placement_rows(folder, manifest, rows)
            _write_manifest(folder, manifest)
        else:
            with open(folder / PLACEMENT_FILE, "wb") as f:
                np.save(f, rows, allow_pickle=False)
    return mutate


def _swap_rows(rows: np.ndarray, i: int, j: int) -> np.ndarray:
    for field in ("die", "column", "row"):
        rows[field][[i, j]] = rows[field][[j, i]]
    return rows


def _set_bits(rows: np.ndarray, i: int) -> np.ndarray:
    rows["bits"][i] += 1
    return rows


def _build_cases() -> list[Case]:
    cases = (_geometry_cases("metal", METAL_OPS)
             + _geometry_cases("via", VIA_OPS)
             + _geometry_cases("via", [("add-via-outside-tiles-counts-raised",
                                        via_outside_tiles)], then=_raise_via_counts)
             # die 1 has tiles the placement leaves empty; die 0 has none
             + _geometry_cases("via", [("add-via-in-unused-tile", via_in_unused_tile)],
                               variants=((1, "gds", "gds"),))
             + _geometry_cases("via", [("add-via-in-unused-tile-counts-raised",
                                        via_in_unused_tile)],
                               variants=((1, "gds", "gds"), (1, "oas", "oas")),
                               then=_raise_via_counts)
             + _geometry_cases("hierarchy", HIERARCHY_OPS)
             + _file_cases()
             + _manifest_cases())
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "tamper case names must be unique"
    return cases


CASES: list[Case] = _build_cases()
