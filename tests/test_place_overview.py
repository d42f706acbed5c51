"""The PNG writer and the placement overview, read back by an independent decoder."""

import struct
import zlib

import numpy as np
import pytest

from taalasc.config import load_base_array
from taalasc.place import overview_image, overview_png, plan_placement
from taalasc.place.overview import UNUSED
from taalasc.png import png_bytes
from test_place_plan import llama


def decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for 8-bit RGB, non-interlaced, filter-0 PNGs; checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kind == b"IEND" and pos == len(data)
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_png_round_trip_and_determinism():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(5, 9, 3), dtype=np.uint8)
    data = png_bytes(img)
    np.testing.assert_array_equal(decode_png(data), img)
    assert png_bytes(img.copy()) == data
    with pytest.raises(ValueError, match=r"^image must be a uint8 array"):
        png_bytes(img.astype(np.int16))


def test_overview_png(tmp_path):
    demo = load_base_array("sky130-demo")
    placement = plan_placement(llama(layers=3), demo)
    assert placement.dies == 2
    path = tmp_path / "overview.png"
    legend = overview_png(placement, demo, path)
    img = decode_png(path.read_bytes())
    ref, _ = overview_image(placement, demo)
    np.testing.assert_array_equal(img, ref)
    grid = demo.tile_grid
    height, width, _ = img.shape
    # two dies side by side, each 16 x 16 cells; cells keep the tile pitch ratio (61.6:420)
    cw = (width - 6) // 2 // grid.columns
    ch = height // grid.rows
    assert (cw * grid.columns * 2 + 6, ch * grid.rows) == (width, height)
    assert abs(ch - cw * grid.pitch_y_nm / grid.pitch_x_nm) <= 1
    colours = dict((label, colour) for colour, label in legend)
    assert {"embedding: weight codes", "layer 0: weight codes", "layer 2: scales and vectors",
            "head: weight codes", "unused tile"} <= set(colours)
    assert len(set(colours.values())) == len(colours)

    def pixel(slot):  # a point inside the tile, clear of the link line through its centre
        die_w = grid.columns * cw + 6
        return tuple(img[(grid.rows - 1 - slot.row) * ch + 1, slot.die * die_w + slot.column * cw + 1])

    first_slot, first = placement.assignments[0]
    assert first.tensor == "model.embed_tokens.weight"
    assert pixel(first_slot) == colours["embedding: weight codes"]
    last_slot, last = placement.assignments[-1]
    assert last.kind == "scales" and pixel(last_slot) == colours["head: scales and vectors"]
    q0 = placement.tiles_of("model.layers.0.self_attn.q_proj.weight")[0][0]
    assert pixel(q0) == colours["layer 0: weight codes"]
    used = {s for s, _ in placement.assignments}
    free = next(type(q0)(1, c, r) for r in range(grid.rows) for c in range(grid.columns)
                if type(q0)(1, c, r) not in used)
    assert pixel(free) == UNUSED == colours["unused tile"]
