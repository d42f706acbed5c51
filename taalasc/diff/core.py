"""``diff_masks(A, B)``: the whole diff as one typed record, formatted elsewhere (report.py).

Steps: open both sides and refuse different base chips → per die, the shapes present on one
side only and the exact XOR polygon count (hier.py, geom.py) → attribution to tiles, tensors
and masks (attribute.py) → the re-spin cost from the PDK's cost model.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.diff.attribute import Attribution, TensorDiff, TileDiff, respin_cost
from taalasc.diff.hier import DieChange, diff_layouts, layers_of, same_file_die
from taalasc.diff.inputs import (MaskSet, check_compatible, die_sha256, load_bases, load_library,
                                 open_mask_set, recognise_pdk, same_bytes)
from taalasc.errors import MaskError
from taalasc.report.metrics import format_percent

Layer = tuple[int, int]
FORMATS = ("gds", "oas")


@dataclass
class LayerTotals:
    layer: Layer
    name: str
    added: int = 0
    removed: int = 0
    xor_polygons: int = 0

    @property
    def changed(self) -> int:
        return self.added + self.removed

    def to_json(self) -> dict:
        return {"layer": f"{self.layer[0]}/{self.layer[1]}", "name": self.name,
                "added": self.added, "removed": self.removed, "changed": self.changed,
                "xor_polygons": self.xor_polygons}


@dataclass
class MaskDiff:
    """Everything ``taalasc diff`` reports."""

    a: MaskSet
    b: MaskSet
    dies: list[DieChange]
    layers: list[LayerTotals]
    tiles: list[TileDiff]
    tensors: list[TensorDiff]
    masks_per_die: list[set[str]]          # per die: subset of {"via", "top_metal", "other"}
    respin: dict | None
    shapes_a: int | None = None            # flattened shape count of A (for --max-changed F%)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.changed_shapes == 0

    @property
    def changed_shapes(self) -> int:
        return sum(t.changed for t in self.layers)

    @property
    def xor_polygons(self) -> int:
        return sum(t.xor_polygons for t in self.layers)

    @property
    def masks(self) -> str:
        """'none', 'via mask only', 'top-metal mask only' or 'both masks'."""
        got = set().union(*self.masks_per_die) if self.masks_per_die else set()
        if not got:
            return "none"
        if got == {"via"}:
            return "via mask only"
        if got == {"top_metal"}:
            return "top-metal mask only"
        return "both masks"


def _layer_names(pdk) -> dict[Layer, str]:
    """The die file's layers by role; the fill datatype is made into the top-metal mask."""
    if pdk is None or pdk.layers is None:
        return {}
    lay = pdk.layers
    return {(l.gds_layer, l.gds_datatype): name for l, name in (
        (lay.via, "via"), (lay.top_metal, "top_metal"), (lay.top_metal_fill, "top_metal_fill"),
        (lay.boundary, "boundary"))}


_MASK_OF = {"via": "via", "top_metal": "top_metal", "top_metal_fill": "top_metal"}


def count_shapes(lib) -> int:
    """Flattened shape count of a library's top cell, counted hierarchically (not flattened)."""
    from taalasc.formats.gdsflat import shape_count

    return shape_count(lib)


def _vias_are_vias(pdk, change, where) -> None:
    """Every via that changed must be the PDK's via square: anything else is not a mask of
    this process (a corrupted or foreign file), not a model change."""
    if pdk is None or pdk.layers is None:
        return
    layer = (pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype)
    lc = change.layers.get(layer)
    if lc is None:
        return
    size = pdk.rules.via_size_nm
    for rects in (lc.added, lc.removed):
        rects = np.asarray(rects).reshape(-1, 4)
        bad = (rects[:, 2] - rects[:, 0] != size) | (rects[:, 3] - rects[:, 1] != size)
        if bad.any():
            x0, y0, x1, y1 = rects[np.flatnonzero(bad)[0]].tolist()
            raise MaskError(f"{where}: via at ({x0}, {y0}) nm is {x1 - x0} x {y1 - y0} nm; "
                            f"{pdk.name} vias are {size} x {size} nm")


def _only_custom_layers(pdk, lib, path) -> None:
    """A compile folder's die file holds its PDK's two custom layers and nothing else."""
    if lib is None or pdk is None or pdk.layers is None:
        return
    from taalasc.formats.readback import mask_layers

    allowed = mask_layers(pdk)
    foreign = sorted(layers_of(lib) - allowed)
    if foreign:
        layer, datatype = foreign[0]
        raise MaskError(f"{path}: shapes on layer {layer}/{datatype}, which is not one "
                        f"of {pdk.name}'s custom layers, their fill or the boundary "
                        f"{sorted(allowed)}")


@dataclass(frozen=True)
class DieJob:
    """One die of two compile folders to compare (picklable: a worker reads the files).
    A file is None when that side has fewer dies."""

    die: int
    file_a: Path | None
    file_b: Path | None
    pdk_a: object
    pdk_b: object
    trust: bool


def compare_die(job: DieJob) -> DieChange:
    """The changes of one die of two compile folders (diff_masks' unit of work)."""
    libs = [None if f is None else load_library(f) for f in (job.file_a, job.file_b)]
    for pdk, lib, path in zip((job.pdk_a, job.pdk_b), libs, (job.file_a, job.file_b)):
        _only_custom_layers(pdk, lib, path)
    # extent left out: the heat map takes the die's size from the base array
    change = diff_layouts(*libs, job.die, f"die {job.die}", trust=job.trust, extent=False)
    _vias_are_vias(job.pdk_a or job.pdk_b, change, job.file_b or "")
    return change


def diff_masks(a: str | Path, b: str | Path, fmt: str | None = None, trust_hashes: bool = True,
               count_total: bool = False, jobs: int = 1, keep_shapes: bool = True) -> MaskDiff:
    """Compare two mask sets (compile folders or GDS/OASIS files).

    ``fmt`` picks the die files of compile folders (default: the format A's compile wrote,
    GDSII when it wrote both). ``jobs``: dies of compile folders compared at once, one
    process each (the result is the same for any ``jobs``). By default references at the
    same place on both sides to cells of the same content hash (content.py; names play no
    part) are skipped unflattened; ``trust_hashes=False`` compares the fully flattened
    geometry instead (slow; same counts). ``count_total`` also counts A's shapes, needed for
    a fractional threshold. ``keep_shapes=False``: each die's changed rectangles are dropped
    once they are counted, attributed and binned into the heat map (``report.heat_counts``),
    so a diff of every die of a new checkpoint holds one die's changes at a time, not the
    model's; the XOR file then cannot be written. Raises MaskError when a side cannot be
    read, a folder's die file is not the one its manifest records (name outside the folder,
    sha256 changed) or the base chips differ.
    """
    from taalasc.extract.extract import read_manifest, written_format
    from taalasc.parallel import run_ordered
    from taalasc.place.store import read_placement

    start = time.perf_counter()
    if fmt is None:
        fmt = written_format(read_manifest(Path(a))) if Path(a).is_dir() else "gds"
    if fmt not in FORMATS:
        raise MaskError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    sa, sb = open_mask_set(Path(a), fmt), open_mask_set(Path(b), fmt)
    check_compatible(sa, sb)
    load_bases(sa, sb)
    pa = read_placement(sa.path, sa.manifest) if sa.manifest else None
    pb = read_placement(sb.path, sb.manifest) if sb.manifest else None

    dies: list[DieChange | None] = []
    work: list[DieJob] = []
    shapes_a = 0
    for die in range(max(len(sa.files), len(sb.files))):
        sha_a, sha_b = die_sha256(sa, die), die_sha256(sb, die)
        if same_bytes(sa, sb, die, sha_a, sha_b):
            # One file, twice: nothing to compare. A bare file is still read once, for the
            # PDK its layers name, the extent, the shape count, and to refuse a corrupt one;
            # a compile folder's file is the one its compile wrote (sha256 checked).
            lib = None if sa.is_folder else load_library(sa.files[die])
            if lib is not None:
                recognise_pdk(sa, sb, layers_of(lib), layers_of(lib))
            dies.append(same_file_die(die, lib))
            if count_total and lib is not None:
                shapes_a += count_shapes(lib)
            continue
        if sa.is_folder:   # compared below, die by die on ``jobs`` processes
            work.append(DieJob(die, sa.files[die] if sha_a is not None else None,
                               sb.files[die] if sha_b is not None else None, sa.pdk, sb.pdk,
                               trust_hashes))
            dies.append(None)
            continue
        lib_a = load_library(sa.files[die]) if sha_a is not None else None
        lib_b = load_library(sb.files[die]) if sha_b is not None else None
        recognise_pdk(sa, sb, layers_of(lib_a), layers_of(lib_b))
        dies.append(diff_layouts(lib_a, lib_b, die, f"die {die}", trust=trust_hashes))
        _vias_are_vias(sa.pdk or sb.pdk, dies[-1], sb.files[die] if die < len(sb.files) else "")
        if count_total and lib_a is not None:
            shapes_a += count_shapes(lib_a)
        del lib_a, lib_b
    if count_total and sa.manifest:
        shapes_a = sum(d["via_count"] + d["top_metal_shapes"] + d["fill_shapes"]
                       for d in sa.manifest["dies"])

    pdk = sa.pdk or sb.pdk
    names = _layer_names(pdk)
    via_layer = next((k for k, v in names.items() if v == "via"), None)
    totals: dict[Layer, LayerTotals] = {}
    masks_per_die: list[set[str]] = []
    base = sa.base or sb.base
    attribution = Attribution(base, pa, pb, via_layer, names)
    if base is not None and not keep_shapes:
        from taalasc.diff.report import HEATMAP_SIDE_PX, heat_counts, heat_scale

        scale, dh, dw = heat_scale(base.die.width_nm, base.die.height_nm)
    # Dies are taken in die order as the workers finish them: each is counted, attributed
    # and (keep_shapes=False) binned into the heat map and stripped of its shapes at once.
    results = iter(run_ordered(compare_die, work, jobs=jobs))
    for k, d in enumerate(dies):
        if d is None:
            d = dies[k] = next(results)
        changed: set[str] = set()
        for layer, lc in d.layers.items():
            name = names.setdefault(layer, f"{layer[0]}/{layer[1]}")
            t = totals.setdefault(layer, LayerTotals(layer, name))
            t.added += lc.n_added
            t.removed += lc.n_removed
            t.xor_polygons += lc.xor_count
            if lc.n_added or lc.n_removed:
                changed.add(_MASK_OF.get(name, "other"))
        masks_per_die.append(changed)
        attribution.add_die(d)
        if base is not None and not keep_shapes:
            heat = (HEATMAP_SIDE_PX, heat_counts(d, (0, 0), scale, (dh, dw)))
            dies[k] = dataclasses.replace(d, heat=heat, layers={
                layer: lc.without_shapes() for layer, lc in d.layers.items()})
    for layer, name in names.items():   # the via and top-metal rows even when unchanged
        totals.setdefault(layer, LayerTotals(layer, name))
    totals = dict(sorted(totals.items()))
    tensors = attribution.finish()
    notes = []
    if pa is None:
        notes.append("bare mask files: no manifest, so no tensor attribution")
    return MaskDiff(a=sa, b=sb, dies=dies, layers=[t for t in totals.values()
                                                   if t.changed or t.name in ("via", "top_metal")],
                    tiles=attribution.tiles, tensors=tensors, masks_per_die=masks_per_die,
                    respin=respin_cost(pdk, masks_per_die) if any(masks_per_die) else None,
                    shapes_a=shapes_a if count_total else None,
                    seconds=time.perf_counter() - start, notes=notes)


def parse_max_changed(text: str) -> tuple[str, float]:
    """``'120'`` → ('count', 120); ``'0.5%'`` → ('fraction', 0.005). MaskError otherwise."""
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100
            if not 0 <= value <= 1:
                raise ValueError
            return "fraction", value
        value = int(raw)
        if value < 0:
            raise ValueError
        return "count", value
    except ValueError:
        raise MaskError(f"--max-changed must be a shape count (e.g. 100) or a percentage "
                        f"(e.g. 0.5%), not {text!r}") from None


def over_threshold(diff: MaskDiff, limit: tuple[str, float]) -> tuple[bool, str]:
    """(exceeded, one line saying why) for a parsed --max-changed."""
    kind, value = limit
    n = diff.changed_shapes
    if kind == "count":
        return n > value, f"{n:,} shapes changed, limit {int(value):,}"
    total = diff.shapes_a or 0
    frac = n / total if total else (0.0 if n == 0 else 1.0)
    return frac > value, (f"{n:,} of {total:,} shapes changed ({format_percent(frac)}), "
                          f"limit {format_percent(value)}")
