"""Extraction: recover every stored value from the mask geometry alone.

Inputs are a compile folder's mask files, the base array and the placement map of its
manifest. The manifest holds no weight data: codes, scales and vectors are decoded from
which line each via sits on. Every site of a used tile must carry exactly one via (zero-skip:
a 0 is no via, so each tile's via count is checked instead); a missing via (open), vias on
two lines (short), a via on an unused site, or a via outside any used tile other than the
expected route vias are reported as defects with tile, tensor and element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray, load_base_array
from taalasc.errors import MaskError
from taalasc.inputfile import MAX_INDEX_BYTES, read_json
from taalasc.outdir import MANIFEST, sha256_file

from taalasc.extract.die import MAX_DEFECTS_KEPT, Defect, DieReadJob, extract_die  # noqa: F401


@dataclass
class Extraction:
    """What the masks hold: arrays per tensor, and the defects found on the way."""

    codes: dict[str, np.ndarray] = field(default_factory=dict)    # int8 [out, in]
    scales: dict[str, np.ndarray] = field(default_factory=dict)   # float16 [out, groups]
    mins: dict[str, np.ndarray] = field(default_factory=dict)     # float16 [out, groups]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # float16 [n]
    defects: list[Defect] = field(default_factory=list)
    defect_count: int = 0
    vias_read: int = 0


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise MaskError(f"{out_dir}: no {MANIFEST}; not a taalasc compile folder")
    manifest = read_json(path, MAX_INDEX_BYTES, "manifest", lambda m: MaskError(f"{path}: {m}"))
    if not isinstance(manifest, dict) or manifest.get("format") != "taalasc-manifest/1":
        raise MaskError(f"{path}: not a taalasc manifest (format taalasc-manifest/1)")
    return manifest


def base_of(manifest: dict, out_dir: Path) -> BaseArray:
    """The manifest's base array, refused if its YAML changed since the compile. The file a
    manifest names is hashed before it is parsed: a manifest pointing at some other file
    gets a one-line refusal, never an excerpt of that file."""
    from taalasc.config import resolve_base_path

    where = f"{Path(out_dir) / MANIFEST}: inputs.base_array"
    info = manifest.get("inputs", {}).get("base_array") if isinstance(
        manifest.get("inputs"), dict) else None
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str)
                                             for k in ("name", "sha256")):
        raise MaskError(f"{where}: must give the base array's name and sha256")
    # A base given as a YAML path at compile time is found again by that path.
    path = resolve_base_path(info.get("path") or info["name"])
    if not path.is_file() or sha256_file(path) != info["sha256"]:
        raise MaskError(f"{out_dir}: compiled for base array {info['name']!r} with another "
                        f"YAML (sha256 {info['sha256'][:12]}…); {path} differs or is not a "
                        "regular file")
    return load_base_array(path)


def written_format(manifest: dict) -> str:
    """The format readers use when none is asked for: GDSII when every written die has it,
    else OASIS (a large compile writes OASIS only, see compile's --format auto)."""
    present = [d for d in manifest.get("dies", []) if isinstance(d, dict)
               and d.get("present", True)]
    files = [d.get("files") if isinstance(d.get("files"), dict) else {} for d in present]
    return "gds" if all("gds" in f for f in files) else "oas"


def mask_path(out_dir: Path, manifest: dict, die: int, fmt: str) -> Path:
    """The die's mask file: a plain name of a regular file inside ``out_dir`` (folder.inside),
    never a path the manifest sends elsewhere."""
    from taalasc.folder import inside

    entry = manifest["dies"][die]
    if not entry.get("present", True):
        raise MaskError(f"{out_dir}: die {die} was not written (a --die compile); "
                        "extraction needs every die of the placement")
    files = entry["files"]
    if fmt not in files:
        raise MaskError(f"{out_dir}: die {die} has no {fmt} file (compiled with "
                        f"{', '.join(sorted(files))})")
    return inside(Path(out_dir), files[fmt],
                  f"{Path(out_dir) / MANIFEST}: dies[{die}].files.{fmt}")


def extract(out_dir: Path, fmt: str = "gds", jobs: int = 1, *, manifest: dict | None = None,
            base: BaseArray | None = None) -> Extraction:
    """Decode every placed value of the compile in ``out_dir`` from its ``fmt`` mask files.

    Each die is one work unit (taalasc.extract.die.extract_die), run on ``jobs`` processes;
    results are merged here in die order, so the extraction is the same for any ``jobs``.
    ``manifest`` and ``base`` replace the folder's own (verify passes a rebuild's, so the
    placement and file names are not taken from the folder being judged).
    """
    from taalasc.parallel import run_ordered
    from taalasc.place.plan import Placement

    if jobs < 1:
        raise MaskError(f"jobs must be at least 1, not {jobs}")
    out_dir = Path(out_dir)
    manifest = manifest or read_manifest(out_dir)
    base = base or base_of(manifest, out_dir)
    placement = Placement.from_json(manifest["placement"])
    result = Extraction()
    for (name, kind), (rows, cols) in _array_shapes(placement).items():
        if kind == "codes":
            result.codes[name] = np.zeros((rows, cols), dtype=np.int8)
        elif kind in ("scales", "mins"):
            getattr(result, kind)[name] = np.zeros((rows, cols), dtype=np.float16)
        else:
            result.vectors[name] = np.zeros(cols, dtype=np.float16)

    by_die: dict[int, list] = {}
    for slot, segment in placement.assignments:
        by_die.setdefault(slot.die, []).append((slot, segment))
    jobs_list = [DieReadJob(str(mask_path(out_dir, manifest, die, fmt)), base, die,
                            tuple(by_die.get(die, [])), manifest["dies"][die]["route_vias"],
                            _tile_vias(manifest, die, base, len(by_die.get(die, []))))
                 for die in range(placement.dies)]
    for job, done in zip(jobs_list, run_ordered(extract_die, jobs_list, jobs=jobs)):
        result.vias_read += done.vias_read
        result.defect_count += done.defect_count
        room = MAX_DEFECTS_KEPT - len(result.defects)
        result.defects.extend(done.defects[:max(room, 0)])
        for (_, segment), values in zip(job.assignments, done.values):
            (r0, r1), (c0, c1) = segment.rows, segment.cols
            if segment.kind == "codes":
                result.codes[segment.tensor][r0:r1, c0:c1] = values
            elif segment.kind in ("scales", "mins"):
                getattr(result, segment.kind)[segment.tensor][r0:r1, c0:c1] = values
            else:
                result.vectors[segment.tensor][c0:c1] = values.reshape(-1)
    return result


def _tile_vias(manifest: dict, die: int, base: BaseArray, tiles: int) -> tuple | None:
    """Zero-skip: the bit vias the compile drew per tile of ``die`` (manifest ``tile_vias``,
    placement order), which extraction checks; None for the other encodings."""
    if base.weight_tile.encoding != "zero-skip":
        return None
    counts = manifest["dies"][die].get("tile_vias")
    if not isinstance(counts, list) or len(counts) != tiles \
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        raise MaskError(f"{MANIFEST}: dies[{die}].tile_vias: a zero-skip compile must list the "
                        f"bit vias of its {tiles} tiles on die {die}")
    return tuple(counts)


def _array_shapes(placement) -> dict[tuple[str, str], tuple[int, int]]:
    """Full (rows, cols) of every stored array, keyed by (tensor, kind), from its segments."""
    extent: dict[tuple[str, str], tuple[int, int]] = {}
    for _, seg in placement.assignments:
        rows, cols = extent.get((seg.tensor, seg.kind), (0, 0))
        extent[(seg.tensor, seg.kind)] = (max(rows, seg.rows[1]), max(cols, seg.cols[1]))
    return dict(sorted(extent.items()))


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
        mins = extraction.mins.get(name)
        if bool(q.get("asymmetric")) != (mins is not None):
            raise ModelError(f"tensor {name!r}: the manifest says "
                             f"{'asymmetric' if q.get('asymmetric') else 'symmetric'} codes but "
                             f"the masks {'hold' if mins is not None else 'have no'} minimums")
        weights[name] = QuantizedTensor(name=name, shape=tuple(codes.shape), bits=int(q["bits"]),
                                        group_size=int(q.get("group_size") or codes.shape[1]),
                                        codes=codes, scales=extraction.scales[name],
                                        sqnr_db=float("nan"), mins=mins,
                                        ternary=bool(q.get("ternary")))
    weights.update(extraction.vectors)
    return weights
