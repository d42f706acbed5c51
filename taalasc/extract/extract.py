"""Extraction: recover every stored value from the mask geometry alone.

Inputs are a compile folder's mask files, the base array and the placement map of its
manifest. The manifest holds no weight data: codes, scales and vectors are decoded from
which strap each via sits under. Every bit site of a used tile must carry exactly one via;
a missing via (open), two vias (short), a via on an unused site, or a via outside any used
tile other than the expected route vias are reported as defects with tile, tensor and element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray, load_base_array
from taalasc.errors import MaskError
from taalasc.outdir import MANIFEST, sha256_file

MAX_DEFECTS_KEPT = 1000  # a badly broken mask would list millions; the count stays exact


@dataclass(frozen=True)
class Defect:
    kind: str            # "open" | "short" | "extra-via" | "stray-vias"
    die: int
    tile: tuple[int, int]
    tensor: str
    segment_kind: str    # codes | scales | vector
    element: tuple[int, int] | None   # (row, col) in the source array
    bit: int | None

    def describe(self) -> str:
        where = f"die {self.die} tile {self.tile}"
        if self.element is None:
            return f"{self.kind} at {where} ({self.tensor})"
        return (f"{self.kind} at {where}: {self.tensor} {self.segment_kind} "
                f"[{self.element[0]}, {self.element[1]}] bit {self.bit}")


@dataclass
class Extraction:
    """What the masks hold: arrays per tensor, and the defects found on the way."""

    codes: dict[str, np.ndarray] = field(default_factory=dict)    # int8 [out, in]
    scales: dict[str, np.ndarray] = field(default_factory=dict)   # float16 [out, groups]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # float16 [n]
    defects: list[Defect] = field(default_factory=list)
    defect_count: int = 0
    vias_read: int = 0


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MaskError(f"{out_dir}: no {MANIFEST}; not a taalasc compile folder") from None
    except (OSError, ValueError) as exc:
        raise MaskError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "taalasc-manifest/1":
        raise MaskError(f"{path}: not a taalasc manifest (format taalasc-manifest/1)")
    return manifest


def base_of(manifest: dict, out_dir: Path) -> BaseArray:
    """The manifest's base array, refused if its YAML changed since the compile."""
    info = manifest["inputs"]["base_array"]
    # A base given as a YAML path at compile time is found again by that path.
    base = load_base_array(info.get("path") or info["name"])
    if sha256_file(Path(base.path)) != info["sha256"]:
        raise MaskError(f"{out_dir}: compiled for base array {info['name']!r} with another "
                        f"YAML (sha256 {info['sha256'][:12]}…); the installed one differs")
    return base


def mask_path(out_dir: Path, manifest: dict, die: int, fmt: str) -> Path:
    entry = manifest["dies"][die]
    if not entry.get("present", True):
        raise MaskError(f"{out_dir}: die {die} was not written (a --die compile); "
                        "extraction needs every die of the placement")
    files = entry["files"]
    if fmt not in files:
        raise MaskError(f"{out_dir}: die {die} has no {fmt} file (compiled with "
                        f"{', '.join(sorted(files))})")
    return Path(out_dir) / files[fmt]


def extract(out_dir: Path, fmt: str = "gds", jobs: int = 1) -> Extraction:
    """Decode every placed value of the compile in ``out_dir`` from its ``fmt`` mask files.

    ``jobs`` dies are read at once (each read runs gdstk in its own child process); decoding
    stays in this process, die by die in order, so at most ``jobs`` dies of via centres are
    held at a time."""
    from taalasc.emit.readback import decode_tile_bits
    from taalasc.place.pack import unpack_segment
    from taalasc.place.plan import Placement

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    base = base_of(manifest, out_dir)
    placement = Placement.from_json(manifest["placement"])
    shapes = _array_shapes(placement)
    result = Extraction()
    for (name, kind), (rows, cols) in shapes.items():
        if kind == "codes":
            result.codes[name] = np.zeros((rows, cols), dtype=np.int8)
        elif kind == "scales":
            result.scales[name] = np.zeros((rows, cols), dtype=np.float16)
        else:
            result.vectors[name] = np.zeros(cols, dtype=np.float16)

    by_die: dict[int, list] = {}
    for slot, segment in placement.assignments:
        by_die.setdefault(slot.die, []).append((slot, segment))
    paths = [mask_path(out_dir, manifest, die, fmt) for die in range(placement.dies)]
    for die, vias in enumerate(_read_dies(paths, base.pdk, jobs)):
        result.vias_read += len(vias)
        in_tiles = 0
        tile_vias = _TileBuckets(vias, base)
        for slot, segment in by_die.get(die, []):
            inside = tile_vias.of(slot.column, slot.row)
            in_tiles += len(inside)
            bits, opens, shorts = decode_tile_bits(inside, base, slot.column, slot.row)
            used = segment.used_sites
            _defects(result, "open", die, slot, segment, opens[opens < used])
            _defects(result, "short", die, slot, segment, shorts[shorts < used])
            extra = np.union1d(shorts[shorts >= used], _programmed(inside, base, slot, used))
            _defects(result, "extra-via", die, slot, segment, extra)
            values = unpack_segment(segment, bits[:used])
            (r0, r1), (c0, c1) = segment.rows, segment.cols
            if segment.kind == "codes":
                result.codes[segment.tensor][r0:r1, c0:c1] = values
            elif segment.kind == "scales":
                result.scales[segment.tensor][r0:r1, c0:c1] = values
            else:
                result.vectors[segment.tensor][c0:c1] = values.reshape(-1)
        expected_routes = manifest["dies"][die]["route_vias"]
        outside = len(vias) - in_tiles
        if outside != expected_routes:
            result.defect_count += 1
            result.defects.append(Defect("stray-vias", die, (-1, -1),
                                         f"{outside} vias outside used tiles, "
                                         f"{expected_routes} route vias expected", "", None, None))
    return result


def _array_shapes(placement) -> dict[tuple[str, str], tuple[int, int]]:
    """Full (rows, cols) of every stored array, keyed by (tensor, kind), from its segments."""
    extent: dict[tuple[str, str], tuple[int, int]] = {}
    for _, seg in placement.assignments:
        rows, cols = extent.get((seg.tensor, seg.kind), (0, 0))
        extent[(seg.tensor, seg.kind)] = (max(rows, seg.rows[1]), max(cols, seg.cols[1]))
    return dict(sorted(extent.items()))


def _read_dies(paths: list[Path], pdk, jobs: int):
    """Via centres of each die in order, reading up to ``jobs`` files concurrently (threads
    only wait on the reader child processes)."""
    from concurrent.futures import ThreadPoolExecutor

    from taalasc.emit.readback import read_vias

    if jobs < 1:
        raise MaskError(f"jobs must be at least 1, not {jobs}")
    if jobs == 1:
        yield from (read_vias(p, pdk) for p in paths)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending = [pool.submit(read_vias, p, pdk) for p in paths[:jobs]]
        for k in range(len(paths)):
            vias = pending.pop(0).result()
            if k + jobs < len(paths):
                pending.append(pool.submit(read_vias, paths[k + jobs], pdk))
            yield vias


class _TileBuckets:
    """The vias of a die grouped by the weight tile whose box holds them, in one sort.

    Within a tile the vias keep read_vias' order (by x, then y), which decode_tile_bits needs.
    """

    def __init__(self, vias: np.ndarray, base: BaseArray):
        grid, tile = base.tile_grid, base.weight_tile
        dx = vias[:, 0] - grid.origin_nm[0]
        dy = vias[:, 1] - grid.origin_nm[1]
        column, row = dx // grid.pitch_x_nm, dy // grid.pitch_y_nm
        inside = ((dx >= 0) & (dy >= 0) & (column < grid.columns) & (row < grid.rows)
                  & (dx - column * grid.pitch_x_nm < tile.width_nm)
                  & (dy - row * grid.pitch_y_nm < tile.height_nm))
        key = np.where(inside, row * grid.columns + column, -1)
        order = np.argsort(key, kind="stable")
        self._vias, self._keys, self._columns = vias[order], key[order], grid.columns

    def of(self, column: int, row: int) -> np.ndarray:
        key = row * self._columns + column
        lo, hi = np.searchsorted(self._keys, [key, key + 1])
        return self._vias[lo:hi]


def _programmed(inside: np.ndarray, base, slot, used: int) -> np.ndarray:
    """Site indices at or beyond ``used`` that carry a via (they must be empty)."""
    tile = base.weight_tile
    ox, oy = base.tile_grid.tile_origin_nm(slot.column, slot.row)
    site = ((inside[:, 1] - oy) // tile.site_pitch_y_nm) * tile.sites_x + \
        (inside[:, 0] - ox) // tile.site_pitch_x_nm
    return np.unique(site[site >= used])


def _defects(result: Extraction, kind: str, die: int, slot, segment, sites: np.ndarray) -> None:
    if not len(sites):
        return
    result.defect_count += len(sites)
    room = MAX_DEFECTS_KEPT - len(result.defects)
    width = segment.cols[1] - segment.cols[0]
    for site in sites[:max(room, 0)].tolist():
        element, bit = divmod(site, segment.bits)
        r, c = divmod(element, width)
        inside = element < segment.elements
        result.defects.append(Defect(
            kind, die, (slot.column, slot.row), segment.tensor, segment.kind,
            (segment.rows[0] + r, segment.cols[0] + c) if inside else None,
            bit if inside else None))


def chip_weights(extraction: Extraction, quantization: dict) -> dict:
    """ChipWeights (taalasc.sim) from extracted arrays and the manifest's quantization table:
    a QuantizedTensor per 2-D tensor, an fp16 vector per 1-D tensor."""
    from taalasc.errors import ModelError
    from taalasc.quant import QuantizedTensor

    weights: dict = {}
    for name, codes in extraction.codes.items():
        q = quantization.get(name)
        if q is None or name not in extraction.scales:
            raise ModelError(f"tensor {name!r}: codes in the masks but no scales or no entry "
                             "in the manifest's quantization table")
        weights[name] = QuantizedTensor(name=name, shape=tuple(codes.shape), bits=int(q["bits"]),
                                        group_size=int(q.get("group_size") or codes.shape[1]),
                                        codes=codes, scales=extraction.scales[name],
                                        sqnr_db=float("nan"))
    weights.update(extraction.vectors)
    return weights
