"""Stream one die's two custom mask layers (top via, top metal) to GDSII and/or OASIS.

Hierarchy (names derived from content, so identical content shares a cell and names never
depend on call order):

* ``STRAPS``      both straps of every site row of a tile (top metal); one cell for the die;
* ``V{n}_{hex}``  the vias of a chunk of n <= 8 sites of one row with that bit pattern;
* ``T_{sha256}``  a used tile: one STRAPS reference plus one chunk reference per chunk;
* ``FILLSQ``      one fill square; ``FILL`` holds the fill arrays and channel bars;
* ``DIE{die}``    the top cell: tiles (sorted by row, column), routes with their vias, FILL.

GDS is streamed with gdstk.GdsWriter: chunk and tile cells are written when a tile is added,
the top cell last, so GDS memory is bounded by one tile. OASIS needs gdstk's whole Library
(``Library.write_oas``), so with "oas" the small cells are also kept until close(). Units:
1 database unit = 1 nm (user unit 1 nm, precision 1 nm), which KLayout reads as dbu 0.001 um.
Files are written to a temporary name and moved into place by close().
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gdstk
import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.config.pdk import Pdk
from taalasc.emit.fill import plan_fill, route_area_rects, window_density_pct
from taalasc.emit.geometry import (chunk_name, chunk_via_rects, strap_rects, tile_cell_name,
                                   tile_chunks)
from taalasc.emit.routing import ChannelRouter
from taalasc.errors import MaskError

FORMATS = ("gds", "oas")
TIMESTAMP = datetime(2000, 1, 1)  # fixed, so the same inputs give the same bytes
UNIT_M = 1e-9


@dataclass(frozen=True)
class DieMaskResult:
    die: int
    files: dict[str, Path]   # format -> path
    sha256: dict[str, str]   # format -> hex digest
    via_count: int
    bit_vias: int
    route_vias: int
    top_metal_shapes: int    # straps + route pieces, flattened
    fill_shapes: int         # fill squares + bars, flattened
    density_min_pct: float
    density_max_pct: float


def _rect(r, layer) -> gdstk.Polygon:
    x0, y0, x1, y1 = (int(v) for v in r)
    return gdstk.rectangle((x0, y0), (x1, y1), layer=layer[0], datatype=layer[1])


class DieMaskWriter:
    """Streams one die's two custom layers to GDSII and/or OASIS."""

    def __init__(self, base: BaseArray, die: int, out_dir: Path, stem: str,
                 formats: Sequence[str] = FORMATS):
        pdk = base.pdk
        if not pdk.mask_capable or pdk.layers is None:
            raise MaskError(f"PDK {pdk.name!r} has no public mask layers (mask_capable is false)")
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise MaskError(f"formats must be a non-empty subset of {', '.join(FORMATS)}, "
                            f"not {list(formats)!r}")
        self.base, self.die = base, die
        self.via_layer = (pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype)
        self.metal_layer = (pdk.layers.top_metal.gds_layer, pdk.layers.top_metal.gds_datatype)
        self.grid_nm = pdk.grid_nm
        out_dir = Path(out_dir)
        self.paths = {f: out_dir / f"{stem}.{f}" for f in sorted(set(formats))}
        self._tmp = {f: p.with_name(p.name + ".tmp") for f, p in self.paths.items()}
        self._gds = None
        try:
            if "gds" in self.paths:
                self._gds = gdstk.GdsWriter(self._tmp["gds"], name=f"DIE{die}", unit=UNIT_M,
                                            precision=UNIT_M, timestamp=TIMESTAMP)
        except Exception as exc:  # gdstk raises plain OSError/RuntimeError
            raise MaskError(f"{self._tmp['gds']}: cannot open for writing ({exc})") from None
        self._lib = gdstk.Library(f"DIE{die}", unit=UNIT_M, precision=UNIT_M) \
            if "oas" in self.paths else None
        self._written: dict[str, gdstk.Cell] = {}
        self._tiles: dict[tuple[int, int], tuple[str, int]] = {}  # (col,row) -> (cell, bits)
        self._strap_rects = strap_rects(base.weight_tile, self.grid_nm)
        self._router: ChannelRouter | None = None
        self._wires: list[np.ndarray] = []
        self._route_vias: list[np.ndarray] = []
        self._closed = False

    # -- cells -------------------------------------------------------------------------------
    def _emit(self, cell: gdstk.Cell) -> gdstk.Cell:
        if self._gds is not None:
            self._gds.write(cell)
        if self._lib is not None:
            self._lib.add(cell)
        self._written[cell.name] = cell
        return cell

    def _cell(self, name: str, build) -> gdstk.Cell:
        cell = self._written.get(name)
        return cell if cell is not None else self._emit(build(gdstk.Cell(name)))

    def _straps(self) -> gdstk.Cell:
        def build(cell):
            cell.add(*[_rect(r, self.metal_layer) for r in self._strap_rects])
            return cell
        return self._cell("STRAPS", build)

    def _chunk(self, n: int, value: int) -> gdstk.Cell:
        def build(cell):
            rects = chunk_via_rects(self.base.weight_tile, self.base.pdk.rules.via_size_nm,
                                    self.grid_nm, n, value)
            cell.add(*[_rect(r, self.via_layer) for r in rects])
            return cell
        return self._cell(chunk_name(n, value), build)

    # -- public API --------------------------------------------------------------------------
    def add_tile(self, column: int, row: int, bits: np.ndarray) -> None:
        """Program tile (column, row): one via per used site, bit 1 high strap, 0 low strap."""
        self._check_open()
        grid, tile = self.base.tile_grid, self.base.weight_tile
        if not (0 <= column < grid.columns and 0 <= row < grid.rows):
            raise MaskError(f"die {self.die}: tile ({column}, {row}) is outside the "
                            f"{grid.columns} x {grid.rows} tile grid")
        if (column, row) in self._tiles:
            raise MaskError(f"die {self.die}: tile ({column}, {row}) is programmed twice")
        bits = np.asarray(bits)
        if bits.ndim != 1 or not 0 < bits.size <= tile.capacity_bits:
            raise MaskError(f"die {self.die}: tile ({column}, {row}) bits must be a 1-D array of "
                            f"1..{tile.capacity_bits} sites, not shape {list(bits.shape)}")
        if bits.dtype != np.uint8:
            if bits.dtype.kind not in "biu":
                raise MaskError(f"die {self.die}: tile ({column}, {row}) bits must be integers "
                                f"0/1, not dtype {bits.dtype}")
            bits = bits.astype(np.uint8)
        if bits.max(initial=0) > 1:
            bad = int(np.flatnonzero(bits > 1)[0])
            raise MaskError(f"die {self.die}: tile ({column}, {row}) site {bad} must be 0 or 1, "
                            f"not {int(bits[bad])}")
        name = tile_cell_name(bits)
        if name not in self._written:
            straps = self._straps()
            refs = [gdstk.Reference(straps)]
            for x_site, y_site, n, value in tile_chunks(bits, tile):
                refs.append(gdstk.Reference(self._chunk(n, value),
                                            (x_site * tile.site_pitch_x_nm,
                                             y_site * tile.site_pitch_y_nm)))
            cell = gdstk.Cell(name)
            cell.add(*refs)
            self._emit(cell)
        self._tiles[(column, row)] = (name, int(bits.size))

    def add_route(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        """Draw the dataflow route from tile a's OUT port to tile b's IN port (see routing.py)."""
        self._check_open()
        a, b = (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))
        for t in (a, b):
            if t not in self._tiles:
                raise MaskError(f"die {self.die}: route {a} -> {b} ends at tile {t}, which "
                                "has not been programmed")
        if a == b:
            raise MaskError(f"die {self.die}: route {a} -> {b} must join two different tiles")
        if self._router is None:
            self._router = ChannelRouter(self.base)
        net = self._router.route(a, b)
        self._wires.append(net.wires)
        self._route_vias.append(net.vias)

    def abort(self) -> None:
        """Drop the temporary files (after an error); the writer cannot be used again."""
        self._closed = True
        if self._gds is not None:
            self._gds.close()
            self._gds = None
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

    def _finish(self) -> DieMaskResult:
        base, grid = self.base, self.base.tile_grid
        die_nm = (base.die.width_nm, base.die.height_nm)
        router = self._router or ChannelRouter(base)
        wires = np.concatenate(self._wires) if self._wires else np.zeros((0, 4), np.int64)
        vias = np.concatenate(self._route_vias) if self._route_vias else np.zeros((0, 4), np.int64)
        arrays, bars = plan_fill(base, set(self._tiles), router, wires, die_nm)

        fill = gdstk.Cell("FILL")
        fill_shapes = len(bars)
        if arrays:
            size = arrays[0].size_nm
            square = self._emit(gdstk.Cell("FILLSQ").add(
                _rect((0, 0, size, size), self.metal_layer)))
            for a in arrays:
                spacing = (a.pitch_nm, a.pitch_nm) if a.columns * a.rows > 1 else None
                fill.add(gdstk.Reference(square, (a.x_nm, a.y_nm), columns=a.columns,
                                         rows=a.rows, spacing=spacing))
                fill_shapes += a.columns * a.rows
        fill.add(*[_rect(r, self.metal_layer) for r in bars])
        self._emit(fill)

        top = gdstk.Cell(f"DIE{self.die}")
        for (column, row), (name, _) in sorted(self._tiles.items(), key=lambda t: (t[0][1], t[0][0])):
            top.add(gdstk.Reference(self._written[name], grid.tile_origin_nm(column, row)))
        top.add(*[_rect(r, self.metal_layer) for r in wires])
        top.add(*[_rect(r, self.via_layer) for r in vias])
        top.add(gdstk.Reference(fill))
        self._emit(top)

        metal = [route_area_rects(w) for w in self._wires]
        origins = np.array([grid.tile_origin_nm(c, r) for c, r in sorted(self._tiles)],
                           dtype=np.int64).reshape(-1, 2)
        straps = (self._strap_rects[None, :, :] + np.tile(origins, 2)[:, None, :]).reshape(-1, 4)
        metal += [straps, bars] + [a.rects() for a in arrays]
        density = window_density_pct(np.concatenate(metal), die_nm,
                                     int(round(base.pdk.rules.density_window_um * 1000)),
                                     int(round(base.pdk.rules.density_step_um * 1000)),
                                     self.grid_nm)

        if self._gds is not None:
            self._gds.close()
            self._gds = None
        if self._lib is not None:
            self._lib.write_oas(self._tmp["oas"], compression_level=6)
        files, digests = {}, {}
        for fmt, path in self.paths.items():
            os.replace(self._tmp[fmt], path)
            files[fmt] = path
            digests[fmt] = _sha256(path)
        bit_vias = sum(n for _, n in self._tiles.values())
        return DieMaskResult(
            die=self.die, files=files, sha256=digests, via_count=bit_vias + len(vias),
            bit_vias=bit_vias, route_vias=len(vias),
            top_metal_shapes=len(straps) + len(wires), fill_shapes=fill_shapes,
            density_min_pct=float(density.min()), density_max_pct=float(density.max()))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def layer_properties_lyp(pdk: Pdk) -> str:
    """KLayout layer-properties XML naming and colouring the two custom layers."""
    if pdk.layers is None:
        raise MaskError(f"PDK {pdk.name!r} has no mask layers to describe")
    entries = []
    for layer, colour, pattern in ((pdk.layers.top_metal, "#3060ff", "I5"),
                                   (pdk.layers.via, "#ff3030", "I1")):
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
