"""One die of a compile, as a self-contained work unit, and the --layers / --die selections.

A die is the natural shard of a compile: its mask files depend only on the tiles placed on
it and the routes between them. ``compile_die`` reads just the tensors that have a tile on
its die (one tensor at a time: memory is one tensor plus one die's cells), quantizes them,
draws the die, runs the rule check on it and returns counts. A tensor spanning two dies is
read and quantized by both units; quantization is deterministic, so both agree.

The same function runs in this process, in a spawned process or on a Dask worker, and
writes the same bytes everywhere: the tiles of a die are always added in placement order.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taalasc.config.base_array import MAX_DIES
from taalasc.errors import CheckFailed, ModelError


RENDER_BATCH = 64  # tiles rendered together: numpy work amortised over a batch


@dataclass(frozen=True)
class TensorJob:
    """Quantize one tensor that several dies hold, once, into ``folder`` (picklable)."""

    ckpt: object
    name: str
    spec: object                  # QuantSpec
    folder: str                   # where the arrays go (the compile's quantization cache)
    quantizer: object = None      # as DieJob.quantizer


def quantize_shared(job: TensorJob) -> tuple[str, dict]:
    """Quantize ``job.name`` and save its arrays as .npy files in ``job.folder``; return the
    tensor's manifest entry. The dies that hold the tensor then read only their rows
    (``load_shared``) instead of each quantizing the whole tensor again: an 8 B model's
    embedding and lm_head (525 M weights each) span ~80 dies."""
    from taalasc.quant.method import TensorQuantizer

    quantizer = job.quantizer or TensorQuantizer(job.ckpt, None)
    qt = quantizer(job.name, job.spec)
    stem = Path(job.folder) / _cache_stem(job.name)
    for kind in ("codes", "scales", "mins"):
        array = getattr(qt, kind)
        if array is not None:
            np.save(f"{stem}.{kind}.npy", np.ascontiguousarray(array), allow_pickle=False)
    return job.name, quant_entry(qt)


def load_shared(folder: str, name: str, entry: dict):
    """The QuantizedTensor ``quantize_shared`` saved, its arrays memory-mapped read-only (a
    die touches the pages of its own segments' rows only)."""
    from taalasc.quant import QuantizedTensor

    stem = Path(folder) / _cache_stem(name)
    codes = np.load(f"{stem}.codes.npy", mmap_mode="r", allow_pickle=False)
    mins = Path(f"{stem}.mins.npy")
    return QuantizedTensor(name=name, shape=tuple(codes.shape), bits=entry["bits"],
                           group_size=entry["group_size"], codes=codes,
                           scales=np.load(f"{stem}.scales.npy", mmap_mode="r",
                                          allow_pickle=False),
                           sqnr_db=float(entry["sqnr_db"]) if entry["sqnr_db"] is not None
                           else float("nan"),
                           mins=np.load(mins, mmap_mode="r", allow_pickle=False)
                           if mins.exists() else None,
                           ternary=bool(entry.get("ternary")))


def is_saved(folder: str, name: str) -> bool:
    """Whether ``quantize_shared`` saved ``name`` in ``folder``."""
    return Path(f"{Path(folder) / _cache_stem(name)}.codes.npy").is_file()


def _cache_stem(name: str) -> str:
    """A file stem for a tensor name (names hold dots and slashes): its sha256."""
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DieJob:
    """Everything a worker needs to draw one die (picklable, no open files)."""

    ckpt: object                  # taalasc.model.Checkpoint (headers only)
    base: object                  # BaseArray
    die: int
    placement: object             # taalasc.place.Placement cut to this die (die_part)
    specs: dict                   # tensor -> QuantSpec (only tensors on this die)
    stage: str | None             # folder the die files are written into; None: hash only
    formats: tuple[str, ...]
    tag: str                      # the compile's part of every cell name (names.compile_tag)
    quantizer: object = None      # taalasc.quant.method.TensorQuantizer; None: round to nearest
    shared: dict | None = None    # tensor -> manifest entry of tensors quantize_shared saved
    shared_folder: str | None = None
    keep_layout: bool = False     # return the die's DieLayout (verify's explanation of a die)


@dataclass(frozen=True)
class DieOutcome:
    result: object                # DieMaskResult, without its layout unless asked for
    quant_stats: dict             # tensor -> {"bits", "group_size", "sqnr_db", "asymmetric", "ternary"}
    tile_vias: np.ndarray | None = None   # zero-skip: bit vias per tile, placement order


def compile_die(job: DieJob) -> DieOutcome:
    """Read, quantize, pack and draw every tile of ``job.die``; rule-check the die files."""
    from taalasc.custom.tiles import render_tiles
    from taalasc.custom.writer import DieMaskWriter
    from taalasc.place.pack import pack_segment
    from taalasc.quant.method import TensorQuantizer

    # None: plain round to nearest, made here rather than sent with every job
    quantizer = job.quantizer or TensorQuantizer(job.ckpt, None)

    writer = DieMaskWriter(job.base, job.die, None if job.stage is None else Path(job.stage),
                           stem=f"die{job.die}", formats=job.formats, tag=job.tag)
    stats: dict[str, dict] = {}
    try:
        for name, pairs in _by_tensor(job.placement.assignments):
            spec = job.specs.get(name)
            if spec is not None and job.shared and name in job.shared:
                source = load_shared(job.shared_folder, name, job.shared[name])
                stats[name] = job.shared[name]
            elif spec is not None:
                source = quantizer(name, spec)
                stats[name] = quant_entry(source)
            else:   # with --awq the norms carry the folded scales: read them from source
                source = as_fp16_vector(name, quantizer.source.read(name))
            for start in range(0, len(pairs), RENDER_BATCH):
                batch = pairs[start:start + RENDER_BATCH]
                rendered = render_tiles(job.base, [pack_segment(seg, source) for _, seg in batch],
                                        job.formats,
                                        where=[f"die {job.die} tile ({slot.column}, {slot.row})"
                                               for slot, _ in batch], prefix=writer.prefix)
                for (slot, _), tile in zip(batch, rendered):
                    writer.add_rendered(slot.column, slot.row, tile)
            del source
        for a, b in job.placement.links:
            writer.add_route((a.column, a.row), (b.column, b.row))
    except BaseException:
        writer.abort()
        raise
    result = writer.close()
    rule_check_die(job.base, result)
    tile_vias = None
    if job.base.weight_tile.encoding == "zero-skip":   # its manifest lists them
        tile_vias = np.array([result.tile_vias[(s.column, s.row)]
                              for s, _ in job.placement.assignments], np.int64)
    # The parent keeps one result per die: a die's layout (route, fill, density windows,
    # tile names: 1.18 MB pickled on an 8 B model's reticle die) and per-tile counts stay
    # here, or the parent would hold them for all 1,047 dies (2.08 GB in verify).
    result = dataclasses.replace(result, layout=result.layout if job.keep_layout else None,
                                 tile_vias={})
    return DieOutcome(result=result, quant_stats=stats, tile_vias=tile_vias)


def quant_entry(qt) -> dict:
    """The manifest's record of one quantized tensor: what extraction needs to rebuild it."""
    entry = {"bits": qt.bits, "group_size": qt.group_size, "sqnr_db": json_float(qt.sqnr_db)}
    if qt.asymmetric:  # only then: symmetric manifests keep their bytes
        entry["asymmetric"] = True
    if qt.ternary:     # verify quantizes again with the same TWN rule
        entry["ternary"] = True
    return entry


def rule_check_die(base, die) -> None:
    """Check one written die against the PDK rules; CheckFailed on any violation."""
    from taalasc.checks.check import check_die

    violations = check_die(die, base)
    if violations:
        first = violations[0]
        raise CheckFailed(f"die {die.die}: {len(violations)} rule violations in the emitted "
                          f"masks, first: {first.rule} at ({first.x_nm}, {first.y_nm}) nm: "
                          f"{first.message}")


def _by_tensor(assignments):
    """Group consecutive (slot, segment) pairs by tensor, keeping placement order."""
    group: list = []
    for slot, segment in assignments:
        if group and group[-1][1].tensor != segment.tensor:
            yield group[0][1].tensor, group
            group = []
        group.append((slot, segment))
    if group:
        yield group[0][1].tensor, group


def as_fp16_vector(name: str, values: np.ndarray) -> np.ndarray:
    """A 1-D tensor as the fp16 row the chip stores; ModelError on non-finite values."""
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values.ravel()))[0])
        raise ModelError(f"{name}: element {bad} is {values.ravel()[bad]}; weights must be finite")
    with np.errstate(over="ignore"):
        vector = values.astype(np.float16)
    if not np.all(np.isfinite(vector)):
        bad = int(np.flatnonzero(~np.isfinite(vector.ravel()))[0])
        raise ModelError(f"{name}: element {bad} = {values.ravel()[bad]:g} overflows fp16, "
                         "the format the chip stores vectors in")
    return vector.reshape(1, -1)


def json_float(value: float):
    return None if not np.isfinite(value) else round(float(value), 4)


# -- selections -------------------------------------------------------------------------------
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
LAYER_WORDS = ("embed", "head")


def _ranges(text: str, what: str) -> list[tuple[int, int]]:
    """'0-3,7' -> [(0, 3), (7, 7)], syntax only: nothing is expanded."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        m = _RANGE.match(part)
        if not m:
            raise ModelError(f"{what}: each item must be N or A-B, not {part!r} in {text!r}")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise ModelError(f"{what}: range {part!r} must run upwards (A-B with A <= B)")
        out.append((lo, hi))
    return out


def parse_index_set(text: str, what: str, count: int = MAX_DIES) -> tuple[int, ...]:
    """'0-3,7' -> (0, 1, 2, 3, 7); ModelError naming ``what`` on bad syntax or an index of
    ``count`` or more. Every range is checked before it is expanded, so '0-999999999' costs
    nothing. --die is parsed before the placement says how many dies there are, so its bound
    is MAX_DIES, the most any base array may allow (the compile checks the real count)."""
    ranges = _ranges(text, what)
    top = max(hi for _, hi in ranges)
    if top >= count:
        raise ModelError(f"{what}: {top} must be below {count:,} (indices run from 0 to "
                         f"{count - 1:,})")
    return tuple(sorted({i for lo, hi in ranges for i in range(lo, hi + 1)}))


def select_layers(ckpt, spec: str) -> list[str]:
    """Tensor names (dataflow order) chosen by a --layers spec.

    Syntax: comma-separated items, each a block index ``N``, a range ``A-B`` (inclusive), or
    ``embed`` (tensors before the first block: embeddings) or ``head`` (tensors after the last
    block: final norm, lm_head, pooler). Example: ``embed,0-3``.
    """
    names = list(ckpt.tensors)
    layers = {n: ckpt.layer_of(n) for n in names}
    present = sorted({v for v in layers.values() if v is not None})
    first = next((i for i, n in enumerate(names) if layers[n] is not None), len(names))
    words = {w.strip() for w in str(spec).split(",")} & set(LAYER_WORDS)
    numeric = ",".join(w.strip() for w in str(spec).split(",") if w.strip() not in LAYER_WORDS)
    last = present[-1] if present else -1
    missing: list[int] = []
    if numeric:  # the ranges are checked against the model's blocks before they are expanded
        missing = [max(lo, last + 1) for lo, hi in _ranges(numeric, "--layers") if hi > last]
    wanted = set()
    if numeric and not missing:
        wanted = set(parse_index_set(numeric, "--layers", last + 1))
        missing = sorted(wanted - set(present))
    if missing:
        have = f"0-{last}" if present else "none"
        raise ModelError(f"--layers: layer {min(missing)} must be one of the model's blocks "
                         f"({have}), not {min(missing)}")
    chosen = []
    for i, name in enumerate(names):
        layer = layers[name]
        if layer is not None:
            keep = layer in wanted
        else:
            keep = ("embed" if i < first else "head") in words
        if keep:
            chosen.append(name)
    if not chosen:
        raise ModelError(f"--layers {spec!r} selects no tensor")
    return chosen
