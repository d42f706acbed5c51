"""The vectorised parent-side steps (overview, placement metrics, fsync of the output folder)
give exactly what the plain per-tile / per-link definitions give."""

import errno
import os

import numpy as np
import pytest

from taalasc.config import load_base_array
from taalasc.errors import OutputError, PlacementError
from taalasc.model.arch import block_role
from taalasc.outdir import MANIFEST, staged_output
from taalasc.place import (TensorSpec, placement_stats, plan_placement,
                           rowmajor_wirelength_nm, tensor_span_nm, wirelength_nm)
from taalasc.place import overview as ov
from test_place_curve import _square_base
from test_place_plan import llama

CURVES = ("gilbert", "gilbert-runs", "serpentine", "rowmajor")


@pytest.fixture(scope="module")
def demo():
    return load_base_array("sky130-demo")


def reference_colour(placement, seg):
    """A tile's colour by the definition: the palette in order of the roles' first use
    (vectors dark grey), halfway to white for scales and minimums."""
    vector = {s.tensor for _, s in placement.assignments if s.kind == "vector"}
    roles = []
    for name, _ in placement.layers:
        if name not in vector and block_role(name) not in roles:
            roles.append(block_role(name))
    if seg.tensor in vector:
        colour = ov.VECTORS
    else:
        i = roles.index(block_role(seg.tensor))
        colour = ov.PALETTE[i] if i < len(ov.PALETTE) else ov.OTHER
    if seg.kind in ("scales", "mins"):
        colour = tuple(int(round(0.45 * c + 0.55 * 255)) for c in colour)
    return colour


def reference_die(placement, base, die, size):
    """One die drawn tile by tile and link by link (the definition in place/overview)."""
    grid = base.tile_grid
    width, height, cw, ch = size
    img = np.full((height, width, 3), ov.UNUSED, np.uint8)
    seam = 1 if min(cw, ch) >= ov.SEAM_MIN_PX else 0
    if seam:
        img[np.arange(height) % ch == ch - 1] = ov.BACKGROUND
        img[:, np.arange(width) % cw == cw - 1] = ov.BACKGROUND
    for slot, seg in placement.assignments:
        if slot.die == die:
            x, y = slot.column * cw, (grid.rows - 1 - slot.row) * ch
            img[y:y + ch - seam, x:x + cw - seam] = reference_colour(placement, seg)
    if min(cw, ch) >= ov.LINK_MIN_PX:
        for a, b in placement.links:
            if a.die == b.die == die:
                reference_line(img, a.column * cw + cw // 2, (grid.rows - 1 - a.row) * ch + ch // 2,
                               b.column * cw + cw // 2, (grid.rows - 1 - b.row) * ch + ch // 2)
    return img


def reference_line(img, x0, y0, x1, y1):
    steps = max(abs(x1 - x0), abs(y1 - y0), 1)
    xs = np.rint(np.linspace(x0, x1, steps + 1)).astype(int)
    ys = np.rint(np.linspace(y0, y1, steps + 1)).astype(int)
    img[ys, xs] = ov.LINK


def drawn_die(placement, base, die, size):
    img = np.zeros((size[1], size[0], 3), np.uint8)
    colours = ov.tile_colours(placement, base)
    links = ov._links_of(placement) if placement.links else None
    ov.draw_die(img, 0, 0, colours, die, size, colours.lut(), links, base)
    return img


@pytest.mark.parametrize("curve", CURVES)
def test_die_drawing_matches_per_tile_drawing_on_demo(demo, curve):
    # 61.6 x 420 um pitch: tall cells with a seam and links; rowmajor adds long row-wrap links.
    placement = plan_placement(llama(layers=3), demo, curve=curve)
    size = ov.die_size_px(demo, 900, 900)
    assert min(size[2:]) >= ov.LINK_MIN_PX
    for die in range(placement.dies):
        np.testing.assert_array_equal(drawn_die(placement, demo, die, size),
                                      reference_die(placement, demo, die, size))


@pytest.mark.parametrize("columns, rows, layers, px", [(8, 8, 2, 400), (6, 5, 6, 30),
                                                       (4, 3, 12, 9), (46, 46, 2, 40)])
def test_die_drawing_matches_on_square_pitch(tmp_path, columns, rows, layers, px):
    # From big cells with seams and links to small ones (no seam, no links) and to a die
    # sampled at under one pixel per tile.
    base = _square_base(tmp_path, columns, rows)
    placement = plan_placement(llama(hidden=64, layers=layers, inter=256), base, curve="rowmajor",
                               max_dies=200)
    size = ov.die_size_px(base, px, px)
    for die in range(placement.dies):
        got = drawn_die(placement, base, die, size)
        if size[2]:
            np.testing.assert_array_equal(got, reference_die(placement, base, die, size))
        else:  # sampled: each pixel shows the tile under it
            colours = ov.tile_colours(placement, base)
            w, h = size[:2]
            for y in range(0, h, 7):
                for x in range(0, w, 5):
                    code = colours.codes[die, y * rows // h, x * columns // w]
                    assert tuple(got[y, x]) == tuple(colours.lut()[code])


def test_lines_match_linspace_in_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    ends = rng.integers(0, 97, size=(300, 4))
    ends[:20, 2:] = ends[:20, :2]  # zero-length lines are one pixel
    ends[20:40, 3] = ends[20:40, 1]  # horizontal
    monkeypatch.setattr(ov, "_LINE_CHUNK_POINTS", 64)  # many chunks, some single long lines
    got = np.zeros((97, 97, 3), np.uint8)
    ov._lines(got, *(ends[:, k] for k in (0, 1, 2, 3)))
    want = np.zeros_like(got)
    for x0, y0, x1, y1 in ends.tolist():
        reference_line(want, x0, y0, x1, y1)
    np.testing.assert_array_equal(got, want)
    assert (got == ov.LINK).all(axis=2).sum() > 1000


def reference_stats(placement, base):
    px, py = base.tile_grid.pitch_x_nm, base.tile_grid.pitch_y_nm
    boxes = {}
    for slot, seg in placement.assignments:
        boxes.setdefault((seg.tensor, slot.die), []).append((slot.column, slot.row))
    span = sum((max(c for c, _ in v) - min(c for c, _ in v)) * px
               + (max(r for _, r in v) - min(r for _, r in v)) * py for v in boxes.values())
    wire = sum(abs(a.column - b.column) * px + abs(a.row - b.row) * py for a, b in placement.links)
    cap = base.weight_tile.capacity_bits
    unused = {k: sum(cap - s.used_sites for _, s in placement.assignments if s.kind == k)
              for k in ("codes", "scales", "vector")}
    return span, wire, placement.sites_used, placement.cross_die_links, unused


@pytest.mark.parametrize("curve", CURVES)
def test_placement_stats_match_per_tile_sums(tmp_path, curve):
    base = _square_base(tmp_path, 6, 5)
    placement = plan_placement(llama(hidden=64, layers=6, inter=256), base, curve=curve,
                               max_dies=50)
    assert placement.dies > 2
    span, wire, sites, cross, unused = reference_stats(placement, base)
    stats = placement_stats(placement, base)
    assert tensor_span_nm(placement, base) == span == stats["place__tensor_span_nm"]
    assert wirelength_nm(placement, base) == wire == stats["place__wirelength_nm"]
    assert (stats["place__sites__used"], stats["place__links__cross_die"]) == (sites, cross)
    assert stats["place__sites__utilization"] == sites / (placement.tiles_used
                                                          * base.weight_tile.capacity_bits)
    for kind, value in unused.items():
        assert stats[f"place__sites__{kind}__unused"] == value
    # JSON-ready: plain Python numbers, not numpy scalars
    assert all(type(v) in (int, float) for v in stats.values()), stats


@pytest.mark.parametrize("columns, rows", [(8, 8), (6, 5), (7, 3), (3, 9)])
def test_rowmajor_wirelength_is_the_rowmajor_placement(tmp_path, columns, rows):
    base = _square_base(tmp_path, columns, rows)
    for layers in (1, 2, 5):
        specs = llama(hidden=64, layers=layers, inter=256)
        planned = plan_placement(specs, base, curve="rowmajor", max_dies=300)
        want = wirelength_nm(planned, base)
        assert rowmajor_wirelength_nm(specs, base, max_dies=300) == want
        gil = plan_placement(specs, base, max_dies=300)
        assert rowmajor_wirelength_nm(specs, base, max_dies=300, placement=gil) == want


def test_rowmajor_wirelength_raises_as_plan_placement(demo):
    specs = llama(layers=3)  # two dies
    cases = [dict(max_dies=0), dict(max_dies=True), dict(max_dies=1),
             dict(tensors=specs + specs[:1]), dict(tensors=[]),
             dict(tensors=[TensorSpec("w", (4, 6), 4, 4, None)] + specs)]
    for case in cases:
        tensors = case.pop("tensors", specs)
        with pytest.raises(PlacementError) as want:
            plan_placement(tensors, demo, curve="rowmajor", **case)
        with pytest.raises(PlacementError) as got:
            rowmajor_wirelength_nm(tensors, demo, **case)
        assert str(got.value) == str(want.value)


def _fd_path(fd):
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_every_file_and_folder_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "out"
    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(_fd_path(fd))
        real_fsync(fd)

    def replace(a, b):
        synced.append(("rename", str(a), str(b)))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with staged_output(target, inputs_digest="d", force=False) as stage:
        (stage / "sub" / "deeper").mkdir(parents=True)
        names = [f"f{i}.bin" for i in range(20)] + ["sub/a", "sub/deeper/b", MANIFEST]
        for name in names:
            (stage / name).write_bytes(name.encode())
    rename = next(i for i, e in enumerate(synced) if isinstance(e, tuple))
    before = synced[:rename]
    for name in names:
        assert str(stage / name) in before, name
    folders = [str(stage / "sub" / "deeper"), str(stage / "sub"), str(stage)]
    at = [before.index(f) for f in folders]
    assert at == sorted(at) and min(at) > max(before.index(str(stage / n)) for n in names)
    assert synced[rename + 1:] == [str(tmp_path)]  # the rename itself is made durable
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [n for n in names if "/" not in n] + ["sub"])
    assert (target / "sub" / "deeper" / "b").read_bytes() == b"sub/deeper/b"


def test_failed_fsync_keeps_previous_output(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with staged_output(target, inputs_digest="old", force=False) as stage:
        (stage / MANIFEST).write_text('{"inputs_digest": "old"}')
    real_fsync = os.fsync
    calls = []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OutputError, match="writing failed.*previous output is unchanged"):
        with staged_output(target, inputs_digest="new", force=True) as stage:
            for i in range(6):
                (stage / f"f{i}").write_text("x")
            (stage / MANIFEST).write_text('{"inputs_digest": "new"}')
    assert (target / MANIFEST).read_text() == '{"inputs_digest": "old"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
