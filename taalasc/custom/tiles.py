"""Render one programmed tile to the bytes of its cell, per format (pure and picklable).

``render_tile`` is what worker processes run; ``DieMaskWriter.add_rendered`` merges the result
in the parent. A tile cell is one ``STRAPS`` reference plus one chunk reference per chunk of
up to ``WeightTile.chunk_sites`` sites (see geometry.py); the chunk cells themselves are written by the
die writer on first use. Chunk and fixed cells have fixed OASIS reference numbers, so a tile's
bytes do not depend on which other tiles came before it. A tile cell's name and its STRAPS
reference start with the die's prefix (names.py), so a tile is rendered for one die file;
chunk cells are named by content (names.chunk_name with the base array's chunk_tag).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from taalasc.config.base_array import BaseArray, WeightTile
from taalasc.formats import gdsii, oasis
from taalasc.custom import names
from taalasc.custom.geometry import chunk_via_rects
from taalasc.custom.names import STRAPS, chunk_name, tile_name
from taalasc.errors import MaskError

# OASIS reference numbers, all two-byte varints (128..16383) so a tile's records have a fixed
# layout. A chunk is numbered by its pattern: nb = sites x site_bits bits (at most
# CHUNK_BITS) and the value; 8-bit patterns are 128 + value, shorter ones follow, then the
# fixed cells; tile cells are numbered by the die writer from FIRST_TILE_REFNUM in order of
# arrival.
CHUNK_BITS = 8
FULL_BASE = 128
SHORT_BASE = FULL_BASE + (1 << CHUNK_BITS)
STRAPS_REFNUM = SHORT_BASE + (1 << CHUNK_BITS) - 2
FILLSQ_REFNUM, FILL_REFNUM, DIE_REFNUM = STRAPS_REFNUM + 1, STRAPS_REFNUM + 2, STRAPS_REFNUM + 3
TIES_REFNUM = STRAPS_REFNUM + 4
FIRST_TILE_REFNUM = STRAPS_REFNUM + 5


def chunk_refnum(nb, value):
    """Fixed reference number of the chunk cell of pattern ``value`` of ``nb`` bits (its
    sites' digits, site 0 lowest); numpy-friendly."""
    if isinstance(nb, np.ndarray):
        return np.where(nb == CHUNK_BITS, FULL_BASE + value, SHORT_BASE + (1 << nb) - 2 + value)
    return FULL_BASE + value if nb == CHUNK_BITS else SHORT_BASE + (1 << nb) - 2 + value


def chunk_of_refnum(refnum: int) -> tuple[int, int]:
    """(nb pattern bits, value) of a chunk reference number."""
    if refnum < SHORT_BASE:
        return CHUNK_BITS, refnum - FULL_BASE
    k = refnum - SHORT_BASE + 2
    n = k.bit_length() - 1
    return n, k - (1 << n)


def chunk_tag(base: BaseArray) -> str:
    """The geometry tag in the names of ``base``'s chunk cells (names.chunk_tag)."""
    pdk = base.pdk
    if pdk.layers is None:
        raise MaskError(f"PDK {pdk.name!r} has no public mask layers (mask_capable is false)")
    via = pdk.layers.via
    return _chunk_tag(base.weight_tile, pdk.rules.via_size_nm, pdk.grid_nm,
                      (via.gds_layer, via.gds_datatype))


@functools.lru_cache(maxsize=16)
def _chunk_tag(tile: WeightTile, via_nm: int, grid_nm: int, layer: tuple[int, int]) -> str:
    # Every via a chunk cell can hold: the slots of chunk_sites sites on the line of digit 0,
    # then of digit 1, ... (tie-high-low: the low strap, then the high one); a chunk of n
    # sites holds n of them at most (geometry.chunk_via_rects).
    n, d = tile.chunk_sites, tile.site_bits
    every = [chunk_via_rects(tile, via_nm, grid_nm, n, sum(v << (d * i) for i in range(n)))
             for v, line in enumerate(tile.line_of_value) if line >= 0]
    return names.chunk_tag(np.concatenate(every), layer)


@dataclass(frozen=True)
class RenderedTile:
    """A tile cell's bytes per format; ``chunks`` are the chunk reference numbers it uses."""
    name: str
    via_count: int
    data: dict[str, bytes]
    chunks: tuple[int, ...]


def check_sites(sites, tile: WeightTile, where: str = "tile") -> np.ndarray:
    """A tile's site digits as uint8 (one per used site, each a value ``line_of_value`` can
    draw), or MaskError saying what is wrong (``where`` prefixes it)."""
    sites = np.asarray(sites)
    if sites.ndim != 1 or not 0 < sites.size <= tile.sites:
        raise MaskError(f"{where} sites must be a 1-D array of 1..{tile.sites} digits, "
                        f"not shape {list(sites.shape)}")
    if sites.dtype != np.uint8:
        if sites.dtype.kind not in "biu":
            raise MaskError(f"{where} sites must be integer digits, not dtype {sites.dtype}")
        sites = sites.astype(np.uint8)
    # Per tile on the compile's hot path: a max, and a table look-up only where some digit
    # below 2**site_bits has no line (ternary's 2, the code -2).
    table = _line_table(tile)
    if sites.max() >> tile.site_bits or (table[:1 << tile.site_bits] == -2).any():
        bad = table[sites] == -2
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise MaskError(f"{where} site {k}: digit {int(sites[k])} cannot be stored by "
                            f"encoding {tile.encoding!r} (digits {_storable(tile)})")
    return sites


@functools.lru_cache(maxsize=16)
def _line_table(tile: WeightTile) -> np.ndarray:
    """``line_of_value`` for every uint8 digit: -2 beyond 2**site_bits (read-only)."""
    table = np.full(256, -2, np.int16)
    table[:len(tile.line_of_value)] = tile.line_of_value
    table.setflags(write=False)
    return table


def _storable(tile: WeightTile) -> str:
    return ", ".join(str(v) for v, line in enumerate(tile.line_of_value) if line != -2)


def via_count(sites: np.ndarray, tile: WeightTile) -> int:
    """Vias a tile's digits draw: one per site, but none for a digit without a line (the
    zero-skip 0)."""
    if -1 not in tile.line_of_value:
        return int(sites.size)
    return int(np.count_nonzero(_line_table(tile)[sites] >= 0))


def tile_chunk_array(sites: np.ndarray, tile: WeightTile) -> np.ndarray:
    """Chunks of a tile as int64 [k, 4]: site column, site row, pattern bits nb (n sites x
    site_bits), value (digit i of the chunk in bits i*d .. i*d + d - 1), row-major."""
    sx, used, cs, d = tile.sites_x, len(sites), tile.chunk_sites, tile.site_bits
    rows = -(-used // sx)
    per_row = -(-sx // cs)
    grid = np.zeros((rows, per_row * cs), np.int64)
    padded = np.zeros(rows * sx, np.int64)
    padded[:used] = sites
    grid[:, :sx] = padded.reshape(rows, sx)
    weights = np.int64(1) << (d * np.arange(cs, dtype=np.int64))
    values = (grid.reshape(rows, per_row, cs) * weights).sum(axis=2)
    row_len = np.full(rows, sx, np.int64)
    row_len[-1] = used - (rows - 1) * sx
    start = np.arange(per_row, dtype=np.int64) * cs
    n = np.minimum(cs, row_len[:, None] - start[None, :])
    keep = n > 0
    j, c = np.nonzero(keep)
    return np.stack([start[c], j, n[keep] * d, values[keep]], axis=1)


def _packs(tile: WeightTile) -> bool:
    """Chunk k is byte k of the digits' bit stream: whole-byte chunks (site_bits 1, 2 or 4)
    and rows of whole chunks."""
    return CHUNK_BITS % tile.site_bits == 0 and tile.sites_x % tile.chunk_sites == 0


def _packed_values(stack: np.ndarray, tile: WeightTile) -> np.ndarray:
    """Chunk values of tiles that ``_packs``: one packbits over the digits' bits (the last
    chunk of a partly used tile is its digits' bits, zero-padded)."""
    d = tile.site_bits
    if d == 1:
        return np.packbits(stack, axis=-1, bitorder="little")
    bits = np.unpackbits(stack[..., None], axis=-1, bitorder="little")[..., :d]
    return np.packbits(bits.reshape(*stack.shape[:-1], -1), axis=-1, bitorder="little")


@dataclass(frozen=True)
class _Template:
    """A tile cell's bytes for a given number of used sites, all chunk values zero, and where
    the value-dependent bytes go: GDS name hex digits, OASIS reference-number varints."""
    gds: np.ndarray
    digit_pos: np.ndarray    # byte offsets of the hex digits of the chunk names
    digit_chunk: np.ndarray  # ... which chunk each digit belongs to
    digit_shift: np.ndarray  # ... and which 4 bits of its value it shows
    oas: np.ndarray
    oas_ref: np.ndarray      # [k] byte offset of each placement's 2-byte reference number
    ref_base: np.ndarray     # [k] chunk reference number = ref_base + value
    packed: bool             # chunks are consecutive bytes of the digits (_packed_values)
    digit_stride: int = 0    # > 0: every chunk shows 2 digits at digit_pos[0] + k * stride


_GDS_NAME = 32  # BGNSTR (28 bytes) + STRNAME header (4), then the tile cell's name
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@functools.lru_cache(maxsize=16)
def _template(tile: WeightTile, used: int, prefix: str, tag: str) -> _Template:
    chunks = tile_chunk_array(np.zeros(used, np.uint8), tile)
    n = chunks[:, 2]   # pattern bits
    x = chunks[:, 0] * tile.site_pitch_x_nm
    y = chunks[:, 1] * tile.site_pitch_y_nm
    k = len(n)
    # GDS: SREF(4) SNAME(4 + name padded to even) XY(12) ENDEL(4), after BGNSTR+STRNAME+STRAPS;
    # the tile's name (the same length as names.tile_name's) is written over the zeros.
    chunk_names = [chunk_name(int(m), 0, tag) for m in n]
    table, lengths = gdsii.name_table(chunk_names, gdsii.SREF_HEAD)
    idx = np.arange(k)
    body = gdsii.srefs(table, lengths, idx, np.stack([x, y], axis=1))
    head = gdsii.begin_cell(prefix + "T" + "0" * 16) + gdsii.sref(prefix + STRAPS, 0, 0)
    gds = np.concatenate([np.frombuffer(head, np.uint8), body,
                          np.frombuffer(gdsii.end_cell(), np.uint8)])
    starts = len(head) + np.cumsum(lengths + 16) - (lengths + 16)
    ndig = (n + 3) // 4
    digit_chunk = np.repeat(idx, ndig)
    rank = np.arange(len(digit_chunk)) - np.repeat(np.cumsum(ndig) - ndig, ndig)
    first_digit = 8 + 2   # SREF, SNAME headers; "V{n}" is 2 characters
    digit_pos = starts[digit_chunk] + first_digit + rank
    digit_shift = 4 * (ndig[digit_chunk] - 1 - rank)
    # OASIS: XYRELATIVE, STRAPS placement, then one placement per chunk (relative steps).
    oas_head = oasis.XY_RELATIVE + b"\x11\xc0" + oasis.uint(STRAPS_REFNUM)
    recs = _oas_placements(chunk_refnum(n, np.zeros(k, np.int64)), x, y)
    rec_len = _oas_record_lengths(x, y)
    oas = np.concatenate([np.frombuffer(oas_head, np.uint8), recs])
    oas_ref = len(oas_head) + np.cumsum(rec_len) - rec_len + 2
    stride = int(starts[1] - starts[0]) if k > 1 else 0
    regular = (k > 1 and bool((ndig == 2).all()) and stride > 0
               and np.array_equal(digit_pos, (starts[0] + first_digit + stride * idx[:, None]
                                              + np.array([0, 1])).ravel()))
    return _Template(gds, digit_pos, digit_chunk, digit_shift, oas, oas_ref,
                     chunk_refnum(n, np.zeros(k, np.int64)), _packs(tile),
                     stride if regular else 0)


# The two hex digits of a byte value, high nibble first (as chunk_name writes them).
_HEX_PAIRS = np.stack([_HEX[np.arange(256) >> 4], _HEX[np.arange(256) & 15]], axis=1)


def render_tile(base: BaseArray, sites, formats=("gds", "oas"), where: str = "tile", *,
                prefix: str) -> RenderedTile:
    """Render one tile's cell (named ``prefix`` + names.tile_name(sites)) for each format;
    no file access. ``sites``: a digit per used site (tie-high-low: the bits); ``prefix``:
    the die's (names.die_prefix).

    Pure and picklable, so worker processes can run it; the bytes depend only on ``sites``,
    the base array, ``prefix`` and ``formats``. ``where`` prefixes error messages.
    """
    tile = base.weight_tile
    sites = check_sites(sites, tile, where)
    name = prefix + tile_name(sites)
    t = _template(tile, int(sites.size), prefix, chunk_tag(base))
    if t.packed:  # chunk k is byte k of the digits' bits: one packbits
        values = _packed_values(sites, tile).astype(np.int64)
    else:
        values = tile_chunk_array(sites, tile)[:, 3]
    refnums = t.ref_base + values
    data: dict[str, bytes] = {}
    for fmt in formats:
        if fmt == "gds":
            buf = t.gds.copy()
            buf[_GDS_NAME:_GDS_NAME + len(name)] = np.frombuffer(name.encode(), np.uint8)
            buf[t.digit_pos] = _HEX[(values[t.digit_chunk] >> t.digit_shift) & 15]
            data[fmt] = buf.tobytes()
        elif fmt == "oas":
            buf = t.oas.copy()
            buf[t.oas_ref] = (refnums & 0x7F) | 0x80
            buf[t.oas_ref + 1] = refnums >> 7
            data[fmt] = oasis.cblock(buf.tobytes())
        else:
            raise MaskError(f"formats must be a subset of gds, oas, not {list(formats)!r}")
    return RenderedTile(name=name, via_count=via_count(sites, tile), data=data,
                        chunks=tuple(np.flatnonzero(np.bincount(refnums)).tolist()))


def render_tiles(base: BaseArray, sites_list, formats=("gds", "oas"), where=None, *,
                 prefix: str) -> list[RenderedTile]:
    """:func:`render_tile` for many tiles at once: the same results, in about half the time
    per tile (tiles with the same number of used sites are filled in as one array). This is
    what a worker process should run on a batch of tiles."""
    tile = base.weight_tile
    for fmt in formats:
        if fmt not in ("gds", "oas"):
            raise MaskError(f"formats must be a subset of gds, oas, not {list(formats)!r}")
    where = where or [f"tile {k}" for k in range(len(sites_list))]
    checked = [check_sites(b, tile, w) for b, w in zip(sites_list, where)]
    out: list[RenderedTile | None] = [None] * len(checked)
    groups: dict[int, list[int]] = {}
    for k, b in enumerate(checked):
        groups.setdefault(b.size, []).append(k)
    for used, members in groups.items():
        t = _template(tile, used, prefix, chunk_tag(base))
        stack = np.stack([checked[k] for k in members])
        small = None
        if t.packed:  # chunk k is byte k of the digits' bits: one packbits
            small = _packed_values(stack, tile)
            values = small.astype(np.int64)
        else:
            values = np.stack([tile_chunk_array(b, tile)[:, 3] for b in stack])
        refnums = t.ref_base[None, :] + values
        data: dict[str, np.ndarray] = {}
        if "gds" in formats:
            buf = np.repeat(t.gds[None, :], len(members), axis=0)
            if t.digit_stride and small is not None:  # a strided view: no index arrays
                k = small.shape[1]
                digits = np.lib.stride_tricks.as_strided(
                    buf[:, t.digit_pos[0]:], shape=(len(members), k, 2),
                    strides=(buf.strides[0], t.digit_stride, 1), writeable=True)
                digits[...] = np.take(_HEX_PAIRS, small, axis=0)
            else:
                buf[:, t.digit_pos] = _HEX[(values[:, t.digit_chunk] >> t.digit_shift) & 15]
            data["gds"] = buf
        if "oas" in formats:
            buf = np.repeat(t.oas[None, :], len(members), axis=0)
            buf[:, t.oas_ref] = (refnums & 0x7F) | 0x80
            buf[:, t.oas_ref + 1] = refnums >> 7
            data["oas"] = buf
        used_refs = np.zeros((len(members), STRAPS_REFNUM), bool)
        used_refs[np.arange(len(members))[:, None], refnums] = True
        for row, k in enumerate(members):
            name = prefix + tile_name(checked[k])
            rendered = {}
            for fmt in formats:
                if fmt == "gds":
                    rec = data["gds"][row]
                    rec[_GDS_NAME:_GDS_NAME + len(name)] = np.frombuffer(name.encode(), np.uint8)
                    rendered[fmt] = rec.tobytes()
                else:
                    rendered[fmt] = oasis.cblock(data["oas"][row].tobytes())
            out[k] = RenderedTile(name=name, via_count=via_count(checked[k], tile), data=rendered,
                                  chunks=tuple(np.flatnonzero(used_refs[row]).tolist()))
    return out


def _oas_record_lengths(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx, dy = np.diff(x, prepend=0), np.diff(y, prepend=0)
    return 4 + oasis.svarints(dx)[1] * (dx != 0) + oasis.svarints(dy)[1] * (dy != 0)


def _oas_placements(refnums: np.ndarray, x: np.ndarray, y: np.ndarray) -> bytes:
    """Relative-mode PLACEMENTs by reference number; a zero step leaves X or Y out."""
    k = len(refnums)
    dx = np.diff(x, prepend=0)
    dy = np.diff(y, prepend=0)
    head = np.empty((k, 2), np.uint8)
    head[:, 0] = 0x11
    head[:, 1] = 0xC0 | ((dx != 0) * 0x20) | ((dy != 0) * 0x10)
    ref_t, ref_l = oasis.uvarints(refnums)
    dx_t, dx_l = oasis.svarints(dx)
    dy_t, dy_l = oasis.svarints(dy)
    idx = np.arange(k)
    return gdsii.concat_rows([head, (ref_t, ref_l, idx), (dx_t, dx_l * (dx != 0), idx),
                              (dy_t, dy_l * (dy != 0), idx)], k)
