"""A 2 x 2 tile sky130 base array and a custom die drawn on it, for the base-die tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_YAML = """\
name: sky130-tiny
description: two by two sky130 tiles of 32 x 16 bit sites, for base-die tests
pdk: sky130
max_dies: 1
die: {width_nm: 330000, height_nm: 430000}
frame: {seal_ring_nm: 10000, pad_ring_nm: 78000}
tile_grid: {origin_nm: [100000, 100000], columns: 2, rows: 2, pitch_x_nm: 61600, pitch_y_nm: 112800}
weight_tile:
  encoding: tie-high-low
  sites_x: 32
  sites_y: 16
  site_pitch_x_nm: 1600
  site_pitch_y_nm: 6400
  slots_per_bit: 2
  bits_per_site: 1
  strap_width_nm: 1600
  input_lanes: 32
  max_weight_bits: 8
datapath: {activation_bits: 8, accumulator_bits: 24, activity_factor: 0.15,
           route_width_nm: 1600, route_bus_bits: 16}
clock: {target_period_ps: 10000, pipeline_stages_per_layer: 4}
sram:
  - {name: kv0, purpose: kv_cache, capacity_bytes: 1024}
"""


def tiny_base(folder: Path):
    from taalasc.config import load_base_array

    path = Path(folder) / "sky130-tiny.yaml"
    path.write_text(TINY_YAML)
    return load_base_array(path)


def tiny_custom_die(base, folder: Path, seed: int = 1) -> tuple[Path, dict]:
    """The custom layers of one die on ``base``: random bits in every tile, a chain of routes
    through all four tiles (the compile's writer, without a model). Returns the GDSII path
    and the bits by (column, row)."""
    from taalasc.custom.writer import DieMaskWriter
    from test_custom_helpers import TAG

    writer = DieMaskWriter(base, 0, Path(folder), "die0", formats=("gds",), tag=TAG)
    rng = np.random.default_rng(seed)
    order = [(0, 0), (1, 0), (1, 1), (0, 1)]
    bits = {}
    for c, r in order:
        bits[(c, r)] = rng.integers(0, 2, base.weight_tile.capacity_bits).astype(np.uint8)
        writer.add_tile(c, r, bits[(c, r)])
    for a, b in zip(order, order[1:]):
        writer.add_route(a, b)
    writer.close()
    return Path(folder) / "die0.gds", bits
