"""Stream one die's two custom mask layers (top via, top metal) to GDSII and/or OASIS.

Beside the two layers the files carry what a merge needs: the top metal's fill on the PDK's
fill datatype (fill flows and extraction tell it from design metal), the die boundary on
the PDK's boundary layer (merge tools align to it; density decks measure inside it) and,
where the PDK names a top-metal label layer, labels: each strap's net (VPWR on the high
strap, VGND on the low one, at its centre) in STRAPS, so one text per strap of the die file
names every placed tile's straps, and the top cell's name once at the die origin.

Hierarchy (every name but a chunk cell's starts with the die's prefix ``T<hash>_D<die>_``,
names.py, so die files of different dies and compiles merge without a clash; a chunk cell's
name is its content, the same in every die file that holds it; within a die file, names
derive from content, so identical content shares a cell and names never depend on call order):

* ``STRAPS``      both straps of every site row of a tile (top metal) and their net labels;
                   one cell for the die;
* ``TIES``        the tie via of every strap, down to its rail in the tile's tie column (top
                   via); placed beside each used tile by the top cell, not inside the tile
                   cell, so a tile cell holds bit vias only (extraction decodes it whole);
* ``V{n}{hex}{tag}``  the vias of a chunk of n <= 8 sites of one row with that bit pattern
                   (``tag``: the base array's via geometry, names.chunk_tag; no prefix);
* ``T{sha256}``   a used tile: one STRAPS reference plus one chunk reference per chunk;
* ``FILLSQ``      one fill square; ``FILL`` holds the fill arrays and channel bars;
* ``DIE``         the top cell: tiles (sorted by row, column), routes with their vias, FILL,
                   the boundary and the die's label.

Both formats are written by our own record writers (gdsii.py, oasis.py) straight to the
files: a tile's cell is rendered to bytes (tiles.render_tile, possibly in a worker process)
and appended by ``add_rendered``; chunk cells are written on first use and the top cell last.
So memory is bounded by one tile plus per-tile bookkeeping, and the bytes depend only on the
order of ``add_rendered`` / ``add_route`` calls. Units: 1 database unit = 1 nm (KLayout dbu
0.001 um). Files are written to a temporary name and moved into place by close().
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.config.pdk import Pdk
from taalasc.formats import gdsii, oasis
from taalasc.custom.fill import (FillArray, keep_out_area_rects, plan_fill, route_area_rects,
                               window_density_pct)
from taalasc.custom.geometry import chunk_via_rects, strap_labels, strap_rects, tie_via_rects
from taalasc.custom import names
from taalasc.custom.routing import ChannelRouter
from taalasc.custom.tiles import (DIE_REFNUM, FILL_REFNUM, FILLSQ_REFNUM, FIRST_TILE_REFNUM,
                                STRAPS_REFNUM, TIES_REFNUM, RenderedTile, chunk_of_refnum,
                                chunk_tag, render_tile)
from taalasc.errors import MaskError

FORMATS = ("gds", "oas")
_BUFFER = 1 << 20


@dataclass(frozen=True)
class DieLayout:
    """What a die's masks are made of, for the structural rule check (check.check_die)."""
    tiles: dict[tuple[int, int], str]   # (column, row) -> tile cell name
    chunks: tuple[int, ...]             # chunk reference numbers used (tiles.chunk_of_refnum)
    wires: np.ndarray                   # route wires [n, 4], die nm
    route_vias: np.ndarray              # [n, 4]
    arrays: tuple[FillArray, ...]       # fill square arrays
    bars: np.ndarray                    # fill bars [n, 4]
    density_pct: np.ndarray             # every density window [nx, ny]


@dataclass(frozen=True)
class DieMaskResult:
    die: int
    files: dict[str, Path]   # format -> path (only the name when nothing was written)
    sha256: dict[str, str]   # format -> hex digest
    nbytes: dict[str, int]   # format -> file size, bytes
    via_count: int
    bit_vias: int
    tie_vias: int            # one per strap of every used tile
    route_vias: int
    top_metal_shapes: int    # straps + route pieces, flattened
    fill_shapes: int         # fill squares + bars, flattened
    density_min_pct: float
    density_max_pct: float
    layout: DieLayout | None = field(default=None, compare=False, repr=False)
    # bit vias per programmed tile (column, row): zero-skip's manifest records them
    tile_vias: dict = field(default_factory=dict, compare=False, repr=False)


class _Discard:
    """A file that keeps nothing: with ``out_dir=None`` the writer only counts and hashes."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class DieMaskWriter:
    """Streams one die's two custom layers to GDSII and/or OASIS.

    ``out_dir=None`` writes no file: the result carries the sizes and sha256 digests the
    files would have (verify rebuilds a compile this way to compare it byte for byte).
    ``tag``: the compile's part of every cell name (names.compile_tag of its inputs digest).
    """

    def __init__(self, base: BaseArray, die: int, out_dir: Path | None, stem: str,
                 formats: Sequence[str] = FORMATS, *, tag: str):
        pdk = base.pdk
        if not pdk.mask_capable or pdk.layers is None:
            raise MaskError(f"PDK {pdk.name!r} has no public mask layers (mask_capable is false)")
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise MaskError(f"formats must be a non-empty subset of {', '.join(FORMATS)}, "
                            f"not {list(formats)!r}")
        self.base, self.die = base, die
        self.prefix = names.die_prefix(tag, die)
        self.top = self.prefix + names.TOP
        self.via_layer = (pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype)
        self.metal_layer = (pdk.layers.top_metal.gds_layer, pdk.layers.top_metal.gds_datatype)
        self.fill_layer = (pdk.layers.top_metal_fill.gds_layer,
                           pdk.layers.top_metal_fill.gds_datatype)
        self.boundary_layer = (pdk.layers.boundary.gds_layer, pdk.layers.boundary.gds_datatype)
        label = pdk.layers.top_metal_label
        self.label_layer = None if label is None else (label.gds_layer, label.gds_datatype)
        self.grid_nm = pdk.grid_nm
        self.formats = tuple(sorted(set(formats)))
        self._write = out_dir is not None
        self.paths = {f: Path(out_dir or "") / f"{stem}.{f}" for f in self.formats}
        self._tmp = {f: p.with_name(p.name + ".tmp") for f, p in self.paths.items()} \
            if self._write else {}
        self._fh: dict[str, object] = {} if self._write else {f: _Discard() for f in self.formats}
        # Files are only appended to, so their digests are taken as the bytes go out.
        self._digest = {fmt: hashlib.sha256() for fmt in self.formats}
        self._nbytes = dict.fromkeys(self.formats, 0)
        try:
            for fmt, tmp in self._tmp.items():
                self._fh[fmt] = open(tmp, "wb", buffering=_BUFFER)
        except OSError as exc:
            self.abort()
            raise MaskError(f"{tmp}: cannot open for writing ({exc})") from None
        self._out("gds", gdsii.header(self.top))
        self._out("oas", oasis.start())
        self._tile_cells: dict[str, int] = {}      # tile cell name -> OASIS refnum
        self._chunks: set[int] = set()             # chunk cells written
        self._tiles: dict[tuple[int, int], tuple[str, int]] = {}  # (col,row) -> (cell, vias)
        self._strap_rects = strap_rects(base.weight_tile, self.grid_nm)
        self._tie_rects = tie_via_rects(base.weight_tile, pdk.rules.via_size_nm, self.grid_nm)
        self._strap_labels = strap_labels(base.weight_tile, self.grid_nm) \
            if self.label_layer else []
        self._routes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self._closed = False

    # -- output ------------------------------------------------------------------------------
    def _out(self, fmt: str, data: bytes) -> None:
        fh = self._fh.get(fmt)
        if fh is not None:
            fh.write(data)
            self._digest[fmt].update(data)
            self._nbytes[fmt] += len(data)

    def _leaf(self, name: str, refnum: int, *shapes: tuple[np.ndarray, tuple],
              labels=()) -> None:
        gds, oas = _leaf_bytes(self.prefix + name, refnum, *shapes, labels=labels,
                               label_layer=self.label_layer)
        self._out("gds", gds)
        self._out("oas", oas)

    # -- public API --------------------------------------------------------------------------
    def add_tile(self, column: int, row: int, sites: np.ndarray) -> None:
        """Program tile (column, row): a digit per used site, its via on the line
        ``WeightTile.line_of_value`` gives (tie-high-low: bit 1 high strap, 0 low strap)."""
        self._check_slot(column, row)
        self.add_rendered(column, row, render_tile(
            self.base, sites, self.formats, where=f"die {self.die}: tile ({column}, {row})",
            prefix=self.prefix))

    def add_rendered(self, column: int, row: int, rendered: RenderedTile) -> None:
        """Place a tile rendered by :func:`taalasc.custom.tiles.render_tile` (same formats)."""
        self._check_slot(column, row)
        if set(rendered.data) != set(self.formats):
            raise MaskError(f"die {self.die}: tile ({column}, {row}) was rendered for "
                            f"{sorted(rendered.data)}, the writer writes {list(self.formats)}")
        name = rendered.name
        if not name.startswith(self.prefix):
            raise MaskError(f"die {self.die}: tile ({column}, {row}) was rendered as {name!r}, "
                            f"not for this die file (cell names start {self.prefix!r})")
        if name not in self._tile_cells:
            if not self._tile_cells:
                self._leaf(names.STRAPS, STRAPS_REFNUM, (self._strap_rects, self.metal_layer),
                           labels=self._strap_labels)
                self._leaf(names.TIES, TIES_REFNUM, (self._tie_rects, self.via_layer))
            tile, via = self.base.weight_tile, self.base.pdk.rules.via_size_nm
            new = () if self._chunks.issuperset(rendered.chunks) else \
                sorted(set(rendered.chunks) - self._chunks)
            for ref in new:
                self._chunks.add(ref)
                gds, oas = _chunk_bytes(tile, via, self.grid_nm, self.via_layer, ref,
                                        chunk_tag(self.base))
                self._out("gds", gds)
                self._out("oas", oas)
            refnum = FIRST_TILE_REFNUM + len(self._tile_cells)
            self._tile_cells[name] = refnum
            self._out("gds", rendered.data.get("gds", b""))
            self._out("oas", oasis.cellname(name, refnum) + oasis.cell(refnum)
                      + rendered.data.get("oas", b""))
        self._tiles[(column, row)] = (name, rendered.via_count)

    def add_route(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        """Draw the dataflow route from tile a's OUT port to tile b's IN port (see routing.py).

        Routes are drawn by close() in the order added (a route that cannot be drawn raises
        MaskError there): dies with the same used tiles and routes share one plan.
        """
        self._check_open()
        a, b = (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))
        for t in (a, b):
            if t not in self._tiles:
                raise MaskError(f"die {self.die}: route {a} -> {b} ends at tile {t}, which "
                                "has not been programmed")
        if a == b:
            raise MaskError(f"die {self.die}: route {a} -> {b} must join two different tiles")
        self._routes.append((a, b))  # drawn by close(), in this order

    def abort(self) -> None:
        """Drop the temporary files (after an error); the writer cannot be used again."""
        self._closed = True
        for fh in self._fh.values():
            fh.close()
        self._fh = {}
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def close(self) -> DieMaskResult:
        """Add fill, write the top cell, move the files into place and return the counts."""
        self._check_open()
        self._closed = True
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise

    # -- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise MaskError(f"die {self.die}: the mask writer is already closed")

    def _check_slot(self, column: int, row: int) -> None:
        self._check_open()
        grid = self.base.tile_grid
        if not (0 <= column < grid.columns and 0 <= row < grid.rows):
            raise MaskError(f"die {self.die}: tile ({column}, {row}) is outside the "
                            f"{grid.columns} x {grid.rows} tile grid")
        if (column, row) in self._tiles:
            raise MaskError(f"die {self.die}: tile ({column}, {row}) is programmed twice")

    def _finish(self) -> DieMaskResult:
        base, grid = self.base, self.base.tile_grid
        wires, vias, arrays, bars, density = _die_plan(base, tuple(sorted(self._tiles)),
                                                       tuple(self._routes))
        metal, via, fill = self.metal_layer, self.via_layer, self.fill_layer
        boundary = np.array([[0, 0, base.die.width_nm, base.die.height_nm]], np.int64)

        fill_shapes = len(bars) + sum(a.columns * a.rows for a in arrays)
        fill_cell, square = self.prefix + names.FILL, self.prefix + names.FILLSQ
        gds_fill, oas_fill = [], [oasis.cellname(fill_cell, FILL_REFNUM), oasis.cell(FILL_REFNUM)]
        if arrays:
            size = arrays[0].size_nm
            self._leaf(names.FILLSQ, FILLSQ_REFNUM, (np.array([[0, 0, size, size]]), fill))
            for a in arrays:
                if a.columns * a.rows > 1:
                    gds_fill.append(gdsii.aref(square, a.x_nm, a.y_nm, a.columns, a.rows,
                                               a.pitch_nm, a.pitch_nm))
                else:
                    gds_fill.append(gdsii.sref(square, a.x_nm, a.y_nm))
                oas_fill.append(oasis.placement(FILLSQ_REFNUM, a.x_nm, a.y_nm, a.columns,
                                                a.rows, a.pitch_nm, a.pitch_nm))
        self._out("gds", gdsii.begin_cell(fill_cell) + b"".join(gds_fill)
                  + gdsii.boundaries(bars, fill) + gdsii.end_cell())
        self._out("oas", b"".join(oas_fill) + oasis.rectangles(bars, fill))

        top = self.top
        die_label = [(top, 0, 0)] if self.label_layer else []
        placed = sorted(self._tiles.items(), key=lambda t: (t[0][1], t[0][0]))
        if "gds" in self._fh:
            tile_cells = sorted(self._tile_cells)
            index = {n: k for k, n in enumerate(tile_cells)}
            xy = np.array([grid.tile_origin_nm(c, r) for (c, r), _ in placed],
                          np.int64).reshape(-1, 2)
            body = b""
            if tile_cells:
                table, lengths = gdsii.name_table(tile_cells, gdsii.SREF_HEAD)
                body = gdsii.srefs(table, lengths,
                                   np.array([index[n] for _, (n, _) in placed]), xy).tobytes()
                table, lengths = gdsii.name_table([self.prefix + names.TIES], gdsii.SREF_HEAD)
                body += gdsii.srefs(table, lengths, np.zeros(len(placed), np.int64), xy).tobytes()
            self._out("gds", gdsii.begin_cell(top) + body + gdsii.boundaries(wires, metal)
                      + gdsii.boundaries(vias, via) + gdsii.boundaries(boundary, self.boundary_layer)
                      + gdsii.texts(die_label, self.label_layer) + gdsii.sref(fill_cell, 0, 0)
                      + gdsii.end_cell() + gdsii.footer())
        if "oas" in self._fh:
            body = b"".join(oasis.placement(self._tile_cells[n], *grid.tile_origin_nm(c, r))
                            for (c, r), (n, _) in placed)
            body += b"".join(oasis.placement(TIES_REFNUM, *grid.tile_origin_nm(c, r))
                             for (c, r), _ in placed)
            self._out("oas", oasis.cellname(top, DIE_REFNUM) + oasis.cell(DIE_REFNUM)
                      + body + oasis.rectangles(wires, metal) + oasis.rectangles(vias, via)
                      + oasis.rectangles(boundary, self.boundary_layer)
                      + oasis.texts(die_label, self.label_layer)
                      + oasis.placement(FILL_REFNUM, 0, 0) + oasis.end())

        for fh in self._fh.values():
            if self._write:
                # Durable here, in the worker: the parent's fsync of the output then finds
                # the die already on disk instead of waiting for every die's writes at the end.
                fh.flush()
                os.fsync(fh.fileno())
            fh.close()
        self._fh = {}
        files, digests = {}, {}
        for fmt, path in self.paths.items():
            if self._write:
                os.replace(self._tmp[fmt], path)
            files[fmt] = path
            digests[fmt] = self._digest[fmt].hexdigest()
        bit_vias = sum(n for _, n in self._tiles.values())
        tie_vias = len(self._tiles) * len(self._tie_rects)
        layout = DieLayout(tiles={k: n for k, (n, _) in self._tiles.items()},
                           chunks=tuple(sorted(self._chunks)), wires=wires, route_vias=vias,
                           arrays=tuple(arrays), bars=bars, density_pct=density)
        return DieMaskResult(
            die=self.die, files=files, sha256=digests, nbytes=dict(self._nbytes),
            via_count=bit_vias + tie_vias + len(vias),
            bit_vias=bit_vias, tie_vias=tie_vias, route_vias=len(vias),
            top_metal_shapes=len(self._tiles) * len(self._strap_rects) + len(wires),
            fill_shapes=fill_shapes,
            density_min_pct=float(np.nanmin(density)), density_max_pct=float(np.nanmax(density)),
            layout=layout, tile_vias={k: n for k, (_, n) in self._tiles.items()})


_PLANS: dict[tuple, tuple] = {}


def _die_plan(base: BaseArray, used: tuple, routes: tuple) -> tuple:
    """Routes, fill and density of a die: (wires, vias, fill arrays, bars, density [nx, ny]).

    Depends only on the base array, the used tiles and the routes in order, so dies that agree
    on those (most full dies of a model) share one plan: a few recent plans are kept.
    """
    key = (repr(base), used, routes)
    if key in _PLANS:
        return _PLANS[key]
    grid, rules, g = base.tile_grid, base.pdk.rules, base.pdk.grid_nm
    die_nm = (base.die.width_nm, base.die.height_nm)
    router = ChannelRouter(base)
    nets = [router.route(a, b) for a, b in routes]
    empty = np.zeros((0, 4), np.int64)
    wires = np.concatenate([n.wires for n in nets]) if nets else empty
    vias = np.concatenate([n.vias for n in nets]) if nets else empty
    arrays, bars = plan_fill(base, set(used), router, wires, die_nm)
    straps = strap_rects(base.weight_tile, g)

    def metal_rects():  # streamed, so memory does not grow with the tiles of the die
        yield from (route_area_rects(n.wires) for n in nets)
        yield bars
        for k in range(0, len(used), 256):
            origins = np.array([grid.tile_origin_nm(c, r) for c, r in used[k:k + 256]], np.int64)
            yield (straps[None, :, :] + np.tile(origins, 2)[:, None, :]).reshape(-1, 4)
        yield from (a.rects() for a in arrays)

    density = window_density_pct(metal_rects(), die_nm,
                                 int(round(rules.density_window_um * 1000)),
                                 int(round(rules.density_step_um * 1000)), g,
                                 exclude=keep_out_area_rects(base))
    for arr in (wires, vias, bars, density):
        arr.setflags(write=False)  # shared between dies
    if len(_PLANS) >= 4:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[key] = (wires, vias, tuple(arrays), bars, density)
    return _PLANS[key]


def _leaf_bytes(name: str, refnum: int, *shapes: tuple[np.ndarray, tuple], labels=(),
                label_layer: tuple[int, int] | None = None) -> tuple[bytes, bytes]:
    """A cell of (rectangles, layer) groups and ``labels`` (text, x, y) on ``label_layer``:
    (GDS structure, OASIS CELLNAME + CELL records)."""
    return (gdsii.begin_cell(name) + b"".join(gdsii.boundaries(r, layer) for r, layer in shapes)
            + gdsii.texts(labels, label_layer) + gdsii.end_cell(),
            oasis.cellname(name, refnum) + oasis.cell(refnum)
            + b"".join(oasis.rectangles(r, layer) for r, layer in shapes)
            + oasis.texts(labels, label_layer))


def _chunk_bytes(tile, via_nm: int, grid_nm: int, layer, refnum: int, tag: str
                 ) -> tuple[bytes, bytes]:
    """Chunk cell bytes: named by content (``tag``: tiles.chunk_tag), no die prefix."""
    nb, value = chunk_of_refnum(refnum)
    return _leaf_bytes(names.chunk_name(nb, value, tag), refnum,
                       (chunk_via_rects(tile, via_nm, grid_nm, nb // tile.site_bits, value), layer))


def layer_properties_lyp(pdk: Pdk) -> str:
    """KLayout layer-properties XML naming and colouring the custom layers, fill, boundary
    and (where the PDK has one) the top metal's label layer."""
    if pdk.layers is None:
        raise MaskError(f"PDK {pdk.name!r} has no mask layers to describe")
    entries = []
    shown = [(pdk.layers.top_metal, "#3060ff", "I5"), (pdk.layers.top_metal_fill, "#90a8ff", "I9"),
             (pdk.layers.via, "#ff3030", "I1"), (pdk.layers.boundary, "#808080", "I0")]
    if pdk.layers.top_metal_label is not None:
        shown.append((pdk.layers.top_metal_label, "#3060ff", "I0"))
    for layer, colour, pattern in shown:
        entries.append(
            " <properties>\n"
            f"  <frame-color>{colour}</frame-color>\n  <fill-color>{colour}</fill-color>\n"
            f"  <dither-pattern>{pattern}</dither-pattern>\n  <visible>true</visible>\n"
            "  <transparent>false</transparent>\n  <width>1</width>\n"
            f"  <name>{layer.name} {layer.gds_layer}/{layer.gds_datatype}</name>\n"
            f"  <source>{layer.gds_layer}/{layer.gds_datatype}@1</source>\n"
            " </properties>\n")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<layer-properties>\n'
            + "".join(entries) + "</layer-properties>\n")
