"""Two by two tile base arrays (sky130, IHP, GF180MCU) and a custom die drawn on one, for
the base-die tests."""

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


# IHP: 3.54 um sites (TopMetal1 landings 1.64 um apart), 2 um straps; GF180MCU: 0.62 um
# sites, two tie columns (the base's rails under them). Frames and channels as the real
# chips (base_array/ihp-sg13g2-chip.yaml, gf180mcu-chip.yaml), grids just clear of them.
TINY_IHP_YAML = """\
name: ihp-tiny
description: two by two IHP SG13G2 tiles of 16 x 8 bit sites, for base-die tests
pdk: ihp-sg13g2
max_dies: 1
die: {width_nm: 330000, height_nm: 330000}
frame: {seal_ring_nm: 10000, pad_ring_nm: 50000}
tile_grid: {origin_nm: [80000, 80000], columns: 2, rows: 2, pitch_x_nm: 73100, pitch_y_nm: 78000}
weight_tile:
  encoding: tie-high-low
  sites_x: 16
  sites_y: 8
  site_pitch_x_nm: 3540
  site_pitch_y_nm: 8000
  slots_per_bit: 2
  bits_per_site: 1
  strap_width_nm: 2000
  input_lanes: 16
  max_weight_bits: 8
datapath: {activation_bits: 8, accumulator_bits: 24, activity_factor: 0.15,
           route_width_nm: 2000, route_bus_bits: 16}
clock: {target_period_ps: 10000, pipeline_stages_per_layer: 4}
sram:
  - {name: kv0, purpose: kv_cache, capacity_bytes: 1024}
"""

TINY_GF180_YAML = """\
name: gf180-tiny
description: two by two GF180MCU tiles of 32 x 16 bit sites, for base-die tests
pdk: gf180mcu
max_dies: 1
die: {width_nm: 130000, height_nm: 140000}
frame: {seal_ring_nm: 10000, pad_ring_nm: 15000}
tile_grid: {origin_nm: [35000, 35000], columns: 2, rows: 2, pitch_x_nm: 25060, pitch_y_nm: 32800}
weight_tile:
  encoding: tie-high-low
  sites_x: 32
  sites_y: 16
  site_pitch_x_nm: 620
  site_pitch_y_nm: 1800
  slots_per_bit: 2
  bits_per_site: 1
  strap_width_nm: 440
  input_lanes: 32
  max_weight_bits: 8
  tie_columns: 2
datapath: {activation_bits: 8, accumulator_bits: 24, activity_factor: 0.15,
           route_width_nm: 440, route_bus_bits: 16}
clock: {target_period_ps: 10000, pipeline_stages_per_layer: 4}
sram:
  - {name: kv0, purpose: kv_cache, capacity_bytes: 16}
"""

YAMLS = {"sky130": TINY_YAML, "ihp-sg13g2": TINY_IHP_YAML, "gf180mcu": TINY_GF180_YAML}


def tiny_base(folder: Path, pdk: str = "sky130"):
    from taalasc.config import load_base_array

    path = Path(folder) / f"{pdk}-tiny.yaml"
    path.write_text(YAMLS[pdk])
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
