"""The compile flow: load → quantize → place → emit masks → report, as plain steps.

Each step takes typed input and returns typed output; this module only joins them and owns
the output folder (staged, then installed atomically). The placement is planned from the
checkpoint header alone; then every die is an independent work unit (taalasc.dieworker) that
reads, quantizes and draws only the tensors with a tile on it, one tensor at a time, so
memory is bounded by one tensor plus one die, not by the model. Units run serially, on local
processes (``jobs``) or on a Dask cluster (``scheduler``), with the same output bytes.

Selections: ``layers`` compiles a sub-model (only those blocks, placed from die 0, with the
bits the whole model would give them); ``dies`` writes only some dies of the full placement,
byte-identical to the same files of the full compile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from taalasc import __version__
from taalasc.config import BaseArray, load_base_array
from taalasc.errors import ModelError, PlacementError
from taalasc.outdir import MANIFEST, MANIFEST_FORMAT, sha256_file, staged_output

FORMATS = ("gds", "oas")
# --format auto (formats=("auto",)): GDSII as well as OASIS while the compile's GDSII stays
# within AUTO_GDS_MAX_BYTES, OASIS alone above. GDSII costs about 5.2 bytes per programmed
# site (the demo die: 5.19 B/bit; a reticle die 3.8, docs/scale.md) and OASIS about 0.4, so
# an 8 B model at 4 bits would write ~170 GB of GDSII next to ~10 GB of OASIS.
AUTO = "auto"
AUTO_GDS_MAX_BYTES = 4 << 30
GDS_BYTES_PER_SITE = 5.2


@dataclass(frozen=True)
class CompileOptions:
    base: str = "sky130-demo"
    default_bits: int = 4
    rules: tuple[str, ...] = ()           # 'GLOB=BITS'
    group_size: int | None = 32           # None: one scale per output channel
    auto: bool = False                    # HC1-style 3/6-bit automatic policy
    budget_bits_per_weight: float = 3.5
    formats: tuple[str, ...] = FORMATS
    max_dies: int | None = None
    curve: str = "gilbert-runs"           # tile visiting order, see taalasc.place.curve
    force: bool = False
    layers: str | None = None             # --layers: only these blocks ('embed,0-3,head')
    dies: tuple[int, ...] | None = None   # --die: only these dies of the full placement
    method: str = "rtn"                   # rtn | gptq (taalasc.quant.method)
    asymmetric: bool = False              # codes with an fp16 minimum per group
    calib: str | None = None              # calibration text file, or "default" (gptq, auto)
    calib_tokens: str | None = None       # calibration token-id file
    native: bool = True                   # keep a GGUF file's own Q8_0/Q4_0/Q4_1 codes
    awq: bool = False                     # activation-aware scales folded into the norms
    # The base was not chosen by the user: a model too large for it goes to the built-in
    # base that holds it (the manifest records the base used, not this flag).
    base_fallback: bool = False
    merge: bool = False                   # also write OUT/merged: base die + custom layers

    # Quantization options recorded in the manifest only when they differ from the default,
    # so compiles made before they existed keep their inputs digest.
    _QUANT_DEFAULTS = {"method": "rtn", "asymmetric": False, "calib": None,
                       "calib_tokens": None, "native": True, "awq": False}

    def to_json(self) -> dict:
        out = {"base": self.base, "default_bits": self.default_bits, "rules": list(self.rules),
               "group_size": self.group_size, "auto": self.auto,
               "budget_bits_per_weight": self.budget_bits_per_weight,
               "formats": list(self.formats), "max_dies": self.max_dies, "curve": self.curve}
        # Only when set, so full compiles keep the inputs digest they had before selections.
        if self.layers is not None:
            out["layers"] = self.layers
        if self.dies is not None:
            out["dies"] = sorted(set(self.dies))
        for key, default in self._QUANT_DEFAULTS.items():
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        if self.merge:
            out["merge"] = True
        return out

    def bit_policy(self, ternary: bool = False):
        """The taalasc.quant.BitPolicy these options ask for (compile and verify share it).
        ``ternary``: the base array stores ternary weights (its encoding, not an option)."""
        from taalasc.quant import AutoMixed, BitPolicy, parse_rule

        auto = AutoMixed(budget_bits_per_weight=self.budget_bits_per_weight) if self.auto \
            else None
        return BitPolicy(default_bits=self.default_bits,
                         rules=tuple(parse_rule(r) for r in self.rules),
                         group_size=self.group_size, auto=auto, method=self.method,
                         asymmetric=self.asymmetric, calib=self.calib,
                         calib_tokens=self.calib_tokens, native=self.native, awq=self.awq,
                         ternary=ternary)

    @classmethod
    def from_json(cls, d: dict) -> "CompileOptions":
        """The options a manifest recorded (``to_json``), for verify to quantize again."""
        keep = {k: d[k] for k in ("base", "default_bits", "group_size", "auto",
                                  "budget_bits_per_weight", "max_dies", "curve", "layers",
                                  "merge", *cls._QUANT_DEFAULTS) if k in d}
        return cls(rules=tuple(d.get("rules", ())), formats=tuple(d.get("formats", FORMATS)),
                   dies=None if d.get("dies") is None else tuple(d["dies"]), **keep)


@dataclass(frozen=True)
class CompileResult:
    """What a compile installed: its folder, its manifest (manifest.json as data) and the
    rows `taalasc compile` prints."""

    out_dir: Path
    manifest: dict
    summary: list[tuple[str, str]] = field(default_factory=list)

    @property
    def report(self):
        """The compile's report.json as a taalasc.report.Report: area, timing, power, SRAM
        and cost metrics, e.g. ``result.report.value("design__die__area")``."""
        from taalasc.report import REPORT_FILE, Report

        return Report.read(self.out_dir / REPORT_FILE)

    @property
    def mask_files(self) -> list[Path]:
        """The die files of the custom layers, in die order (GDSII before OASIS)."""
        return [self.out_dir / name for die in self.manifest["dies"]
                for _, name in sorted(die["files"].items())]

    @property
    def merged_files(self) -> list[Path]:
        """With merge: the base die merged with each die's custom layers (merged/die{n})."""
        return [self.out_dir / name for name in self.manifest["outputs"]
                if name.startswith(MERGED_DIR + "/")]


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _inputs(ckpt, base: BaseArray, options: CompileOptions) -> dict:
    files = [{"name": Path(f).name, "bytes": Path(f).stat().st_size, "sha256": sha256_file(Path(f))}
             for f in ckpt.files]
    config = None if ckpt.config is None else hashlib.sha256(
        json.dumps(ckpt.config, sort_keys=True).encode()).hexdigest()
    return {
        "model": {"files": files, "config_sha256": config, "architecture": ckpt.architecture,
                  **_model_notes(ckpt, options)},
        "base_array": {"name": base.name, "sha256": sha256_file(Path(base.path)),
                       # a YAML given by path (not a built-in) is found again by its path
                       **({"path": str(Path(base.path).resolve())}
                          if str(options.base).endswith((".yaml", ".yml")) else {})},
        "pdk": {"name": base.pdk.name, "sha256": sha256_file(Path(base.pdk.path))},
        "options": options.to_json(),
        "tool": {"name": "taalasc", "version": __version__},
        **_calibration_input(options),
    }


def _model_notes(ckpt, options: CompileOptions) -> dict:
    """What the chip leaves out or makes again, recorded only when there is some: buffers
    (BERT's position_ids, rotary caches) and GGUF block types it cannot store as they are."""
    from taalasc.quant.method import native_specs

    notes = {}
    skipped = getattr(ckpt, "skipped", {})
    if skipped:
        notes["skipped"] = dict(sorted(skipped.items()))
    if getattr(ckpt, "native_spec", None) is not None:
        native = native_specs(ckpt) if options.native else {}
        again = sorted({ckpt.tensors[n].dtype for n, i in ckpt.tensors.items()
                        if len(i.shape) == 2 and n not in native})
        if again:
            notes["requantized_block_types"] = again
    return notes


def _calibration_input(options: CompileOptions) -> dict:
    """The calibration file's hash: GPTQ codes depend on every byte of it."""
    path = options.calib_tokens or (options.calib if options.calib != "default" else None)
    if path is None or not (options.method == "gptq" or options.auto or options.awq):
        return {}
    from taalasc.inputfile import read_bytes
    from taalasc.quant.calib import MAX_TOKEN_FILE_BYTES

    if not Path(path).exists():
        raise ModelError(f"{path}: calibration file does not exist")
    # the shared reader: a FIFO or /dev/zero is refused by name, the size is capped
    data = read_bytes(path, MAX_TOKEN_FILE_BYTES, "calibration file",
                      lambda message: ModelError(f"{path}: {message}"))
    return {"calibration": {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}}


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cell_name_tag(inputs: dict) -> str:
    """The compile's part of every cell name of its die files (custom/names.py): from the
    digest of its inputs without the --die and --format selections, which choose the files
    written, not what a die draws; so a die file is the same whichever dies and formats are
    written, and differs (in every cell name) from any other compile's."""
    from taalasc.custom.names import compile_tag

    drawn = {k: v for k, v in inputs["options"].items() if k not in ("dies", "formats")}
    return compile_tag(_digest({**inputs, "options": drawn}))


class Planned(NamedTuple):
    base: BaseArray
    ckpt: Any                     # taalasc.model.Checkpoint
    specs: dict                   # tensor -> QuantSpec
    tensors: list                 # taalasc.place.plan.TensorSpec, placement order
    placement: Any                # taalasc.place.plan.Placement


def plan(model: Path, options: CompileOptions, *, base: BaseArray | None = None) -> Planned:
    """Header-only steps: base array, checkpoint, bits per tensor, placement. Writes nothing.
    ``base`` replaces loading ``options.base``."""
    from taalasc.model import arch, open_checkpoint
    from taalasc.place.plan import TensorSpec, plan_placement
    from taalasc.dieworker import select_layers
    from taalasc.quant import assign_bits

    base = base or load_base_array(options.base)
    if not base.pdk.mask_capable:
        raise PlacementError(f"base array {base.name!r} is on {base.pdk.name}, an estimation-only "
                             "PDK with no public mask layers; use `taalasc estimate` for it")
    for fmt in options.formats:
        if fmt not in FORMATS and tuple(options.formats) != (AUTO,):
            raise PlacementError(f"format must be one of {', '.join(FORMATS)} (or auto alone), "
                                 f"not {fmt!r}")
    _check_mergeable(base, options)
    ckpt = open_checkpoint(model)
    # Bits are chosen on the whole model, so a --layers compile quantizes its tensors exactly
    # as the full compile does (the auto policy's budget is a whole-model budget).
    specs = assign_bits(ckpt, options.bit_policy(base.weight_tile.encoding == "ternary"))
    names = list(ckpt.tensors) if options.layers is None else select_layers(ckpt, options.layers)
    specs = {n: s for n, s in specs.items() if n in set(names)}
    tensors = []
    for name in names:
        info = ckpt.tensors[name]
        if len(info.shape) not in (1, 2) or info.numel == 0:
            raise ModelError(f"{name}: shape {list(info.shape)} cannot be placed; taalasc places "
                             "non-empty 1-D vectors and 2-D weight matrices")
        spec = specs.get(name)
        tensors.append(TensorSpec(name=name, shape=tuple(info.shape),
                                  bits=spec.bits if spec else None,
                                  group_size=spec.group_size if spec else None,
                                  layer=ckpt.layer_of(name),
                                  asymmetric=bool(spec and spec.asymmetric)))
    arch.require_matrices({t.name: t.shape for t in tensors},
                          f"{model}" + (f" --layers {options.layers}" if options.layers else ""))
    try:
        placement = plan_placement(tensors, base, max_dies=options.max_dies,
                                   curve=options.curve)
    except PlacementError:
        larger = _larger_base(tensors, base, options) if options.base_fallback else None
        if larger is None:
            raise   # the error names the bases that hold the model, or says none does
        base = larger
        placement = plan_placement(tensors, base, max_dies=options.max_dies,
                                   curve=options.curve)
        _check_mergeable(base, options)
    return Planned(base, ckpt, specs, tensors, placement)


def _check_mergeable(base: BaseArray, options: CompileOptions) -> None:
    """--merge: one error line before the model is read when the base die cannot be drawn."""
    if options.merge:
        from taalasc.base.merge import check_mergeable

        check_mergeable(base)


def _larger_base(tensors, base: BaseArray, options: CompileOptions) -> BaseArray | None:
    """The built-in base a model goes to when it does not fit the default one: on the same
    PDK first, then fewest dies (taalasc.place.fit); None when none holds it."""
    from taalasc.place.fit import bases_that_hold

    found = bases_that_hold(tensors, base, options.max_dies)
    if not found:
        return None
    same_pdk = [name for name, _, _ in found if load_base_array(name).pdk.name == base.pdk.name]
    return load_base_array((same_pdk or [found[0][0]])[0])


def compile_model(model: Path, out_dir: Path, options: CompileOptions,
                  progress: Progress | None = None, *, jobs: int = 1,
                  scheduler: Any = None) -> CompileResult:
    """Compile ``model`` onto ``options.base`` and install the mask set in ``out_dir``.

    Dies are independent work units (see taalasc.dieworker), run serially (``jobs`` 1), on
    ``jobs`` local processes, or on a Dask cluster (``scheduler``: a ``tcp://`` address or a
    Client/LocalCluster). The output bytes do not depend on ``jobs`` or ``scheduler``.
    """
    planned = plan(Path(model), options)
    options = _as_planned(options, planned)
    inputs = _inputs(planned.ckpt, planned.base, options)   # hashes every checkpoint file
    with staged_output(Path(out_dir), inputs_digest=_digest(inputs), force=options.force,
                       inputs=_input_paths(model, planned.ckpt, planned.base, options)) as stage:
        quantizer = _quantizer(planned.ckpt, options, planned.specs, progress)
        manifest, _ = build(planned, options, inputs, stage, quantizer, progress, jobs=jobs,
                            scheduler=scheduler)
    return CompileResult(out_dir=Path(out_dir), manifest=manifest, summary=_summary(manifest))


def rebuild(model: Path, options: CompileOptions, stage: Path, *, base: BaseArray | None = None,
            quantizer=None, progress: Progress | None = None, jobs: int = 1,
            keep_quantized: Path | None = None):
    """What ``compile_model`` writes for these inputs, for verify to compare byte for byte.

    The small files (manifest, reports, overview, layer properties) go into ``stage``; the
    mask files are drawn into a hash-only writer, so their sizes and sha256 digests are in
    the manifest's ``outputs`` but nothing of their size touches the disk - except with
    ``options.merge``: each die is then written to ``stage``, merged into a hash-only sink
    and removed before the next (the merge reads the die file). ``base`` replaces
    loading ``options.base`` (a YAML path recorded relative to another folder). ``quantizer``:
    a TensorQuantizer to share (its calibration Hessians are costly); default the compile's.
    ``keep_quantized``: an empty folder that keeps every quantized tensor's arrays
    (dieworker.load_shared reads them), so verify's codes check does not quantize again.
    Returns (Planned, manifest dict, the dies' DieMaskResults, the quantizer used or None
    for round to nearest).
    """
    planned = plan(Path(model), options, base=base)
    options = _as_planned(options, planned)
    if quantizer is None:
        quantizer = _quantizer(planned.ckpt, options, planned.specs, progress)
    manifest, dies = build(planned, options, _inputs(planned.ckpt, planned.base, options),
                           stage, quantizer, progress, jobs=jobs, write_masks=False,
                           keep_quantized=keep_quantized)
    return planned, manifest, dies, quantizer


def _as_planned(options: CompileOptions, planned: "Planned") -> CompileOptions:
    """The options as the manifest records them: the base used, the formats chosen."""
    # Too large for the default base: the manifest records the base used. (A base the user
    # chose, by name or YAML path, is never switched and stays recorded as given.)
    base = planned.base
    if options.base_fallback and base.name != options.base:
        options = dataclasses.replace(options, base=base.name)
    if tuple(options.formats) == (AUTO,):
        gds_bytes = planned.placement.sites_used * GDS_BYTES_PER_SITE
        options = dataclasses.replace(
            options, formats=FORMATS if gds_bytes <= AUTO_GDS_MAX_BYTES else ("oas",))
    return options


def build(planned: "Planned", options: CompileOptions, inputs: dict, stage: Path, quantizer,
          progress: Progress | None = None, *, jobs: int = 1, scheduler: Any = None,
          write_masks: bool = True, keep_quantized: Path | None = None) -> tuple[dict, list]:
    """Write every output of the compile into ``stage`` (masks only when ``write_masks``);
    return its manifest and the dies' DieMaskResults. ``inputs``: ``_inputs`` of these
    options, made once by the caller (it hashes every checkpoint file). The bytes depend on
    the inputs alone. ``keep_quantized``: see ``rebuild``."""
    from taalasc.base.merge import die_merger
    from taalasc.dieworker import compile_die
    from taalasc.custom.writer import layer_properties_lyp
    from taalasc.parallel import run_ordered
    from taalasc.place.metrics import placement_stats, rowmajor_wirelength_nm
    from taalasc.place.overview import write_pictures
    from taalasc.place.store import write_placement

    base, ckpt, specs, tensors, placement = planned
    dies_wanted = _dies_wanted(placement, options.dies)
    digest = _digest(inputs)
    tick = progress or (lambda stage, done, total: None)
    # Each die's share of the placement (its rows, a few thousand at most) and the tensors
    # on it: the jobs carry rows, not (slot, segment) objects, which an 8 B model has 2.2 M of.
    parts = {d: placement.die_part(d) for d in dies_wanted}
    on_die = {d: _tensors_on(part) for d, part in parts.items()}

    # The pictures, placement statistics and placement file depend on the placement only:
    # while dies run in other processes this thread would idle, so it makes them then.
    def placement_only():
        legend = write_pictures(placement, base, stage, dies_wanted, Path(ckpt.path).name)
        stats = placement_stats(placement, base) | {
            "place__wirelength_rowmajor_nm": rowmajor_wirelength_nm(
                tensors, base, max_dies=options.max_dies, placement=placement)}
        write_placement(stage, placement)
        return legend, stats

    quant_stats: dict[str, dict] = {}
    dies, merged = [], {}
    tile_vias: dict[int, np.ndarray] = {}   # zero-skip: die -> bit vias per tile
    with contextlib.ExitStack() as stack:
        # --merge: the base die is built once, before any thread or worker starts.
        merger = stack.enter_context(die_merger(base, tuple(options.formats))) \
            if options.merge else None
        side = _Side(placement_only, background=jobs > 1 or scheduler is not None)
        shared, folder = _quantize_shared(stack, ckpt, specs, on_die, stage, quantizer, jobs,
                                          scheduler, tick, keep=keep_quantized)
        work = [_die_job(planned, options, inputs, parts[d], quantizer,
                         stage if write_masks or merger is not None else None, shared, folder)
                for d in dies_wanted]
        del parts
        try:
            for done, outcome in enumerate(run_ordered(compile_die, work, jobs=jobs,
                                                       scheduler=scheduler)):
                dies.append(outcome.result)
                quant_stats.update(outcome.quant_stats)
                if outcome.tile_vias is not None:
                    tile_vias[outcome.result.die] = outcome.tile_vias
                if merger is not None:
                    merged.update(_merge_die(merger, outcome.result, stage, write_masks))
                tick("dies", done + 1, len(work))
        except BaseException:
            side.wait()  # it writes into the staging folder: let it finish before cleanup
            raise
    (stage / f"{base.pdk.name}.lyp").write_text(layer_properties_lyp(base.pdk))
    legend, stats = side.result()
    report = _report(base, ckpt, specs, placement, dies, tensors)
    if options.merge:   # the base die is drawn: its real cells beside the formula figures
        from taalasc.base.build import cell_metrics

        report.metrics += cell_metrics(base)
    report.write(stage / "report.json")
    (stage / "report.md").write_text(report.to_markdown())
    quantization = dict(sorted(quant_stats.items()))
    _write_html(stage, report, placement, quantization, _die_entries(placement, dies))
    manifest = _manifest(inputs, digest, placement, quantization, dies, legend, stage, merged,
                         tile_vias)
    manifest["selection"] = {"layers": options.layers,
                             "dies": None if options.dies is None else list(dies_wanted),
                             "partial": options.dies is not None
                             and len(dies_wanted) < placement.dies}
    manifest["placement_stats"] = stats
    (stage / MANIFEST).write_text(_dumps(manifest) + "\n")
    return manifest, dies


def _write_html(stage: Path, report, placement, quantization: dict, dies: list[dict]) -> None:
    """report.html: the page a review gets, with the pictures written before it (the
    manifest lists it, and verify rebuilds it, like every other file)."""
    from taalasc.report.html import HTML_FILE, compile_page, compile_pictures

    page = compile_page(report, placement, quantization, dies, compile_pictures(stage, dies))
    (stage / HTML_FILE).write_text(page, encoding="utf-8")


MERGED_DIR = "merged"


def _merge_die(merger, die, stage: Path, write_masks: bool) -> dict:
    """--merge: one die's files merged with the base die into ``stage``/merged (taalasc.base.
    merge, as `taalasc merge` does). Verify's rebuild (``write_masks`` false) only hashes the
    merged files, and removes the die files it wrote for them, so it holds one die at a time."""
    folder = stage / MERGED_DIR if write_masks else None
    if folder is not None:
        folder.mkdir(exist_ok=True)
    out = merger.merge(die.die, die.files, folder)
    if not write_masks:
        for path in die.files.values():
            Path(path).unlink()
    return {f"{MERGED_DIR}/{name}": {"bytes": o["bytes"], "sha256": o["sha256"]}
            for name, o in out.items()}


def _tensors_on(part) -> list[str]:
    """The tensors a die's rows (Placement.die_part) hold, in dataflow order."""
    return [part.tensors[t] for t in np.unique(part.rows["tensor"]).tolist()]


def _die_job(planned: "Planned", options: CompileOptions, inputs: dict, part, quantizer,
             stage: Path | None, shared: dict | None = None, folder: str | None = None,
             keep_layout: bool = False):
    """The DieJob of the die whose rows are ``part`` (Placement.die_part)."""
    from taalasc.dieworker import DieJob

    die = int(part.rows["die"][0])
    names = _tensors_on(part)
    shared = shared or {}
    return DieJob(ckpt=planned.ckpt, base=planned.base, die=die, placement=part,
                  specs={n: planned.specs[n] for n in names if n in planned.specs},
                  stage=None if stage is None else str(stage), formats=tuple(options.formats),
                  tag=cell_name_tag(inputs),
                  quantizer=None if quantizer is None else quantizer.for_tensors(names),
                  shared={n: shared[n] for n in names if n in shared}, shared_folder=folder,
                  keep_layout=keep_layout)


def die_layout(planned: "Planned", options: CompileOptions, inputs: dict, die: int,
               quantizer=None):
    """The DieLayout of one die, drawn again into a hash-only writer: verify explains a
    differing die file with it (compile keeps no die's layout, see dieworker.compile_die)."""
    from taalasc.dieworker import compile_die

    options = _as_planned(options, planned)
    job = _die_job(planned, options, inputs, planned.placement.die_part(die), quantizer, None,
                   keep_layout=True)
    return compile_die(job).result.layout


def _input_paths(model, ckpt, base: BaseArray, options: CompileOptions) -> list:
    """Every file the compile reads: the output folder must not hold any of them."""
    calib = options.calib if options.calib != "default" else None
    return [model, *ckpt.files, base.path, base.pdk.path, calib, options.calib_tokens]


SHARED_DIR = ".quantized"   # inside the staging folder while the dies run, then removed


def _quantize_shared(stack, ckpt, specs: dict, on_die: dict[int, list[str]], stage: Path,
                     quantizer, jobs: int, scheduler, tick, keep: Path | None = None
                     ) -> tuple[dict, str | None]:
    """Quantize once each tensor that two or more of the wanted dies hold (in parallel, one
    tensor per work unit), saving its arrays in the staging folder; each of those dies then
    reads its own rows. Without this every die quantizes every tensor it holds whole: an
    8 B model's embedding and lm_head (525 M weights each) would each be quantized by ~80
    dies. The arrays are the ones each die would have made (the same quantizer), so the
    bytes do not change. A Dask scheduler's workers may not share this disk: not then.
    ``keep``: quantize every tensor so, into that folder, and leave it there (verify).
    Returns (tensor -> manifest entry, folder)."""
    from taalasc.dieworker import TensorJob, quantize_shared
    from taalasc.parallel import run_ordered

    holders: dict[str, int] = {}   # tensor -> wanted dies that hold it
    for names_on_die in on_die.values():
        for name in names_on_die:
            if name in specs:
                holders[name] = holders.get(name, 0) + 1
    names = [n for n, held in holders.items() if held > 1 or keep is not None]
    if not names or scheduler is not None:
        return {}, None
    if keep is None:
        folder = stage / SHARED_DIR
        folder.mkdir()
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
    else:
        folder = Path(keep)
    jobs_list = [TensorJob(ckpt, n, specs[n], str(folder),
                           None if quantizer is None else quantizer.for_tensors([n]))
                 for n in names]
    shared = {}
    for done, (name, entry) in enumerate(run_ordered(quantize_shared, jobs_list, jobs=jobs)):
        shared[name] = entry
        tick("quantize", done + 1, len(jobs_list))
    return shared, str(folder)


def _quantizer(ckpt, options: CompileOptions, specs: dict, tick):
    """The TensorQuantizer the die workers share; None for plain round-to-nearest, which
    each worker does itself. Calibration Hessians are computed here, once, before the dies
    start (every worker would otherwise run the calibration forward pass again)."""
    from taalasc.quant.method import TensorQuantizer, native_specs

    if options.method == "rtn" and not options.awq and not (options.native and native_specs(ckpt)):
        return None
    quantizer = TensorQuantizer(ckpt, options.bit_policy(), tick)
    if (options.method == "gptq" or options.awq) and any(
            not quantizer.is_native(n, s) for n, s in specs.items()):
        quantizer.hessians()   # not when every tensor keeps a GGUF file's own codes
        _ = quantizer.source   # and the AWQ scales: searched once, here
    return quantizer


def _dies_wanted(placement, dies: tuple[int, ...] | None) -> list[int]:
    if dies is None:
        return list(range(placement.dies))
    bad = [d for d in dies if not 0 <= d < placement.dies]
    if bad:
        raise PlacementError(f"--die {bad[0]} must be a die of this placement, 0-"
                             f"{placement.dies - 1}, not {bad[0]}")
    return sorted(set(dies))


def longest_link_nm(placement, base: BaseArray) -> int:
    """Longest dataflow link, tile centre to tile centre, Manhattan (the drawn route's span)."""
    grid = base.tile_grid
    ends = placement.link_ends()
    span = (abs(ends[:, 1] - ends[:, 4]) * grid.pitch_x_nm
            + abs(ends[:, 2] - ends[:, 5]) * grid.pitch_y_nm)
    return int(span.max()) if len(span) else 0


def _report(base: BaseArray, ckpt, specs, placement, dies, tensors):
    from taalasc.report import PlacementFacts, report_for_compile

    facts = PlacementFacts(
        tiles_used=placement.tiles_used, dies=placement.dies,
        longest_route_nm=longest_link_nm(placement, base),
        via_count=sum(d.via_count for d in dies),
        top_metal_shape_count=sum(d.top_metal_shapes + d.fill_shapes for d in dies))
    shapes = {t.name: tuple(t.shape) for t in tensors}
    return report_for_compile(base, shapes, specs, facts, config=ckpt.config,
                              name=Path(ckpt.path).name)


class _Side:
    """``fn()`` run in a thread (``background``) or on demand in this one; ``result()``
    returns its value or re-raises its exception."""

    def __init__(self, fn: Callable[[], Any], background: bool):
        self._fn, self._future, self._pool = fn, None, None
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taalasc-side")
            self._future = self._pool.submit(fn)

    def wait(self) -> None:
        """Let a background run finish, ignoring its outcome (the caller is failing)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def result(self):
        if self._future is None:
            return self._fn()
        try:
            return self._future.result()
        finally:
            self._pool.shutdown(wait=True)


def _dumps(obj) -> str:
    """The manifest's JSON style: sorted keys, one space of indent per level."""
    return json.dumps(obj, indent=1, sort_keys=True)


def _manifest(inputs, digest, placement, quant_stats, dies, legend, stage: Path, merged: dict,
              tile_vias: dict) -> dict:
    # Die files were hashed by their writer as they were closed (and may not have been
    # written at all, see rebuild): their figures come from the writer, not the disk.
    masks = {Path(p).name: {"bytes": d.nbytes[fmt], "sha256": d.sha256[fmt]}
             for d in dies for fmt, p in d.files.items()}
    files = dict(masks) | merged   # merged: "merged/die{n}.{fmt}", hashed as they were written
    for path in sorted(p for p in stage.iterdir() if p.is_file() and p.name != MANIFEST):
        if path.name not in masks:
            files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    files = dict(sorted(files.items()))
    return {
        "format": MANIFEST_FORMAT,
        "inputs": inputs,
        "inputs_digest": digest,
        "placement": placement.to_json(),
        "quantization": quant_stats,
        "dies": _die_entries(placement, dies, tile_vias),
        "overview_legend": [[list(map(int, colour)), label] for colour, label in legend],
        "outputs": files,
    }


def _die_entries(placement, dies, tile_vias: dict | None = None) -> list[dict]:
    """One entry per die of the placement, in order; dies not written (--die) say so.
    ``stored_bits``: the bits its tiles hold (elements x bits), written or not.
    ``tile_vias`` (zero-skip: die -> bit vias per tile, placement order) go into the die's
    entry: a zero is no via there, so the count is what finds a missing one."""
    written = {d.die: d for d in dies}
    absent = {"present": False, "files": {}, "via_count": 0, "bit_vias": 0, "tie_vias": 0,
              "route_vias": 0,
              "top_metal_shapes": 0, "fill_shapes": 0}
    die_bits = np.zeros(placement.dies, np.int64)
    np.add.at(die_bits, placement.rows["die"], placement.elements * placement.rows["bits"])
    entries = [(_die_entry(written[n]) if n in written else {"die": n, **absent})
               | {"stored_bits": int(die_bits[n])} for n in range(placement.dies)]
    for n, counts in (tile_vias or {}).items():
        entries[n]["tile_vias"] = counts.tolist()
    return entries


def _die_entry(d) -> dict:
    return {"die": d.die, "present": True, "via_count": d.via_count, "bit_vias": d.bit_vias,
            "tie_vias": d.tie_vias, "route_vias": d.route_vias,
            "top_metal_shapes": d.top_metal_shapes,
            "fill_shapes": d.fill_shapes,
            "density_min_pct": round(d.density_min_pct, 3),
            "density_max_pct": round(d.density_max_pct, 3),
            "files": {fmt: Path(p).name for fmt, p in sorted(d.files.items())}}


def _summary(manifest: dict) -> list[tuple[str, str]]:
    dies = manifest["dies"]  # in die order: die0, die1, …, die10
    vias = sum(d["bit_vias"] for d in dies)
    # Stored bits per die (elements x bits of every segment): a via per bit for tie-high-low,
    # per digit for select and ternary, per 1 bit for zero-skip.
    die_bits = [d["stored_bits"] for d in dies]
    bits = sum(die_bits)
    model = manifest["inputs"]["model"]
    rows = [("base array", manifest["inputs"]["base_array"]["name"]),
            *([("left off the chip", ", ".join(model["skipped"]))] if "skipped" in model else []),
            *([("GGUF types quantized by taalasc", ", ".join(model["requantized_block_types"]))]
              if "requantized_block_types" in model else []),
            ("dies", f"{len(dies):,}" if all(d.get("present", True) for d in dies) else
             f"{sum(d.get('present', True) for d in dies):,} of {len(dies):,} (--die)"),
            ("tiles used", f"{manifest['placement']['tiles_used']:,}"),
            *([("programmed bits (vias)", f"{bits:,}")] if bits == vias else
              [("programmed bits", f"{bits:,}"), ("bit vias", f"{vias:,}")]),
            ("tie vias (strap to rail)", f"{sum(d.get('tie_vias', 0) for d in dies):,}"),
            ("route vias", f"{sum(d['route_vias'] for d in dies):,}")]
    # Each mask file holds one die: its bytes per programmed bit are over that die's bits.
    for die in dies:
        for fmt in ("gds", "oas"):
            name = die["files"].get(fmt)
            if name is not None:
                size = manifest["outputs"][name]["bytes"]
                rows.append((name, f"{size:,} bytes "
                                   f"({size / max(die_bits[die['die']], 1):.3f} B/bit)"))
    for name, info in manifest["outputs"].items():
        if name.startswith(MERGED_DIR + "/"):
            rows.append((name, f"{info['bytes']:,} bytes (base die + custom layers)"))
    return rows
