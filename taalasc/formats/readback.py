"""Read a mask file back and decode weight bits from via positions alone.

This is the core of extraction: nothing but the GDS/OASIS geometry, the base array and the
tile position is used. Both formats are read by our own readers (gdsread.py, oasparse.py)
into one GdsLibrary and flattened hierarchically with numpy (gdsflat.py), so a reticle die of
~34 M vias reads in a few seconds. The file is untrusted: the readers are pure Python and
numpy and refuse anything malformed with one MaskError line. gdstk reads masks only in the
tests, as the independent reader (tests/gdstk_ref.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.config.pdk import Pdk
from taalasc.formats.gdsflat import Instances, check_square, flat_rects, iter_layer, ragged
from taalasc.formats.gdsread import GdsLibrary, read_gds
from taalasc.formats.oasparse import read_oas
from taalasc.errors import MaskError

Layer = tuple[int, int]
_EMPTY = np.zeros((0, 4), np.int64)
INSTANCE_BATCH = 1 << 18   # small-cell instances decoded per call (SiteDecoder.read)


def read_library(path: Path, allowed: set[Layer] | None = None) -> GdsLibrary:
    """A mask file read by our own readers: OASIS (``.oas``/``.oasis``, formats/oasparse.py)
    or GDSII (any other suffix, formats/gdsread.py). Either way a GdsLibrary, so what
    follows takes one code path; MaskError for anything unreadable (see the readers)."""
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: no such mask file")
    if path.suffix.lower() in (".oas", ".oasis"):
        return read_oas(path, allowed)
    return read_gds(path, allowed)


def read_rects(path: Path, allowed: set[Layer] | None = None) -> dict[Layer, np.ndarray]:
    """Every shape of the file's single top cell, flattened, as int64 [n, 4] nm per layer.

    MaskError for an unreadable or truncated file, a file expanding to too many shapes,
    non-rectangular shapes, paths, several top cells or (when ``allowed`` is given) a layer
    outside it (read_library)."""
    return flat_rects(read_library(path, allowed))


def custom_layers(pdk: Pdk) -> tuple[Layer, Layer]:
    """(via, top_metal) GDS layer/datatype pairs of a mask-capable PDK."""
    if pdk.layers is None:
        raise MaskError(f"PDK {pdk.name!r} has no mask layers")
    v, m = pdk.layers.via, pdk.layers.top_metal
    return (v.gds_layer, v.gds_datatype), (m.gds_layer, m.gds_datatype)


def mask_layers(pdk: Pdk) -> set[Layer]:
    """Every layer a taalasc die file may hold: the two custom layers, the top metal's fill
    and the die boundary."""
    fill, boundary = pdk.layers.top_metal_fill, pdk.layers.boundary
    return set(custom_layers(pdk)) | {(fill.gds_layer, fill.gds_datatype),
                                      (boundary.gds_layer, boundary.gds_datatype)}


def read_vias(path: Path, pdk: Pdk) -> np.ndarray:
    """Via centres (int64 [n, 2] nm, sorted by x then y) of a mask file (see iter_vias)."""
    parts = list(iter_vias(path, pdk))
    centres = np.concatenate(parts) // 2 if parts else np.zeros((0, 2), np.int64)
    return centres[np.lexsort((centres[:, 1], centres[:, 0]))]


def iter_vias(path: Path, pdk: Pdk, instances: bool = False):
    """Doubled via centres ``(x0 + x1, y0 + y1)`` (int64 [n, 2] nm, exact for any via size)
    of a mask file, in pieces; with ``instances``, small-cell placements may come as
    gdsflat.Instances instead (see gdsflat.iter_layer).

    Layer-checked: only the PDK's mask layers may appear, and every via must be a
    ``via_size_nm`` square. Both formats go through our own readers (read_library).
    """
    via, _ = custom_layers(pdk)
    size = pdk.rules.via_size_nm
    lib = read_library(path, mask_layers(pdk))
    check_square(lib, via, size, f"{pdk.name} vias are {size} x {size} nm")
    yield from iter_layer(lib, via, centres=True, instances=instances)


def read_layer_rects(path: Path, pdk: Pdk, layer: Layer) -> np.ndarray:
    """Every rectangle of one of the PDK's mask layers in a mask file, flattened, int64
    [n, 4] nm (see read_library)."""
    parts = list(iter_layer(read_library(path, mask_layers(pdk)), layer))
    return np.concatenate(parts) if parts else _EMPTY


def decode_tile_bits(via_centres: np.ndarray, base: BaseArray, column: int, row: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits of every site of tile (column, row) from via centres (int64 [n, 2] nm).

    Returns ``(digits, opens, shorts)``: digits uint8 [sites] (0 where undecidable), and the
    site indices with no via where the encoding needs one (open) and with vias on two lines
    (short). Vias outside the tile are ignored; a via inside it that sits on no slot raises
    MaskError. (SiteDecoder for one tile.)
    """
    from types import SimpleNamespace

    decoder = SiteDecoder(base, [(SimpleNamespace(column=column, row=row), None)])
    decoder.add(2 * np.asarray(via_centres, dtype=np.int64).reshape(-1, 2))
    digits, opens, shorts = site_digits(decoder.counts()[0], base.weight_tile)
    return digits, np.flatnonzero(opens), np.flatnonzero(shorts)


def site_digits(counts: np.ndarray, tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(digits, open, short) from via counts per line [..., lines_per_site] of sites.

    A site whose vias sit on one line holds that line's digit (``WeightTile.line_of_value``
    inverted); vias on two or more lines are a short (digit 0). No via is an open, except
    for zero-skip, where no via is the digit 0: there a missing via cannot be told from a 0
    by the geometry alone (extraction checks each tile's via count against the manifest)."""
    digits, lines = site_lines(counts, tile)
    return digits, site_opens(lines, tile), lines > 1


def site_opens(lines: np.ndarray, tile) -> np.ndarray:
    """Sites with no via where the encoding needs one (all but zero-skip, whose 0 has none),
    from ``site_lines``' line counts."""
    if -1 in tile.line_of_value:
        return np.zeros(lines.shape, bool)
    return lines == 0


def site_lines(counts: np.ndarray, tile) -> tuple[np.ndarray, np.ndarray]:
    """(digits, lines): per site the digit of the one line its vias sit on (0 unless exactly
    one), and how many of its lines carry a via, both uint8. ``counts``: vias per line
    [..., lines_per_site], or whether there is one (bool, SiteDecoder.presence). A die has
    ~10^8 of them: this reads them once and works a line at a time on bytes (numpy's
    argmax and sum over a last axis of 2 to 4 took seconds a die)."""
    value_of_line = np.zeros(tile.lines_per_site, np.uint8)
    for value, line in enumerate(tile.line_of_value):
        if line >= 0:
            value_of_line[line] = value
    present = (counts if counts.dtype == bool else counts != 0).view(np.uint8)
    lines = np.zeros(counts.shape[:-1], np.uint8)
    digits = np.zeros(counts.shape[:-1], np.uint8)
    for line, value in enumerate(value_of_line.tolist()):
        on = present[..., line]
        lines += on
        if value:
            digits += on * np.uint8(value)
    digits[lines != 1] = 0
    return digits, lines


class SiteDecoder:
    """Via counts per (used tile, site, line) of one die, accumulated batch by batch.

    ``assignments`` are (slot, ...) pairs whose slot has ``column`` and ``row``: the used
    tiles, in the order ``counts`` returns them. Vias outside every used tile are counted in
    ``outside``; a via inside one but on no bit slot is a MaskError."""

    def __init__(self, base: BaseArray, assignments):
        grid, tile = base.tile_grid, base.weight_tile
        self.grid, self.tile, self.tol, self.pdk = grid, tile, base.pdk.grid_nm, base.pdk
        # Used-tile index of each grid tile, -1 where unused; one extra entry for "off grid".
        self.slot_of_flat = np.full(grid.rows * grid.columns + 1, -1, np.int64)
        for k, (slot, _) in enumerate(assignments):
            self.slot_of_flat[slot.row * grid.columns + slot.column] = k
        self.slots = len(assignments)
        self.keys: list[np.ndarray] = []
        self.tie_keys: list[np.ndarray] = []
        self.outside = 0
        self.vias = 0
        self._local = None
        self.slot_x0 = tile.slot_x_nm(0)
        self.lines = tile.lines_per_site
        # line l of a site row is centred at line_y0 + l * line_pitch (WeightTile.line_y_nm)
        self.line_y0 = tile.line_y_nm(0, 0)
        self.line_pitch = tile.site_pitch_y_nm // self.lines
        # Instances placed at a site index divisible by 8 are kept as their cell's bytes of
        # 8 sites (byte index, one pattern byte per line): a reticle die's ~4 M chunk
        # instances are 4 M bytes instead of ~35 M via keys.
        self.packing = tile.sites_x % 8 == 0
        self.packed_index: list[np.ndarray] = []
        self.packed_pattern: list[np.ndarray] = []
        self.packed_vias = np.zeros(self.slots, np.int64)

    def _line(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(line index, on a line centre within a grid step) of site-row-relative y."""
        line = (dy - self.line_y0 + self.line_pitch // 2) // self.line_pitch
        on = (np.abs(dy - self.line_y0 - line * self.line_pitch) <= self.tol) \
            & (line >= 0) & (line < self.lines)
        return line, on

    def read(self, path: Path) -> None:
        """Every via of a die file (iter_vias), small-cell instances gathered into batches of
        about INSTANCE_BATCH: a reticle die's top places ~2,000 tiles of ~2,000 instances
        each, and one call per tile would spend its time in numpy's per-call overhead."""
        pending: list = []
        size = 0
        for piece in iter_vias(Path(path), self.pdk, instances=True):
            if isinstance(piece, np.ndarray):
                self.add(piece)
                continue
            if pending and piece.memo is not pending[0].memo:
                self._add_batch(pending)
                pending, size = [], 0
            pending.append(piece)
            size += len(piece.child)
            if size >= INSTANCE_BATCH:
                self._add_batch(pending)
                pending, size = [], 0
        if pending:
            self._add_batch(pending)

    def _add_batch(self, pieces: list) -> None:
        if len(pieces) == 1:
            return self.add_instances(pieces[0])
        self.add_instances(Instances(np.concatenate([p.child for p in pieces]),
                                     np.concatenate([p.origin for p in pieces]),
                                     pieces[0].memo))

    def add_instances(self, inst) -> None:
        """Vias of small-cell instances (gdsflat.Instances), decoded per instance where that
        is exact: the instance's origin sits on the site grid of a used tile and the
        cell's vias, all on bit slots relative to it, stay inside that tile. Then site =
        the origin's site + the via's site in the cell, and the line is the via's own. Any
        other instance is expanded to its vias and decoded one by one (``add``)."""
        memo, child = inst.memo, inst.child
        if not len(child):
            return
        grid, tile = self.grid, self.tile
        local = self._local_tables(memo, child)
        rel_x = inst.origin[:, 0] - grid.origin_nm[0]
        rel_y = inst.origin[:, 1] - grid.origin_nm[1]
        column, row = rel_x // grid.pitch_x_nm, rel_y // grid.pitch_y_nm
        ox, oy = rel_x - column * grid.pitch_x_nm, rel_y - row * grid.pitch_y_nm
        on_grid = (column >= 0) & (row >= 0) & (column < grid.columns) & (row < grid.rows)
        slot = self.slot_of_flat[np.where(on_grid, row * grid.columns + column,
                                          grid.rows * grid.columns)]
        px, py = tile.site_pitch_x_nm, tile.site_pitch_y_nm
        box = self._box[child]  # [n, 4]: cell-relative via x/y min and max; clean flag below
        fast = ((slot >= 0) & self._clean[child] & (ox % px == 0) & (oy % py == 0)
                & (ox + box[:, 0] >= 0) & (ox + box[:, 1] < tile.sites_x * px)
                & (oy + box[:, 2] >= 0) & (oy + box[:, 3] < tile.height_nm))
        n = memo.size[child]
        if not fast.all():  # add() counts these vias itself
            slow = ~fast
            shapes = memo.table[ragged(memo.start[child[slow]], n[slow])]
            self.add(shapes + 2 * np.repeat(inst.origin[slow], n[slow], axis=0))
            child, n, slot, ox, oy = child[fast], n[fast], slot[fast], ox[fast], oy[fast]
        self.vias += int(n.sum())
        base = slot * tile.sites + (oy // py) * tile.sites_x + ox // px
        if self.packing:
            byte = ((ox // px) % 8 == 0) & self._byte_ok[child]
            if byte.any():
                self._add_bytes(base[byte], child[byte], slot[byte], n[byte])
                keep = ~byte
                child, n, base = child[keep], n[keep], base[keep]
                if not len(child):
                    return
        starts = memo.start[child]
        site, line = local
        lines = self.lines
        if len(n) and n.min() == n.max():
            idx = starts[:, None] + np.arange(n[0], dtype=np.int64)
            keys = (base[:, None] + site[idx]) * lines + line[idx]
        else:
            idx = ragged(starts, n)
            keys = (np.repeat(base, n) + site[idx]) * lines + line[idx]
        self.keys.append(keys.reshape(-1))

    def _add_bytes(self, base: np.ndarray, child: np.ndarray, slot: np.ndarray,
                   n: np.ndarray) -> None:
        """Instances whose origin site ``base`` is divisible by 8, as (byte index, pattern):
        their cell's bytes (``_local_tables``) moved to the origin's byte."""
        sizes = self._byte_size[child]
        idx = ragged(self._byte_start[child], sizes)
        self.packed_index.append(np.repeat(base >> 3, sizes) + self._byte_table[0][idx])
        self.packed_pattern.append(self._byte_table[1][idx])
        self.packed_vias += np.bincount(slot, weights=n, minlength=self.slots).astype(np.int64)

    def _local_tables(self, memo, kids: np.ndarray):
        """Per memo row: the via's site offset and line relative to its cell's origin; per
        cell: whether every via is on a bit slot, and the vias' x/y range (cached)."""
        tile = self.tile
        if self._local is None or len(self._local[0]) != memo.length:
            c = memo.table >> 1
            px, py = tile.site_pitch_x_nm, tile.site_pitch_y_nm
            i, j = c[:, 0] // px, c[:, 1] // py
            line, on_line = self._line(c[:, 1] - j * py)
            on = (np.abs(c[:, 0] - i * px - self.slot_x0) <= self.tol) & on_line \
                & (i < tile.sites_x)   # the tie column's vias are decoded by add()
            self._local = (j * tile.sites_x + i, np.where(on_line, line, 0).astype(np.int64))
            self._local_on, self._local_c = on, c
            self._box = np.zeros((len(memo.start), 4), np.int64)
            self._clean = np.zeros(len(memo.start), bool)
            self._boxed = np.zeros(len(memo.start), bool)
            self._byte_start = np.zeros(len(memo.start), np.int64)
            self._byte_size = np.zeros(len(memo.start), np.int64)
            self._byte_ok = np.zeros(len(memo.start), bool)
            self._byte_parts: list = []
            self._byte_table = (np.zeros(0, np.int64), np.zeros((0, self.lines), np.uint8))
        site, line = self._local
        end = len(self._byte_table[0])   # where the next cell's bytes go in the table
        for k in np.unique(kids[~self._boxed[kids]]).tolist():
            lo, size = int(memo.start[k]), int(memo.size[k])
            c = self._local_c[lo:lo + size]
            if size:
                self._box[k] = (c[:, 0].min(), c[:, 0].max(), c[:, 1].min(), c[:, 1].max())
            self._clean[k] = bool(self._local_on[lo:lo + size].all())
            self._boxed[k] = True
            s = site[lo:lo + size]
            if self.packing and self._clean[k] and size \
                    and len(np.unique(s * self.lines + line[lo:lo + size])) == size:
                # the cell's vias as bytes of 8 sites (floor division: a byte may lie below
                # the origin's) with one pattern bit per (site, line): a chunk cell is one
                # byte, a tile cell one per 8 sites. Not for a cell with two vias on one
                # (site, line), which a bit cannot count (``counts`` counts every via).
                offset, inverse = np.unique(s >> 3, return_inverse=True)
                pattern = np.zeros((len(offset), self.lines), np.uint8)
                np.bitwise_or.at(pattern, (inverse, line[lo:lo + size]),
                                 (1 << (s & 7)).astype(np.uint8))
                self._byte_start[k], self._byte_size[k] = end, len(offset)
                end += len(offset)
                self._byte_parts.append((offset, pattern))
                self._byte_ok[k] = True
        if self._byte_parts:   # appended to the table once per call
            parts, self._byte_parts = self._byte_parts, []
            self._byte_table = (np.concatenate([self._byte_table[0]] + [o for o, _ in parts]),
                                np.concatenate([self._byte_table[1]] + [p for _, p in parts]))
        return self._local

    def add(self, centres2: np.ndarray) -> None:
        grid, tile = self.grid, self.tile
        self.vias += len(centres2)
        # int32 halves the memory traffic when the coordinates allow it (a die always does).
        small = len(centres2) and -(1 << 31) < centres2.min() and centres2.max() < (1 << 31)
        c = (centres2 >> 1).astype(np.int32 if small else np.int64)
        x = c[:, 0] - np.int32(grid.origin_nm[0])
        y = c[:, 1] - np.int32(grid.origin_nm[1])
        column, row = x // grid.pitch_x_nm, y // grid.pitch_y_nm
        x -= column * grid.pitch_x_nm  # now tile-relative
        y -= row * grid.pitch_y_nm
        on_grid = (column >= 0) & (row >= 0) & (column < grid.columns) & (row < grid.rows)
        tile_index = np.where(on_grid, row * grid.columns + column, grid.rows * grid.columns)
        slot = self.slot_of_flat[tile_index]
        slot[(x >= tile.width_nm) | (y >= tile.height_nm)] = -1
        used = slot >= 0
        n_used = int(used.sum())
        self.outside += len(x) - n_used
        if n_used < len(x):
            x, y, slot, column, row = x[used], y[used], slot[used], column[used], row[used]
        px, py = tile.site_pitch_x_nm, tile.site_pitch_y_nm
        i, j = x // px, y // py
        # Slot centres are floored to the grid by at most half a grid step; allow a grid step.
        on_x = np.abs(x - i * px - self.slot_x0) <= self.tol
        line, on_line = self._line(y - j * py)
        stray = ~(on_x & on_line)
        line = line.astype(np.int64)
        tie = i >= tile.sites_x
        if tie.any():   # strap ties: counted per (tile, site row, line), checked by counts()
            t = tie & ~stray
            self.tie_keys.append((slot[t].astype(np.int64) * tile.sites_y + j[t]) * self.lines
                                 + line[t])
            keep = ~t
            x, y, slot, column, row = x[keep], y[keep], slot[keep], column[keep], row[keep]
            i, j, line, stray = i[keep], j[keep], line[keep], stray[keep]
        if stray.any():
            k = int(np.flatnonzero(stray)[0])
            col, rw = int(column[k]), int(row[k])
            ox, oy = self.grid.tile_origin_nm(col, rw)
            raise MaskError(f"tile ({col}, {rw}): via at ({int(x[k]) + ox}, {int(y[k]) + oy}) nm "
                            f"is on no bit slot ({int(stray.sum())} such vias)")
        site = (j * tile.sites_x + i).astype(np.int64)
        self.keys.append((slot * tile.sites + site) * self.lines + line)

    def tie_counts(self) -> np.ndarray:
        """Tie vias per [used tile, site row, line]."""
        keys, self.tie_keys = self.tie_keys, []
        return self._per_line(keys, self.tile.sites_y)

    def presence(self, per_tile: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Whether each [used tile, site, line] has a via (bool), and with ``per_tile`` the
        bit vias of each used tile: what extraction needs, without ``counts``' ~10^8 int64s
        a full die (a second via on the same line is no different to the digit)."""
        keys, self.keys = self.keys, []
        lines, sites = self.lines, self.slots * self.tile.sites
        per_line = self.tile.sites * lines
        # line-major, so that each line's [tile, site] plane is contiguous (site_lines)
        present = np.zeros((lines, sites), bool)
        vias = self.packed_vias.copy() if per_tile else None
        for k in keys:
            present[k % lines, k // lines] = True
            if vias is not None:
                vias += np.bincount(k // per_line, minlength=self.slots)
        if self.packed_index:
            index, pattern = self._packed()
            # The same byte placed twice ORs its bits (two patterns there are a short).
            twice = len(index) and np.bincount(index, minlength=sites // 8).max() > 1
            for ln in range(lines):
                plane = np.zeros(sites // 8, np.uint8)
                if twice:
                    np.bitwise_or.at(plane, index, pattern[:, ln])
                else:
                    plane[index] = pattern[:, ln]
                present[ln] |= np.unpackbits(plane, bitorder="little").view(bool)
        return np.moveaxis(present.reshape(lines, self.slots, self.tile.sites), 0, -1), vias

    def _packed(self) -> tuple[np.ndarray, np.ndarray]:
        index, pattern = np.concatenate(self.packed_index), np.concatenate(self.packed_pattern)
        self.packed_index, self.packed_pattern = [], []
        return index, pattern

    def _packed_keys(self) -> None:
        """The packed instances as via keys again (``counts`` counts every via)."""
        if not self.packed_index:
            return
        index, pattern = self._packed()
        for ln in range(self.lines):
            for bit in range(8):
                on = (pattern[:, ln] >> bit) & 1 == 1
                self.keys.append((index[on] * 8 + bit) * self.lines + ln)

    def counts(self) -> np.ndarray:
        """Vias per [used tile, site, line] (tie-high-low: line 0 high strap, 1 low)."""
        self._packed_keys()
        keys, self.keys = self.keys, []
        return self._per_line(keys, self.tile.sites)

    def _per_line(self, keys: list[np.ndarray], per_tile: int) -> np.ndarray:
        """Keys ``(tile * per_tile + k) * lines + line`` counted into [tile, k, line]."""
        keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        n = np.bincount(keys, minlength=self.slots * per_tile * self.lines)
        return n.reshape(self.slots, per_tile, self.lines)
