"""Extraction of one die: the per-instance decode of chunk cells (extract/die.py
``add_instances``) against decoding every via of the flattened die, on clean and on edited
masks (a chunk moved by a site, by half a site, into an unused tile, turned around)."""

from __future__ import annotations

import json
from pathlib import Path

import gdstk
import numpy as np
import pytest

from taalasc.compile import CompileOptions, compile_model
from taalasc.custom.names import TILE, local_name
from taalasc.errors import MaskError
from taalasc.formats import gdsflat, readback
from taalasc.extract.die import DieReadJob, extract_die
from taalasc.extract.extract import base_of, read_manifest
from taalasc.model.synth import llama_config, write_llama
from taalasc.place.store import read_placement


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("xdie")
    model = write_llama(root / "model", llama_config(hidden=64, layers=1, intermediate=128,
                                                     vocab=128))
    compile_model(model, root / "masks", CompileOptions(formats=("gds",)))
    return root / "masks"


def _job(out: Path, gds: Path) -> DieReadJob:
    manifest = read_manifest(out)
    placement = read_placement(out, manifest)
    return DieReadJob(str(gds), base_of(manifest, out), 0, placement.die_part(0),
                      manifest["dies"][0]["route_vias"])


_ITER_VIAS = readback.iter_vias


def _flat_only(path, pdk, instances=True):
    """The reference: every via flattened, no instances."""
    yield from _ITER_VIAS(path, pdk, instances=False)


def _outcome(job, monkeypatch=None):
    try:
        got = extract_die(job)
    except MaskError as exc:
        return ("MaskError", str(exc))
    return (got.vias_read, got.defect_count, [d.describe() for d in got.defects],
            [v.tobytes() for v in got.values])


def _edited(out: Path, dst: Path, edit) -> Path:
    lib = gdstk.read_gds(str(out / "die0.gds"))
    tiles = sorted((c for c in lib.cells if TILE.match(c.name)), key=lambda c: c.name)
    edit(tiles[0])
    lib.write_gds(str(dst))
    return dst


def _first_chunk(tile: gdstk.Cell) -> gdstk.Reference:
    return next(r for r in tile.references if local_name(r.cell_name).startswith("V"))


# MEMO_SHAPES 16: tile cells are expanded and their chunk cells are the instances, as on a
# reticle die (16,384-site tiles); by default the demo's small tiles are the instances.
@pytest.mark.parametrize("memo", [gdsflat.MEMO_SHAPES, 16])
@pytest.mark.parametrize("edit", ["none", "one-site", "half-site", "unused-tile", "turned",
                                  "stacked", "into-ties"])
def test_instance_decode_equals_the_flat_decode(compiled, tmp_path, monkeypatch, edit, memo):
    monkeypatch.setattr(gdsflat, "MEMO_SHAPES", memo)
    base = base_of(read_manifest(compiled), compiled)
    pitch = base.weight_tile.site_pitch_x_nm
    far = base.tile_grid.pitch_x_nm * (base.tile_grid.columns - 1)  # the last column: unused

    def change(tile: gdstk.Cell) -> None:
        ref = _first_chunk(tile)
        x, y = ref.origin
        if edit == "one-site":
            ref.origin = (x + pitch, y)
        elif edit == "half-site":
            ref.origin = (x + pitch // 2, y)
        elif edit == "unused-tile":
            ref.origin = (x + far, y)
        elif edit == "turned":
            ref.rotation = np.pi
        elif edit == "stacked":   # a second chunk on the same 8 sites: shorts where they differ
            other = next(r for r in tile.references if local_name(r.cell_name).startswith("V")
                         and r.cell_name != ref.cell_name)
            tile.add(gdstk.Reference(other.cell, (x, y)))
        elif edit == "into-ties":  # the row's last chunk one site right: a via on the tie column
            chunks = [r for r in tile.references if local_name(r.cell_name).startswith("V")
                      and r.origin[1] == y]
            last = max(chunks, key=lambda r: r.origin[0])
            last.origin = (last.origin[0] + pitch, y)

    gds = _edited(compiled, tmp_path / "die0.gds", change)
    job = _job(compiled, gds)
    fast = _outcome(job)
    monkeypatch.setattr(readback, "iter_vias", _flat_only)
    flat = _outcome(job)
    assert fast == flat
    if edit == "none":
        assert fast[1] == 0
    elif edit == "half-site":
        assert fast[0] == "MaskError" and "on no bit slot" in fast[1]
    else:
        assert fast[1] > 0  # opens/shorts, or vias outside the used tiles


@pytest.mark.parametrize("memo", [gdsflat.MEMO_SHAPES, 16])
def test_clean_die_uses_instances_for_every_chunk(compiled, monkeypatch, memo):
    """The fast path must actually serve a compiled die: no via goes through add(), and
    every bit via is decoded as bytes of 8 sites (SiteDecoder._add_bytes), none as keys."""
    monkeypatch.setattr(gdsflat, "MEMO_SHAPES", memo)
    job = _job(compiled, compiled / "die0.gds")
    per_via, keys = [], []
    original, presence = readback.SiteDecoder.add, readback.SiteDecoder.presence
    monkeypatch.setattr(readback.SiteDecoder, "add",
                        lambda self, c: (per_via.append(len(c)), original(self, c)))
    monkeypatch.setattr(readback.SiteDecoder, "presence",
                        lambda self, **kw: (keys.append(sum(len(k) for k in self.keys)),
                                            presence(self, **kw))[1])
    got = extract_die(job)
    assert keys == [0]
    manifest = json.loads((compiled / "manifest.json").read_text())
    assert got.defect_count == 0 and got.vias_read == manifest["dies"][0]["via_count"]
    # only the top-level route vias and the tie vias (6 % of a tile's; see SiteDecoder.add)
    assert sum(per_via) == manifest["dies"][0]["route_vias"] + manifest["dies"][0]["tie_vias"]


@pytest.mark.parametrize("memo", [gdsflat.MEMO_SHAPES, 16])
def test_counts_equal_the_flat_counts_with_a_doubled_via(compiled, tmp_path, monkeypatch, memo):
    """SiteDecoder.counts counts every via: a cell drawing one via twice is decoded via by
    via, not as bytes of 8 sites, whose bits could not count it (sign-off reads counts)."""
    monkeypatch.setattr(gdsflat, "MEMO_SHAPES", memo)

    def change(tile: gdstk.Cell) -> None:
        chunk = _first_chunk(tile).cell
        via = chunk.polygons[0]
        chunk.add(gdstk.Polygon(via.points, via.layer, via.datatype))

    gds = _edited(compiled, tmp_path / "die0.gds", change)
    job = _job(compiled, gds)
    fast = readback.SiteDecoder(job.base, job.assignments)
    fast.read(gds)
    flat = readback.SiteDecoder(job.base, job.assignments)
    for piece in _ITER_VIAS(gds, job.base.pdk, instances=False):
        flat.add(piece)
    got, want = fast.counts(), flat.counts()
    assert want.max() == 2 and np.array_equal(got, want)
