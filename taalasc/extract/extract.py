"""Extraction: recover every stored value from the mask geometry alone.

Inputs are a compile folder's mask files, the base array and the placement map of its
manifest. The manifest holds no weight data: codes, scales and vectors are decoded from
which line each via sits on. Every site of a used tile must carry exactly one via (zero-skip:
a 0 is no via, so each tile's via count is checked instead); a missing via (open), vias on
two lines (short), a via on an unused site, or a via outside any used tile other than the
expected route vias are reported as defects with tile, tensor and element.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.config import BaseArray, load_base_array
from taalasc.errors import MaskError
from taalasc.inputfile import MAX_INDEX_BYTES, read_json
from taalasc.outdir import MANIFEST, MANIFEST_FORMAT, sha256_file
from taalasc.place.plan import KINDS

from taalasc.extract.die import MAX_DEFECTS_KEPT, Defect, DieReadJob, extract_die  # noqa: F401


@dataclass
class Extraction:
    """What the masks hold: arrays per tensor, and the defects found on the way.

    The four mappings hold the arrays (``extract``), or, from ``extract(..., folder=...)``,
    read one array from that folder's files on each access and keep nothing (verify's way:
    memory is then one tensor, not the model)."""

    codes: Mapping[str, np.ndarray] = field(default_factory=dict)    # int8 [out, in]
    scales: Mapping[str, np.ndarray] = field(default_factory=dict)   # float16 [out, groups]
    mins: Mapping[str, np.ndarray] = field(default_factory=dict)     # float16 [out, groups]
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)  # float16 [n]
    defects: list[Defect] = field(default_factory=list)
    defect_count: int = 0
    vias_read: int = 0


def _field(kind: str) -> str:
    """The Extraction mapping a segment kind goes to."""
    return "vectors" if kind == "vector" else kind


def _dtype(kind: str):
    return np.int8 if kind == "codes" else np.float16


def _place(array: np.ndarray, r0: int, r1: int, c0: int, c1: int, values: np.ndarray) -> None:
    """Put one segment's decoded values at their place [r0:r1, c0:c1] in the full array."""
    if array.ndim == 1:   # a vector: one row
        array[c0:c1] = values.reshape(-1)
    else:
        array[r0:r1, c0:c1] = values.reshape(r1 - r0, c1 - c0)


class _InMemory:
    """Where extract puts decoded values by default: full arrays in the Extraction."""

    def __init__(self, result: Extraction, shapes: dict):
        self._arrays = {}
        for (name, kind), shape in shapes.items():
            array = np.zeros(shape if kind != "vector" else shape[1], dtype=_dtype(kind))
            getattr(result, _field(kind))[name] = self._arrays[(name, kind)] = array

    def add_die(self, assignments, values: list) -> None:
        for (_, segment), v in zip(assignments, values):
            _place(self._arrays[(segment.tensor, segment.kind)], *segment.rows, *segment.cols, v)


# Elements read from a segment file at once when an array is put together: bounds the read
# buffer beside the array (4 MiB of codes, 8 MiB of fp16).
_READ_ELEMENTS = 1 << 22


class _SegmentFiles:
    """Where extract puts decoded values with ``folder``: each die's values are appended to
    one file per stored array (tensor, kind), in die order then placement order, so the
    placement itself is the index. Appends are one write per array a die touches, never a
    strided write per segment row; an array is put together when it is asked for.

    ``boxes``: per (tensor, kind), int64 [segments, 4] of (r0, r1, c0, c1) in file order
    (32 bytes a segment, not the placement's objects: millions of segments at 8 B)."""

    def __init__(self, folder: Path, shapes: dict, boxes: dict):
        self._shapes, self._boxes = shapes, boxes
        self._paths = {key: Path(folder) / f"{i}.{key[1]}" for i, key in enumerate(shapes)}
        for path in self._paths.values():
            path.write_bytes(b"")

    def add_die(self, assignments, values: list) -> None:
        pieces: dict[tuple[str, str], list] = {}
        for (_, segment), v in zip(assignments, values):
            pieces.setdefault((segment.tensor, segment.kind), []).append(
                np.ascontiguousarray(v, dtype=_dtype(segment.kind)))
        for key, parts in pieces.items():
            with open(self._paths[key], "ab") as f:
                f.writelines(p.data for p in parts)

    def read(self, key: tuple[str, str]) -> np.ndarray:
        """The full array of ``key``, read back a batch of segments at a time."""
        rows, cols = self._shapes[key]
        dtype = _dtype(key[1])
        array = np.zeros(cols if key[1] == "vector" else (rows, cols), dtype=dtype)
        boxes = self._boxes[key]
        ends = np.cumsum((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]))
        with open(self._paths[key], "rb") as f:
            start, done = 0, 0    # first segment and first element of the batch
            while start < len(boxes):
                # the segments that end within _READ_ELEMENTS, at least one
                stop = max(start + 1, int(np.searchsorted(ends, done + _READ_ELEMENTS,
                                                          side="right")))
                buffer = np.fromfile(f, dtype=dtype, count=int(ends[stop - 1]) - done)
                if buffer.size != int(ends[stop - 1]) - done:
                    raise MaskError(f"{self._paths[key]}: extraction file is short")
                offset = 0
                for r0, r1, c0, c1 in boxes[start:stop].tolist():
                    n = (r1 - r0) * (c1 - c0)
                    _place(array, r0, r1, c0, c1, buffer[offset:offset + n])
                    offset += n
                start, done = stop, int(ends[stop - 1])
        return array


class _FileView(Mapping):
    """The arrays of one kind in a _SegmentFiles, read on each access (nothing kept)."""

    def __init__(self, files: _SegmentFiles, kind: str, names: list[str]):
        self._files, self._kind, self._names = files, kind, names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._files.read((name, self._kind))

    def __contains__(self, name) -> bool:   # Mapping's would read the array
        return name in self._names

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise MaskError(f"{out_dir}: no {MANIFEST}; not a taalasc compile folder")
    manifest = read_json(path, MAX_INDEX_BYTES, "manifest", lambda m: MaskError(f"{path}: {m}"))
    return check_format(manifest, path, MaskError)


def check_format(manifest, path: Path, error: type) -> dict:
    """``manifest`` when it is in this taalasc's manifest format; ``error`` naming ``path``
    otherwise (an older taalasc's folder is named as such: compile it again)."""
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found == MANIFEST_FORMAT:
        return manifest
    if isinstance(found, str) and found.startswith("taalasc-manifest/"):
        raise error(f"{path}: written by another taalasc version (format {found}, this one "
                    f"reads {MANIFEST_FORMAT}); compile the model again")
    raise error(f"{path}: not a taalasc manifest (format {MANIFEST_FORMAT})")


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
            base: BaseArray | None = None, placement=None,
            folder: Path | None = None) -> Extraction:
    """Decode every placed value of the compile in ``out_dir`` from its ``fmt`` mask files.

    Each die is one work unit (taalasc.extract.die.extract_die), run on ``jobs`` processes;
    results are merged here in die order, so the extraction is the same for any ``jobs``.
    ``manifest``, ``base`` and ``placement`` replace the folder's own (verify passes a
    rebuild's, so the placement and file names are not taken from the folder being judged).
    ``folder``: an empty scratch folder to hold the decoded values instead of memory (the
    Extraction then reads an array from it on each access; the caller removes the folder).
    """
    from taalasc.parallel import run_ordered
    from taalasc.place.store import read_placement

    if jobs < 1:
        raise MaskError(f"jobs must be at least 1, not {jobs}")
    out_dir = Path(out_dir)
    manifest = manifest or read_manifest(out_dir)
    base = base or base_of(manifest, out_dir)
    placement = read_placement(out_dir, manifest) if placement is None else placement
    shapes = _array_shapes(placement)
    result = Extraction()
    if folder is None:
        sink = _InMemory(result, shapes)
    else:
        sink = _SegmentFiles(Path(folder), shapes, _boxes(placement))
        for kind in ("codes", "scales", "mins", "vector"):
            setattr(result, _field(kind), _FileView(sink, kind, [n for n, k in shapes
                                                                 if k == kind]))
    parts = [placement.die_part(die) for die in range(placement.dies)]
    jobs_list = [DieReadJob(str(mask_path(out_dir, manifest, die, fmt)), base, die, part,
                            manifest["dies"][die]["route_vias"],
                            _tile_vias(manifest, die, base, part.tiles_used))
                 for die, part in enumerate(parts)]
    for job, done in zip(jobs_list, run_ordered(extract_die, jobs_list, jobs=jobs)):
        result.vias_read += done.vias_read
        result.defect_count += done.defect_count
        room = MAX_DEFECTS_KEPT - len(result.defects)
        result.defects.extend(done.defects[:max(room, 0)])
        sink.add_die(job.placement.assignments, done.values)
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
    rows = placement.rows
    extent: dict[tuple[str, str], tuple[int, int]] = {}
    for (t, k), group in _groups(placement):
        extent[(placement.tensors[t], KINDS[k])] = (int(rows["row1"][group].max()),
                                                   int(rows["col1"][group].max()))
    return dict(sorted(extent.items()))


def _groups(placement):
    """((tensor index, kind index), row indices in placement order) per stored array."""
    rows = placement.rows
    order = np.lexsort((rows["kind"], rows["tensor"]))   # stable: placement order kept
    key = rows["tensor"][order].astype(np.int64) * len(KINDS) + rows["kind"][order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    for group in np.split(order, starts[1:]):
        yield (int(rows["tensor"][group[0]]), int(rows["kind"][group[0]])), group


def _boxes(placement) -> dict[tuple[str, str], np.ndarray]:
    """[segments, 4] int64 (r0, r1, c0, c1) of every stored array, in die order then
    placement order: the order _SegmentFiles appends their values in."""
    rows = placement.rows
    return {(placement.tensors[t], KINDS[k]): np.stack(
        [rows[f][group] for f in ("row0", "row1", "col0", "col1")], axis=1).astype(np.int64)
        for (t, k), group in _groups(placement)}


class ExtractedWeights(Mapping):
    """ChipWeights (taalasc.sim) over an Extraction and the manifest's quantization table: a
    QuantizedTensor per 2-D tensor, an fp16 vector per 1-D tensor, made on each access and
    not kept, so over a folder-backed Extraction the chip model holds one tensor at a time.
    ``names``: the tensors offered (default every extracted one)."""

    def __init__(self, extraction: Extraction, quantization: dict,
                 names: list[str] | None = None):
        self._extraction, self._quantization = extraction, quantization
        self._names = list(names) if names is not None else [*extraction.codes,
                                                             *extraction.vectors]
        self._known = set(self._names)

    def __getitem__(self, name: str):
        from taalasc.errors import ModelError
        from taalasc.quant import QuantizedTensor

        if name not in self._known:
            raise KeyError(name)
        ex = self._extraction
        if name not in ex.codes:
            return ex.vectors[name]
        q = self._quantization.get(name)
        if q is None or name not in ex.scales:
            raise ModelError(f"tensor {name!r}: codes in the masks but no scales or no entry "
                             "in the manifest's quantization table")
        mins = ex.mins[name] if name in ex.mins else None
        if bool(q.get("asymmetric")) != (mins is not None):
            raise ModelError(f"tensor {name!r}: the manifest says "
                             f"{'asymmetric' if q.get('asymmetric') else 'symmetric'} codes but "
                             f"the masks {'hold' if mins is not None else 'have no'} minimums")
        codes = ex.codes[name]
        return QuantizedTensor(name=name, shape=tuple(codes.shape), bits=int(q["bits"]),
                               group_size=int(q.get("group_size") or codes.shape[1]),
                               codes=codes, scales=ex.scales[name], sqnr_db=float("nan"),
                               mins=mins, ternary=bool(q.get("ternary")))

    def __contains__(self, name) -> bool:
        return name in self._known

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def chip_weights(extraction: Extraction, quantization: dict) -> dict:
    """ChipWeights (taalasc.sim) from extracted arrays and the manifest's quantization table,
    all held (see ExtractedWeights for the same made on demand)."""
    return dict(ExtractedWeights(extraction, quantization))
