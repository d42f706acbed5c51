"""Issue 16: the demo model drawn in every weight encoding (sky130-demo-select, -ternary,
-zero-skip), read back, verified, and with an open and a short found in each.

The via positions are checked against the site layout written out here from the base
array's numbers (gdstk reads the file), not through taalasc's own decoder."""

from __future__ import annotations

import json
import re
import shutil

import gdstk
import numpy as np
import pytest

from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.extract.extract import extract
from taalasc.model.synth import write_demo
from taalasc.place.pack import pack_segment
from taalasc.place.store import read_placement

from gdstk_ref import edit_tile

ENCODINGS = ("select", "ternary", "zero-skip")
# The line of each digit, from the module docstring of taalasc/config/base_array.py:
# select digit j on line j; ternary +1 (code 1) on line 0, 0 on line 1, -1 (code 3) on
# line 2; zero-skip 1 on line 0 and 0 without via.
LINE = {"select": lambda d: d, "ternary": {1: 0, 0: 1, 3: 2}.get,
        "zero-skip": {1: 0, 0: None}.get}


@pytest.fixture(scope="module", params=ENCODINGS)
def compiled(request, tmp_path_factory):
    encoding = request.param
    root = tmp_path_factory.mktemp(encoding)
    model = root / "model"
    model.mkdir()
    ternary = encoding == "ternary"
    write_demo(model, ternary=True) if ternary else write_demo(model)
    out = root / "masks"
    assert main(["compile", str(model), "-o", str(out), "--quiet", "--base",
                 f"sky130-demo-{encoding}", *(["--bits", "2"] if ternary else [])]) == 0
    return encoding, model, out, load_base_array(f"sky130-demo-{encoding}")


def _placement(out):
    return read_placement(out, json.loads((out / "manifest.json").read_text()))


def _expected_vias(out, base, encoding) -> set[tuple[int, int]]:
    """Every bit via's centre from the quantized values, by the layout's arithmetic."""
    ex = extract(out, "gds")   # values only; positions are computed below, not decoded
    tile = base.weight_tile
    px, py, lines = tile.site_pitch_x_nm, tile.site_pitch_y_nm, tile.lines_per_site
    want = set()
    for slot, seg in _placement(out).assignments:
        source = _source(ex, seg)
        digits = pack_segment(seg, source)
        ox, oy = base.tile_grid.tile_origin_nm(slot.column, slot.row)
        for s, d in enumerate(digits.tolist()):
            line = LINE[encoding](d)
            if line is None:
                continue
            i, j = s % tile.sites_x, s // tile.sites_x
            want.add((ox + i * px + px // 2, oy + j * py + (2 * line + 1) * py // (2 * lines)))
    return want


def _source(ex, seg):
    from taalasc.quant import QuantizedTensor

    if seg.kind == "vector":
        return ex.vectors[seg.tensor]
    codes = ex.codes[seg.tensor]
    return QuantizedTensor(seg.tensor, codes.shape, seg.bits if seg.kind == "codes" else 4,
                           codes.shape[1], codes, ex.scales[seg.tensor], float("nan"),
                           ex.mins.get(seg.tensor))


def _bit_vias_read(path, base) -> set[tuple[int, int]]:
    """Via centres inside the used tiles' bit-site columns, read with gdstk."""
    lib = gdstk.read_gds(str(path))
    top = lib.top_level()[0]
    layer = (base.pdk.layers.via.gds_layer, base.pdk.layers.via.gds_datatype)
    tile, grid = base.weight_tile, base.tile_grid
    got = set()
    for poly in top.get_polygons(layer=layer[0], datatype=layer[1]):
        (x0, y0), (x1, y1) = poly.bounding_box()
        cx, cy = round((x0 + x1) / 2), round((y0 + y1) / 2)
        rx, ry = cx - grid.origin_nm[0], cy - grid.origin_nm[1]
        if rx % grid.pitch_x_nm < tile.sites_x * tile.site_pitch_x_nm \
                and ry % grid.pitch_y_nm < tile.height_nm and rx >= 0 and ry >= 0:
            got.add((cx, cy))
    return got


def test_every_via_sits_on_the_line_its_digit_picks(compiled):
    encoding, _, out, base = compiled
    manifest = json.loads((out / "manifest.json").read_text())
    want = _expected_vias(out, base, encoding)
    assert _bit_vias_read(out / "die0.gds", base) == want
    assert manifest["dies"][0]["bit_vias"] == len(want)
    placement = _placement(out)
    sites = sum(seg.used_sites for _, seg in placement.assignments)
    if encoding == "zero-skip":   # vias follow the ones: about half the bits here
        assert len(want) < 0.6 * sites
    else:                          # one via per site: a 4-bit code is 2 select sites
        assert len(want) == sites
    if encoding == "select":
        codes = [seg for _, seg in placement.assignments if seg.kind == "codes"]
        assert all(seg.sites_per_element == 2 for seg in codes)


def test_the_masks_verify(compiled, tmp_path):
    encoding, model, out, _ = compiled
    assert main(["verify", str(out), str(model), "--json", str(tmp_path / "v.json")]) == 0
    checks = {c["name"]: c["passed"] for c in json.loads((tmp_path / "v.json").read_text())
              ["checks"]}
    assert checks == {"model": True, "files": True, "codes": True, "datapath": True,
                      "quality": True}, encoding


def _codes_tile(out, tensor="model.layers.0.mlp.down_proj.weight"):
    return next((slot, seg) for slot, seg in _placement(out).assignments
                if seg.tensor == tensor and seg.kind == "codes")


def test_a_deleted_via_is_found(compiled, tmp_path, capsys):
    encoding, model, out, base = compiled
    bad = tmp_path / "masks"
    shutil.copytree(out, bad)
    slot, seg = _codes_tile(out)
    tile = base.weight_tile
    layer = (base.pdk.layers.via.gds_layer, base.pdk.layers.via.gds_datatype)

    def delete(cell):
        vias = [p for p in cell.polygons if (p.layer, p.datatype) == layer
                and p.bounding_box()[1][0] < tile.sites_x * tile.site_pitch_x_nm
                and p.bounding_box()[1][1] < tile.site_pitch_y_nm]
        # site 0's via (zero-skip: the first 1 bit of site row 0)
        cell.remove(min(vias, key=lambda p: p.bounding_box()[0][0]))

    edit_tile(out / "die0.gds", bad / "die0.gds", base, slot, delete)
    assert main(["verify", str(bad), str(model), "--json", str(tmp_path / "v.json")]) == 2
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["defect_count"] == 1
    if encoding == "zero-skip":   # the 1 reads as 0: the tile's via count finds it
        assert re.fullmatch(rf"via-count at die 0 tile \({slot.column}, {slot.row}\) \("
                            rf"{re.escape(seg.tensor)}: \d+ bit vias, \d+ drawn .*\)",
                            result["defects"][0]), result["defects"]
        checks = {c["name"]: c["passed"] for c in result["checks"]}
        assert not checks["codes"]
    else:
        assert result["defects"] == [f"open at die 0 tile ({slot.column}, {slot.row}): "
                                     f"{seg.tensor} codes [{seg.rows[0]}, {seg.cols[0]}] bit 0"]


@pytest.mark.parametrize("step", [1, -1])
def test_an_added_via_is_found(compiled, tmp_path, step):
    """select, ternary: a via on a second line of site 0 (the next line up or down) is a
    short. zero-skip has one line: a via on a 0 site (the first or the last of row 0) reads
    as a 1, which the tile's via count finds."""
    encoding, model, out, base = compiled
    bad = tmp_path / "masks"
    shutil.copytree(out, bad)
    slot, seg = _codes_tile(out)
    tile, size = base.weight_tile, base.pdk.rules.via_size_nm
    digits = pack_segment(seg, _source(extract(out, "gds"), seg))
    if encoding == "zero-skip":
        site = int(np.flatnonzero(digits[:tile.sites_x] == 0)[0 if step == 1 else -1])
        line = 0
    else:
        site = 0
        line = (LINE[encoding](int(digits[0])) + step) % tile.lines_per_site
    ox, oy = base.tile_grid.tile_origin_nm(slot.column, slot.row)
    cx, cy = ox + tile.slot_x_nm(site), oy + tile.line_y_nm(0, line)
    lib = gdstk.read_gds(str(out / "die0.gds"))
    layer = base.pdk.layers.via
    lib.top_level()[0].add(gdstk.rectangle((cx - size // 2, cy - size // 2),
                                           (cx + size // 2, cy + size // 2),
                                           layer=layer.gds_layer, datatype=layer.gds_datatype))
    lib.write_gds(str(bad / "die0.gds"))
    assert main(["verify", str(bad), str(model), "--json", str(tmp_path / "v.json")]) == 2
    result = json.loads((tmp_path / "v.json").read_text())
    if encoding == "zero-skip":
        assert result["defect_count"] == 1 and result["defects"][0].startswith(
            f"via-count at die 0 tile ({slot.column}, {slot.row})")
        assert not {c["name"]: c["passed"] for c in result["checks"]}["codes"]
    else:
        assert result["defects"] == [f"short at die 0 tile ({slot.column}, {slot.row}): "
                                     f"{seg.tensor} codes [{seg.rows[0]}, {seg.cols[0]}] bit 0"]


def test_chunk_cells_differ_by_encoding():
    from taalasc.custom.tiles import chunk_tag

    tags = {chunk_tag(load_base_array(name)) for name in
            ("sky130-demo", *(f"sky130-demo-{e}" for e in ENCODINGS))}
    assert len(tags) == 4
