"""Mask writer: layers, counts, geometry rules and decoding, checked by gdstk AND KLayout."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import gdstk
import klayout.db as kdb
import numpy as np
import pytest

from taalasc.checks.drc import check_file
from taalasc.custom.fill import keep_out_area_rects, window_density_pct
from taalasc.formats.readback import decode_tile_bits, read_vias
from taalasc.custom.names import TILE
from taalasc.custom.writer import DieMaskWriter, layer_properties_lyp
from taalasc.errors import MaskError
from test_custom_helpers import PREFIX, TAG, random_bits, small_base, write_small


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("masks")
    return write_small(out)


def _layout(path):
    layout = kdb.Layout()
    layout.read(str(path))
    return layout


def _region(layout, layer):
    li = layout.find_layer(*layer)
    assert li is not None, f"layer {layer} missing"
    return kdb.Region(layout.top_cell().begin_shapes_rec(li))


def _layers(base):
    v, m = base.pdk.layers.via, base.pdk.layers.top_metal
    return (v.gds_layer, v.gds_datatype), (m.gds_layer, m.gds_datatype)


def _fill_and_boundary(base):
    f, b = base.pdk.layers.top_metal_fill, base.pdk.layers.boundary
    return (f.gds_layer, f.gds_datatype), (b.gds_layer, b.gds_datatype)


def _top_metal(layout, base):
    """Drawn top metal and its fill, merged: one layer to the rules."""
    return (_region(layout, _layers(base)[1]) + _region(layout, _fill_and_boundary(base)[0])).merged()


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_only_the_custom_layers_fill_boundary_and_labels_exist_with_nm_dbu(written, fmt):
    base, result, _ = written
    layout = _layout(result.files[fmt])
    found = {(layout.get_info(i).layer, layout.get_info(i).datatype) for i in layout.layer_indexes()}
    assert found == set(_layers(base)) | set(_fill_and_boundary(base)) | {_label_layer(base)}
    fill, boundary = _fill_and_boundary(base)
    assert _region(layout, fill).count() == result.fill_shapes > 0
    assert [(p.bbox().left, p.bbox().bottom, p.bbox().right, p.bbox().top)
            for p in _region(layout, boundary).each()] == \
        [(0, 0, base.die.width_nm, base.die.height_nm)]
    # no fill in the keep-outs (the frame: seal ring, pad ring), nor within spacing of them
    s = base.pdk.rules.top_metal_space_nm
    import klayout.db as kdb
    holes = kdb.Region()
    for a, b, c, d in base.keep_out_rects_nm:
        holes.insert(kdb.Box(a - s, b - s, c + s, d + s))
    assert base.keep_out_rects_nm and (_region(layout, fill) & holes).is_empty()
    assert layout.dbu == pytest.approx(0.001)
    assert len(list(layout.top_cells())) == 1


def _label_layer(base):
    label = base.pdk.layers.top_metal_label
    return label.gds_layer, label.gds_datatype


def _texts(layout, layer) -> list[tuple[str, int, int]]:
    """Every text on ``layer`` under the top cell, placed (KLayout's recursive iterator)."""
    it = layout.top_cell().begin_shapes_rec(layout.find_layer(*layer))
    out = []
    while not it.at_end():
        shape = it.shape()
        assert shape.is_text(), f"a {shape} on the label layer"   # texts only, no shapes
        text = shape.text.transformed(it.trans())
        out.append((text.string, text.x, text.y))
        it.next()
    return sorted(out)


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_klayout_reads_a_net_label_on_every_strap_and_the_die_name(written, fmt):
    """Labels on the PDK's top-metal label layer: VPWR on the high strap and VGND on the low
    strap of every site row of every used tile (one text per strap in STRAPS), each on its
    strap's metal, and the top cell's name once at the die origin; no text elsewhere."""
    from taalasc.custom.geometry import strap_labels

    base, result, bits = written
    layout = _layout(result.files[fmt])
    top = layout.top_cell().name
    want = [(top, 0, 0)]
    for column, row in bits:
        ox, oy = base.tile_grid.tile_origin_nm(column, row)
        want += [(net, x + ox, y + oy)
                 for net, x, y in strap_labels(base.weight_tile, base.pdk.grid_nm)]
    assert _texts(layout, _label_layer(base)) == sorted(want)
    # each net label sits on top metal, nearer its own strap's centre line than the other's
    tile, grid = base.weight_tile, base.tile_grid
    metal = _region(layout, _layers(base)[1])
    straps = [(net, x, y) for net, x, y in want if net != top]
    assert len(straps) == len(bits) * 2 * tile.sites_y
    points = kdb.Region([kdb.Box(x, y, x + 1, y + 1) for _, x, y in straps])
    assert points.not_inside(metal).is_empty()
    for net, x, y in straps:
        dy = (y - grid.origin_nm[1]) % grid.pitch_y_nm
        gap = {high: min(abs(dy - tile.strap_y_nm(j, high)) for j in range(tile.sites_y))
               for high in (True, False)}
        assert (gap[True] < gap[False]) == (net == "VPWR") and min(gap.values()) <= 5
    others = [layout.get_info(i) for i in layout.layer_indexes()
              if (layout.get_info(i).layer, layout.get_info(i).datatype) != _label_layer(base)]
    for info in others:   # no text on any other layer
        it = layout.top_cell().begin_shapes_rec(layout.find_layer(info))
        while not it.at_end():
            assert not it.shape().is_text()
            it.next()


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_our_readers_and_the_file_check_skip_the_labels(written, fmt):
    """The labels are texts: no reader turns them into shapes, the file check counts none,
    and the flattened layers are exactly the rectangles' (gdstk, and our GDSII reader)."""
    from taalasc.formats.gdsread import read_gds
    from taalasc.formats.readback import mask_layers, read_rects

    base, result, _ = written
    rects = read_rects(result.files[fmt], mask_layers(base.pdk))
    assert _label_layer(base) not in rects
    assert check_file(result.files[fmt], base.pdk) == []
    if fmt == "gds":
        lib = read_gds(result.files[fmt], mask_layers(base.pdk))
        assert all(_label_layer(base) not in cell.rects for cell in lib.cells)
        assert sum(len(v) for c in lib.cells for v in c.rects.values()) == \
            sum(len(v) for c in gdstk.read_gds(str(result.files[fmt])).cells
                for v in [c.polygons])


def test_via_counts_agree_between_gdstk_klayout_and_formats(written):
    base, result, bits = written
    via, _ = _layers(base)
    assert result.bit_vias == sum(len(b) for b in bits.values())
    tiles = len(bits)
    assert result.tie_vias == tiles * 2 * base.weight_tile.sites_y   # one per strap
    assert result.route_vias == 8 and result.via_count == result.bit_vias + result.tie_vias + 8
    centres = {}
    for fmt in ("gds", "oas"):
        centres[fmt] = read_vias(result.files[fmt], base.pdk)
        layout = _layout(result.files[fmt])  # keep alive: the region reads it lazily
        region = _region(layout, via)
        assert region.count() == result.via_count == len(centres[fmt])
        kl = sorted((p.bbox().center().x, p.bbox().center().y) for p in region.each())
        assert kl == sorted(map(tuple, centres[fmt].tolist()))
    np.testing.assert_array_equal(centres["gds"], centres["oas"])


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_klayout_rule_checks_are_clean(written, fmt):
    base, result, _ = written
    rules = base.pdk.rules
    via, metal = _layers(base)
    layout = _layout(result.files[fmt])
    to_dbu = lambda nm: int(round(nm / 1000 / layout.dbu))  # noqa: E731
    vias = _region(layout, via)
    assert {(p.bbox().width(), p.bbox().height()) for p in vias.each()} == \
        {(to_dbu(rules.via_size_nm), to_dbu(rules.via_size_nm))}
    assert vias.space_check(to_dbu(rules.via_space_nm)).count() == 0
    top = _top_metal(layout, base)
    assert top.width_check(to_dbu(rules.top_metal_width_nm)).count() == 0
    assert top.space_check(to_dbu(rules.top_metal_space_nm)).count() == 0
    min_area = rules.top_metal_min_area_um2 / layout.dbu ** 2
    assert all(p.area() >= min_area for p in top.each())
    # Every via sits inside top metal with the enclosure rule on all sides.
    grown = vias.sized(to_dbu(rules.via_enclosure_top_nm))
    assert (grown - top).is_empty()


def test_density_is_within_limits_and_matches_klayout_area(written):
    base, result, _ = written
    rules = base.pdk.rules
    assert rules.top_metal_density_min_pct <= result.density_min_pct
    assert result.density_max_pct <= rules.top_metal_density_max_pct
    # The small die is smaller than one window: density = merged metal area (fill included)
    # / the die's area outside the keep-outs (grown by the spacing rule).
    from taalasc.custom.fill import keep_out_area_rects

    layout = _layout(result.files["oas"])
    area_um2 = _top_metal(layout, base).area() * layout.dbu ** 2
    kept_um2 = sum((c - a) * (d - b) for a, b, c, d in keep_out_area_rects(base)) * 1e-6
    die_um2 = base.die.width_nm * base.die.height_nm * 1e-6 - kept_um2
    assert result.density_min_pct == pytest.approx(100 * area_um2 / die_um2, abs=0.05)
    assert result.fill_shapes > 0


def test_window_density_is_exact_on_known_rectangles():
    rects = np.array([[0, 0, 500, 1000], [1500, 0, 2000, 500]])
    dens = window_density_pct(rects, (2000, 1000), window_nm=1000, step_nm=500, grid_nm=5)
    # Windows at x = 0, 500, 1000 (the last flush with the die edge), one row.
    np.testing.assert_allclose(dens[:, 0], [50.0, 0.0, 25.0])


def test_decode_recovers_every_written_bit(written):
    base, result, bits = written
    centres = read_vias(result.files["oas"], base.pdk)
    for (column, row), want in bits.items():
        got, opens, shorts = decode_tile_bits(centres, base, column, row)
        np.testing.assert_array_equal(got[:len(want)], want)
        np.testing.assert_array_equal(opens, np.arange(len(want), base.weight_tile.sites))
        assert shorts.size == 0
    got, opens, _ = decode_tile_bits(centres, base, 0, 1)  # never programmed
    assert opens.size == base.weight_tile.sites and not got.any()


def test_decode_reports_open_and_short():
    base = small_base()
    tile = base.weight_tile
    ox, oy = base.tile_grid.tile_origin_nm(0, 0)
    centres = np.array([[ox + tile.slot_x_nm(0), oy + tile.strap_y_nm(0, True)],
                        [ox + tile.slot_x_nm(1), oy + tile.strap_y_nm(0, True)],
                        [ox + tile.slot_x_nm(1), oy + tile.strap_y_nm(0, False)]])
    bits, opens, shorts = decode_tile_bits(centres, base, 0, 0)
    assert bits[0] == 1 and shorts.tolist() == [1] and opens[0] == 2
    with pytest.raises(MaskError, match=r"^tile \(0, 0\): via at .* is on no bit slot"):
        decode_tile_bits(centres + [[0, 700], [0, 0], [0, 0]], base, 0, 0)


def test_our_drc_is_clean_on_written_files(written):
    base, result, _ = written
    from taalasc.custom.fill import keep_out_area_rects

    die = (base.die.width_nm, base.die.height_nm)
    keep_outs = keep_out_area_rects(base)
    assert check_file(result.files["gds"], base.pdk, die, keep_outs) == []
    assert check_file(result.files["oas"], base.pdk, die, keep_outs) == []
    # Without them the frame's windows are short of metal: the check does measure density.
    assert {v.rule for v in check_file(result.files["gds"], base.pdk, die)} == {"density"}


def test_compiling_twice_gives_identical_bytes(tmp_path, written):
    _, first, _ = written
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _, again, _ = write_small(tmp_path / name)
        for fmt, path in again.files.items():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == first.sha256[fmt] \
                == again.sha256[fmt]
    (tmp_path / "c").mkdir()
    _, other, _ = write_small(tmp_path / "c", seed=99)
    assert other.sha256 != first.sha256


def test_identical_tiles_share_one_cell(tmp_path):
    base = small_base()
    writer = DieMaskWriter(base, 0, tmp_path, "die0", formats=("oas",), tag=TAG)
    bits = random_bits(5, 128)
    writer.add_tile(0, 0, bits)
    writer.add_tile(2, 1, bits)
    result = writer.close()
    layout = _layout(result.files["oas"])
    names = [layout.cell(i).name for i in range(layout.cells())]
    assert sum(bool(TILE.match(n)) for n in names) == 1
    assert result.bit_vias == 256 and not list(tmp_path.glob("*.tmp"))


def test_bad_calls_raise_mask_errors(tmp_path):
    base = small_base()
    writer = DieMaskWriter(base, 0, tmp_path, "die0", formats=("gds",), tag=TAG)
    writer.add_tile(0, 0, random_bits(1, 10))
    with pytest.raises(MaskError, match=r"^die 0: tile \(0, 0\) is programmed twice$"):
        writer.add_tile(0, 0, random_bits(1, 10))
    with pytest.raises(MaskError, match=r"outside the 3 x 2 tile grid"):
        writer.add_tile(3, 0, random_bits(1, 10))
    with pytest.raises(MaskError, match=r"site 1: digit 2 cannot be stored by encoding "
                                        r"'tie-high-low' \(digits 0, 1\)$"):
        writer.add_tile(1, 0, np.array([0, 2], np.uint8))
    with pytest.raises(MaskError, match=r"sites must be a 1-D array of 1\.\.128 digits"):
        writer.add_tile(1, 0, np.zeros(129, np.uint8))
    with pytest.raises(MaskError, match=r"ends at tile \(1, 1\), which has not been programmed"):
        writer.add_route((0, 0), (1, 1))
    writer.close()
    with pytest.raises(MaskError, match=r"already closed"):
        writer.add_tile(1, 1, random_bits(1, 10))
    with pytest.raises(MaskError, match=r"^formats must be a non-empty subset of gds, oas"):
        DieMaskWriter(base, 0, tmp_path, "x", formats=("svg",), tag=TAG)


def test_a_port_is_used_once_then_other_sides(tmp_path):
    base = small_base()
    writer = DieMaskWriter(base, 0, tmp_path, "die0", formats=("gds",), tag=TAG)
    for c in range(3):
        writer.add_tile(c, 0, random_bits(c, 16))
    writer.add_route((0, 0), (1, 0))
    writer.add_route((0, 0), (2, 0))  # east OUT is taken: another side's port is used
    result = writer.close()
    assert result.route_vias == 4
    assert check_file(result.files["gds"], base.pdk) == []


def test_layer_properties_name_the_custom_layers_fill_boundary_and_labels():
    base = small_base()
    root = ET.fromstring(layer_properties_lyp(base.pdk))
    sources = sorted(p.findtext("source") for p in root.iter("properties"))
    assert sources == ["235/4@1", "59/28@1", "71/44@1", "72/20@1", "72/5@1"]


FROZEN_VIAS = (465, "94467cc12e81f2ce")    # bit, tie and route vias
FROZEN_METAL = (71, "f507a01d69da5fdd")    # 4 tiles x 16 straps + 7 route wires
FROZEN_FILL = (598, "8c70906c327d3957")


def _rect_digest(rects):
    rects = rects[np.lexsort(rects.T[::-1])]
    return hashlib.sha256(np.ascontiguousarray(rects, np.int64).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("fmt", ["gds", "oas"])
def test_geometry_equals_the_gdstk_writer_reference(written, fmt):
    """Frozen from the earlier gdstk-based writer (the same die, flattened), refrozen when the
    tie column, the fill datatype and the frame came (issue 14): 64 tie vias, straps one
    site longer, fill on 59/28 outside the frame."""
    from taalasc.formats.readback import custom_layers, mask_layers, read_rects

    base, result, _ = written
    via, metal = custom_layers(base.pdk)
    fill = (base.pdk.layers.top_metal_fill.gds_layer, base.pdk.layers.top_metal_fill.gds_datatype)
    rects = read_rects(result.files[fmt], mask_layers(base.pdk))
    assert len(rects[via]) == 401 + 4 * 2 * base.weight_tile.sites_y
    assert (len(rects[via]), _rect_digest(rects[via])) == FROZEN_VIAS
    assert (len(rects[metal]), _rect_digest(rects[metal])) == FROZEN_METAL
    assert (len(rects[fill]), _rect_digest(rects[fill])) == FROZEN_FILL


def _render(args):
    from taalasc.custom.tiles import render_tile

    base, bits = args
    return render_tile(base, bits, ("gds", "oas"), prefix=PREFIX)


def test_tiles_rendered_in_worker_processes_give_identical_bytes(tmp_path, written):
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    base, first, bits = written
    writer = DieMaskWriter(base, 0, tmp_path, "die0", tag=TAG)
    with ProcessPoolExecutor(2) as pool:
        rendered = list(pool.map(_render, [(base, b) for b in bits.values()]))
    for (column, row), tile in zip(bits, rendered):
        writer.add_rendered(column, row, pickle.loads(pickle.dumps(tile)))
    for a, b in [((0, 0), (1, 0)), ((1, 0), (1, 1)), ((1, 1), (2, 1)), ((2, 1), (0, 0))]:
        writer.add_route(a, b)
    assert writer.close().sha256 == first.sha256


def test_add_rendered_needs_the_writer_formats(tmp_path):
    from taalasc.custom.tiles import render_tile

    base = small_base()
    writer = DieMaskWriter(base, 0, tmp_path, "die0", formats=("oas",), tag=TAG)
    with pytest.raises(MaskError, match=r"rendered for \['gds'\], the writer writes \['oas'\]"):
        writer.add_rendered(0, 0, render_tile(base, random_bits(1, 10), ("gds",), prefix=PREFIX))
    writer.abort()


def test_batch_rendering_equals_single_tiles():
    from taalasc.custom.tiles import render_tile, render_tiles

    base = small_base()
    tiles = [random_bits(1, 128), random_bits(2, 37), random_bits(3, 128), random_bits(1, 128)]
    assert render_tiles(base, tiles, prefix=PREFIX) == [render_tile(base, b, prefix=PREFIX)
                                                     for b in tiles]
    with pytest.raises(MaskError, match=r"^tile 1 site 0: digit 3 cannot be stored by "
                                        r"encoding 'tie-high-low' \(digits 0, 1\)$"):
        render_tiles(base, [tiles[0], np.array([3], np.uint8)], prefix=PREFIX)


def test_rows_that_are_not_whole_chunks_decode(tmp_path):
    """12 sites per row: every row ends in a 4-site chunk (the general chunking path)."""
    from dataclasses import replace

    base = small_base()
    base = replace(base, weight_tile=replace(base.weight_tile, sites_x=12))
    writer = DieMaskWriter(base, 0, tmp_path, "die0", tag=TAG)
    bits = {(0, 0): random_bits(4, 96), (1, 0): random_bits(5, 53)}
    for (c, r), b in bits.items():
        writer.add_tile(c, r, b)
    result = writer.close()
    die = (base.die.width_nm, base.die.height_nm)
    for fmt in ("gds", "oas"):
        centres = read_vias(result.files[fmt], base.pdk)
        assert len(centres) == 96 + 53 + 2 * 2 * base.weight_tile.sites_y  # + tie vias
        for (c, r), want in bits.items():
            got, _, shorts = decode_tile_bits(centres, base, c, r)
            np.testing.assert_array_equal(got[:len(want)], want)
            assert shorts.size == 0
        assert check_file(result.files[fmt], base.pdk, die, keep_out_area_rects(base)) == []
