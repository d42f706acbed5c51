"""The PNG writer and the placement overview, read back by an independent decoder."""

import struct
import zlib

import numpy as np
import pytest

from taalasc.config import load_base_array
from taalasc import draw
from taalasc.place import overview as ov
from taalasc.place import overview_image, overview_png, plan_placement
from taalasc.place.overview import UNUSED, die_map_image
from taalasc.png import png_bytes
from test_place_curve import _square_base
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


def colour_count(img, colour):
    return int((img == np.array(colour, np.uint8)).all(axis=2).sum())


def test_overview_png(tmp_path):
    demo = load_base_array("sky130-demo")
    placement = plan_placement(llama(layers=3), demo)
    assert placement.dies == 2
    path = tmp_path / "overview.png"
    legend = overview_png(placement, demo, path, "tiny.safetensors")
    img = decode_png(path.read_bytes())
    ref, _ = overview_image(placement, demo, "tiny.safetensors")
    np.testing.assert_array_equal(img, ref)
    overview_png(placement, demo, tmp_path / "again.png", "tiny.safetensors")
    assert (tmp_path / "again.png").read_bytes() == path.read_bytes()  # verify relies on it
    colours = dict((label, colour) for colour, label in legend)
    # one colour per role, the same in every layer; lighter shades are the scales
    assert {"embed_tokens", "q_proj", "down_proj", "lm_head", "fp16 vectors (norms, biases)",
            "unused tile", "dataflow link (same die)", "q_proj: fp16 scales and minimums"} \
        <= set(colours)
    assert not any(label.startswith(("layer", "L0", "L1")) for label in colours)
    assert len(set(colours.values())) == len(colours)
    for label in ("embed_tokens", "q_proj", "lm_head", "unused tile"):
        assert colour_count(img, colours[label]) > 100, label
    # both dies are drawn, each with a title line over it and a legend below
    height, width, _ = img.shape
    assert 200 < width < 1500 and 400 < height < 1500


def test_die_map(tmp_path):
    demo = load_base_array("sky130-demo")
    placement = plan_placement(llama(layers=3), demo)
    img = die_map_image(placement, demo, 1, "tiny.safetensors")
    colours = dict((label, colour) for colour, label in overview_image(placement, demo)[1])
    assert colour_count(img, colours["lm_head"]) > 1000
    assert colour_count(img, colours["embed_tokens"]) == 0  # on die 0 only
    assert colour_count(img, UNUSED) > 1000
    np.testing.assert_array_equal(img, die_map_image(placement, demo, 1, "tiny.safetensors"))


def test_many_dies_stay_legible(tmp_path):
    """120 dies: a grid of dies of a sensible aspect, each at least 40 pixels wide."""
    base = _square_base(tmp_path, 3, 3)
    placement = plan_placement(llama(hidden=64, layers=40, inter=128), base, curve="rowmajor",
                               max_dies=400)
    assert placement.dies >= 100
    img, legend = overview_image(placement, base, "many")
    height, width, _ = img.shape
    assert 0.5 < width / height < 3 and width <= 1500 and height <= 1500
    colours = ov.tile_colours(placement, base)
    across, (die_w, die_h, _, _) = ov._grid_shape(base, placement.dies, draw.LINE_H)
    assert die_w >= 40 and die_h >= 40
    assert len(colours.classes) <= len(ov.PALETTE) + 2  # colours do not repeat: roles, not layers


def test_text_is_drawn_in_the_bitmap_font():
    img = np.full((20, 200, 3), 255, np.uint8)
    end = draw.draw_text(img, 2, 2, "L12 q_proj µm²")
    assert end == 2 + 14 * draw.CHAR_W
    ink = (img == np.array(draw.INK, np.uint8)).all(axis=2)
    assert ink[2:2 + draw.CHAR_H, 2:end].sum() > 40 and not ink[:, end + 1:].any()
    assert draw.wrap("one two three four", 6 * 9) == ["one two", "three", "four"]
    assert draw.nice_ticks(0, 7.3) == [0, 2, 4, 6, 8]
