"""Shared fixtures for the emit tests: a small SKY130 base array (3 x 2 tiles of 16 x 8 sites)."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import replace

import numpy as np

from taalasc.config import load_base_array
from taalasc.config.base_array import Die
from taalasc.custom.names import compile_tag, die_prefix

# The placement helper's TileSlot(die, column, row); a local stand-in until it exists.
TileSlot = namedtuple("TileSlot", "die column row")

# The cell-name tag of the die files these tests write (a compile's comes from its inputs).
TAG = compile_tag("0123abcd" * 8)
PREFIX = die_prefix(TAG, 0)   # die 0's


def small_base():
    """sky130-demo shrunk: 3 x 2 tiles of 16 x 8 sites on a 306 x 325 um die (one window),
    with a 50 um frame (seal ring and pad ring) whose area the fill leaves alone."""
    base = load_base_array("sky130-demo")
    tile = replace(base.weight_tile, sites_x=16, sites_y=8)
    grid = replace(base.tile_grid, columns=3, rows=2, pitch_x_nm=35_200, pitch_y_nm=62_400)
    return replace(base, weight_tile=tile, tile_grid=grid,
                   frame=replace(base.frame, pad_ring_nm=40_000),
                   die=Die(width_nm=100_000 * 2 + 3 * 35_200, height_nm=100_000 * 2 + 2 * 62_400))


def random_bits(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)


def write_small(out_dir, formats=("gds", "oas"), seed=0, routes=True):
    """Program 4 of the 6 tiles (one partially, 37 sites) and route them; return (result, bits)."""
    from taalasc.custom.writer import DieMaskWriter

    base = small_base()
    writer = DieMaskWriter(base, 0, out_dir, "die0", formats=formats, tag=TAG)
    plan = {TileSlot(0, 0, 0): 128, TileSlot(0, 1, 0): 128, TileSlot(0, 1, 1): 37,
            TileSlot(0, 2, 1): 100}
    bits = {}
    for k, (slot, n) in enumerate(plan.items()):
        bits[(slot.column, slot.row)] = random_bits(seed + k, n)
        writer.add_tile(slot.column, slot.row, bits[(slot.column, slot.row)])
    if routes:
        writer.add_route((0, 0), (1, 0))   # east neighbour: one rung
        writer.add_route((1, 0), (1, 1))   # north neighbour
        writer.add_route((1, 1), (2, 1))
        writer.add_route((2, 1), (0, 0))   # far away: a real search through the channels
    return base, writer.close(), bits


def test_oasis_rectangles_leave_out_modal_fields():
    """Layer on the first record only; width / height only when they change."""
    from taalasc.formats.oasis import rectangles

    rects = np.array([[0, 0, 800, 800], [1600, 0, 2400, 800], [3200, 1600, 4000, 3000]])
    assert rectangles(rects, (71, 44)).hex(" ") == (
        "14 7b 47 2c a0 06 a0 06 00 00 "   # id, info WHXYDL, layer, datatype, w, h, x, y
        "14 18 80 19 00 "                  # info XY: x = 1600, y = 0
        "14 38 f8 0a 80 32 80 19")         # info HXY: h = 1400, x = 3200, y = 1600
