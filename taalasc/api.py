"""The Python API: what the commands do, as functions that return data (docs/api.md).

Each `taalasc` command that computes something is argument parsing and printing around one
function here, so a script and the command line do exactly the same thing:

    compile      `taalasc compile`   → CompileResult (folder, manifest, report, mask files)
    verify       `taalasc verify`    → VerifyResult (per-check results, ``passed``)
    estimate     `taalasc estimate`  → taalasc.report.Report (metrics with formulas)
    sweep        `taalasc estimate --sweep-bits/--sweep-base` → [SweepPoint(label, report)]
    quality      `taalasc quality`   → QualityResult (figures per bit policy)
    diff_masks   `taalasc diff`      → DiffResult (the MaskDiff and the --max-changed gate)
    sign_off     `taalasc signoff`   → SignoffReport (DRC rules, LVS findings, ``passed``)
    read_report  `taalasc report`    → taalasc.report.Report

Errors are the exceptions the CLI prints as ``error: ...`` (taalasc.errors: ConfigError,
ModelError, QuantizationError, PlacementError, MaskError, OutputError, CheckFailed, ...), with
the same message. A check that ran and failed (verify, diff, sign-off) is a result, not an
exception: read ``result.passed``, or pass ``raise_on_failure=True`` to get the CheckFailed
the command exits 2 with.

Heavy modules (numpy, gdstk, click, rich) are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

if TYPE_CHECKING:
    from taalasc.compile import CompileResult
    from taalasc.config import BaseArray
    from taalasc.diff.core import MaskDiff
    from taalasc.report.metrics import Report
    from taalasc.signoff.report import SignoffReport
    from taalasc.textquality import QualityResult
    from taalasc.verify import VerifyResult

    Base = str | Path | BaseArray           # a built-in name, a YAML path, or a loaded one

Progress = Callable[[str, int, int], None]  # (stage, done, total), e.g. for a progress bar
PathLike = str | Path


# --- compile and verify ----------------------------------------------------------------------

def compile(model: PathLike, out: PathLike | None = None, *, base: PathLike | None = None,
            bits: int = 4, rules: Sequence[str] = (), group_size: int | None = 32,
            auto: bool = False, budget: float = 3.5, method: str = "rtn",
            asymmetric: bool = False, calib: PathLike | None = None,
            calib_tokens: PathLike | None = None, awq: bool = False, native: bool = True,
            format: str = "auto", max_dies: int | None = None, curve: str = "gilbert-runs",
            layers: str | None = None, dies: Sequence[int] | None = None, merge: bool = False,
            force: bool = False, jobs: int = 1, scheduler: Any = None,
            progress: Progress | None = None) -> CompileResult:
    """Quantize ``model`` (a .safetensors file, a sharded index, a Hugging Face-style folder or
    a .gguf file), place it on the base array and install the mask set in ``out`` (default:
    ``<model name>.taalasc`` in the current folder). The options are `taalasc compile`'s:

    base        built-in name or YAML path; None: sky130-demo, or, for a model too large for
                it, the built-in base that holds it (sky130-reticle first)
    bits, rules default bits per weight; 'GLOB=BITS' overrides ('*.v_proj.*=6')
    group_size  weights per scale, None for one scale per output channel
    auto, budget  HC1-style 3/6-bit policy within ``budget`` bits per weight
    method, asymmetric, calib, calib_tokens, awq, native   see `taalasc compile --help`
    format      'gds', 'oas', 'both' or 'auto' (both while the GDSII stays within 4 GiB,
                else OASIS alone: compile.AUTO_GDS_MAX_BYTES)
    layers      a sub-model, e.g. 'embed,0-3'; ``dies``: only these dies of the placement
    merge       also write merged/die{n}: the base die with the custom layers
    force       replace a folder holding another compile
    jobs, scheduler  local worker processes or a Dask address; the bytes do not change
    """
    from taalasc.compile import FORMATS, CompileOptions, compile_model
    from taalasc.config import DEFAULT_BASE
    from taalasc.outdir import check_output_folder

    model = Path(model)
    # Calibration files are recorded by absolute path (and hash, in the manifest's inputs):
    # verify quantizes again with them, from wherever it runs.
    calib = calib if calib in (None, "default") else str(Path(calib).resolve())
    calib_tokens = None if calib_tokens is None else str(Path(calib_tokens).resolve())
    options = CompileOptions(base=str(base or DEFAULT_BASE), default_bits=bits,
                             rules=tuple(rules), group_size=group_size, auto=auto,
                             budget_bits_per_weight=budget, method=method,
                             asymmetric=asymmetric, calib=calib, calib_tokens=calib_tokens,
                             native=native, awq=awq, base_fallback=base is None,
                             formats=FORMATS if format == "both" else (format,),
                             max_dies=max_dies, curve=curve, force=force, layers=layers,
                             merge=merge, dies=None if dies is None else tuple(dies))
    if out is None:
        out = f"{model.name.removesuffix('.safetensors').removesuffix('.gguf')}.taalasc"
    check_output_folder(Path(out))  # before the model is read: '.' and '' are refused
    return compile_model(model, Path(out), options, progress=progress, jobs=jobs,
                         scheduler=scheduler)


def verify(out: PathLike, model: PathLike, *, format: str | None = None,
           tokens: Sequence[int] | None = None, lora: PathLike | None = None,
           min_top1: float | None = None, min_cosine: float | None = None,
           max_kl_nats: float | None = None, jobs: int = 1, progress: Progress | None = None,
           raise_on_failure: bool = False) -> VerifyResult:
    """Prove that the compile in ``out`` computes ``model``: the folder rebuilt and compared
    byte for byte, every weight extracted from the via geometry (``format`` 'gds' or 'oas';
    None: GDSII when the compile wrote it, else OASIS) and compared bit for bit, the chip model run on both, and quality against the float
    model on ``tokens`` (default: 16 seeded ids). ``lora``: a PEFT adapter folder.

    Thresholds left as None are taalasc.verify.Thresholds' (top-1 0.5, cosine 0.97, KL 0.1
    nats). A failed check is reported in the result (``result.passed``, ``result.checks``);
    with ``raise_on_failure`` it raises CheckFailed instead, as `taalasc verify` exits 2."""
    from dataclasses import replace

    from taalasc.verify import Thresholds, verify as verify_compile

    given = {"min_top1": min_top1, "min_cosine": min_cosine, "max_kl_nats": max_kl_nats}
    thresholds = replace(Thresholds(), **{k: v for k, v in given.items() if v is not None})
    result = verify_compile(Path(out), Path(model), fmt=format,
                            tokens=None if tokens is None else list(tokens),
                            lora_dir=None if lora is None else Path(lora),
                            thresholds=thresholds, progress=progress, jobs=jobs)
    return result.raise_if_failed() if raise_on_failure else result


# --- estimate ----------------------------------------------------------------------------------

class SweepPoint(NamedTuple):
    """One base array × bit width of a sweep: 'sky130-demo 4 bits' and its report."""

    label: str
    report: Report


def estimate(model: PathLike | None = None, *, config: PathLike | None = None,
             preset: str | None = None, base: Base | None = None, bits: int = 4,
             rules: Sequence[str | tuple[str, int]] = (), group_size: int | None = 32,
             auto: bool = False, budget: float = 3.5, asymmetric: bool = False,
             users: int = 1, context: int = 2048, lora: PathLike | None = None,
             lora_rank: int | None = None, utilisation: float = 0.5,
             zero_bit_ratio: float | None = None) -> Report:
    """Area, timing, power, SRAM and cost of printing a model, without reading a weight: give
    exactly one of ``model`` (a checkpoint's header), ``config`` (a config.json) or
    ``preset`` ('llama-3.1-8b', ...). ``base`` is a built-in name, a YAML path or a
    BaseArray (e.g. a ``dataclasses.replace``d one); None: taalasc.config.DEFAULT_BASE.
    ``rules``: 'GLOB=BITS' or (glob, bits).
    ``lora`` (an adapter folder) or ``lora_rank`` checks that an adapter fits the SRAM.
    ``zero_bit_ratio``: the share of zero weight bits on a zero-skip base (default 0.5).
    A preset with published silicon (llama-3.1-8b: Taalas HC1; gpt-oss-120b: HNLPU) gets
    its published figures beside ours in ``report.published``.
    Returns a taalasc.report.Report: ``report.value("design__die__area")``."""
    from taalasc.report import estimate as estimate_report
    from taalasc.report.published import attach_published

    shape, common = _estimate_inputs(model, config, preset, rules, group_size, asymmetric,
                                     users, context, lora, lora_rank, utilisation)
    report = estimate_report(shape, _base_array(base), default_bits=bits,
                             auto=(3, 6, budget) if auto else None,
                             zero_bit_ratio=zero_bit_ratio, **common)
    return attach_published(report, preset)


def sweep(model: PathLike | None = None, *, config: PathLike | None = None,
          preset: str | None = None, bases: Sequence[Base | None] = (None,),
          bits: Sequence[int] = (4,), rules: Sequence[str | tuple[str, int]] = (),
          group_size: int | None = 32, auto: bool = False, budget: float = 3.5,
          asymmetric: bool = False, users: int = 1, context: int = 2048,
          lora: PathLike | None = None, lora_rank: int | None = None,
          utilisation: float = 0.5, zero_bit_ratio: float | None = None) -> list[SweepPoint]:
    """``estimate`` for every base array × default bit width, bases outer, in the order
    given; the model's shapes are read once. With ``auto`` the weights follow the automatic
    policy and ``bits`` only labels the points."""
    from taalasc.report.sweep import sweep as sweep_reports

    shape, common = _estimate_inputs(model, config, preset, rules, group_size, asymmetric,
                                     users, context, lora, lora_rank, utilisation)
    points = sweep_reports(shape, [_base_array(b) for b in bases], list(bits),
                           auto=(3, 6, budget) if auto else None,
                           zero_bit_ratio=zero_bit_ratio, **common)
    return [SweepPoint(label, report) for label, report in points]


def _estimate_inputs(model, config, preset, rules, group_size, asymmetric, users, context,
                     lora, lora_rank, utilisation) -> tuple[Any, dict]:
    """The model's shapes from its one source, and the options estimate and sweep share."""
    from taalasc.errors import ModelError
    from taalasc.report import lora_from_adapter, lora_from_rank
    from taalasc.report import shape as shp

    given = [x for x in (model, config, preset) if x is not None]
    if len(given) != 1:
        raise ModelError("estimate: give exactly one of MODEL, --config or --preset, "
                         f"not {len(given)}")
    if preset:
        shape = shp.shape_from_preset(preset)
    elif config:
        shape = shp.shape_from_config_file(Path(config))
    else:
        shape = shp.shape_from_checkpoint(Path(model))
    adapter = None
    if lora is not None:
        adapter = lora_from_adapter(Path(lora))
    elif lora_rank is not None:
        adapter = lora_from_rank(shape, lora_rank)
    return shape, dict(rules=_rule_pairs(rules), group_size=group_size, asymmetric=asymmetric,
                       users=users, context=context, lora=adapter, utilisation=utilisation)


def _rule_pairs(rules) -> list[tuple[str, int]]:
    """(glob, bits) pairs; 'GLOB=BITS' text read as compile reads it."""
    pairs = []
    for rule in rules:
        if isinstance(rule, str):
            from taalasc.quant import parse_rule   # only then: estimate needs no quantizer

            parsed = parse_rule(rule)
            rule = (parsed.pattern, parsed.bits)
        pairs.append(tuple(rule))
    return pairs


def _base_array(base) -> BaseArray:
    from taalasc.config import DEFAULT_BASE, load_base_array

    return load_base_array(DEFAULT_BASE if base is None else base)


def read_report(out: PathLike) -> Report:
    """The report a compile wrote: OUT/report.json, or a report file named directly."""
    from taalasc.report import REPORT_FILE, Report

    out = Path(out)
    return Report.read(out / REPORT_FILE if out.is_dir() or not out.suffix else out)


# --- quality -----------------------------------------------------------------------------------

def quality(model_or_out: PathLike, *, model: PathLike | None = None,
            text: PathLike | None = None, window: int = 128, max_tokens: int = 1024,
            bits: Sequence[int] = (), auto: bool = False, budget: float = 3.5,
            group_size: int | str | None = 32, policies: Sequence[str] = (),
            native: bool = False, base: Base = "sky130-reticle",
            progress: Progress | None = None) -> QualityResult:
    """Does the model still work on this chip? The float model and the bit-accurate chip model
    on ``text`` (default: a few KB of English shipped with taalasc) through the model's
    tokenizer (a tokenizer.json beside the checkpoint, or a .gguf file's own).

    ``model_or_out`` is a checkpoint, quantized in memory once per policy: ``bits`` (uniform
    policies), ``auto`` (3/6 bits within ``budget``), ``policies`` (quantize options as on
    the command line, '[LABEL=]OPTIONS', e.g. 'gptq4=--bits 4 --method gptq'), ``native``
    (a GGUF file's own codes); with none of them 8-bit, 4-bit and auto. Or it is a compile
    folder, whose masks are read back; then ``model`` names its checkpoint.

    Returns a QualityResult: ``result["4-bit"].figures["ppl_increase_pct"]``."""
    from taalasc.textquality import run_quality

    group = "per-channel" if group_size is None else str(group_size)
    return run_quality(model_or_out, model, text=text, window=window, max_tokens=max_tokens,
                       bits=tuple(bits), auto=auto, budget=budget, group_size=group,
                       policies=tuple(policies), native=native, base=base, progress=progress)


# --- diff --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiffResult:
    """A mask diff and its gate: ``exceeded`` when more shapes changed than ``max_changed``."""

    diff: MaskDiff
    max_changed: str
    exceeded: bool
    detail: str          # '12 shapes changed, limit 0'

    @property
    def passed(self) -> bool:
        return not self.exceeded

    @property
    def threshold(self) -> dict:
        """The gate as the JSON and Markdown reports record it."""
        return {"max_changed": self.max_changed, "exceeded": self.exceeded,
                "detail": self.detail}

    def raise_if_failed(self) -> DiffResult:
        """CheckFailed (what `taalasc diff` prints, exit 2) when the gate is exceeded."""
        from taalasc.errors import CheckFailed

        if self.exceeded:
            raise CheckFailed(f"masks differ beyond --max-changed {self.max_changed}: "
                              f"{self.detail}")
        return self


def diff_masks(a: PathLike, b: PathLike, *, max_changed: str | int = "0",
               format: str | None = None, flat: bool = False, jobs: int = 1,
               keep_shapes: bool = True, raise_on_failure: bool = False) -> DiffResult:
    """What changed between mask sets ``a`` and ``b`` (compile folders or two GDS/OASIS
    files): shapes per layer, tile and tensor, the masks a re-spin needs and its cost.
    ``max_changed``: a shape count (120) or a percentage of A's shapes ('0.5%'). ``format``:
    the die files of compile folders to read (default the one A's compile wrote). ``flat``
    compares flattened geometry (slower, same counts). ``jobs``: dies compared at once.
    ``keep_shapes=False`` keeps counts, attribution and the heat map but no die's changed
    rectangles (bounded memory when every die changes; no XOR file then)."""
    from taalasc.diff.core import diff_masks as diff_core, over_threshold, parse_max_changed

    limit = parse_max_changed(str(max_changed))
    diff = diff_core(Path(a), Path(b), fmt=format, trust_hashes=not flat,
                     count_total=limit[0] == "fraction", jobs=jobs, keep_shapes=keep_shapes)
    exceeded, detail = over_threshold(diff, limit)
    result = DiffResult(diff, str(max_changed), exceeded, detail)
    return result.raise_if_failed() if raise_on_failure else result


# --- sign-off ----------------------------------------------------------------------------------

def sign_off(out: PathLike, to: PathLike, *, merged: PathLike | None = None,
             decks: Sequence[PathLike] = (), klayout: str = "klayout", drc: bool = True,
             lvs: bool = True, threads: int = 0, force: bool = False,
             raise_on_failure: bool = False) -> SignoffReport:
    """Sign off the compile in ``out`` into the new folder ``to``: the PDK's own KLayout DRC
    decks (``decks``: files or folders; default $TAALASC_PDK_DECKS/<pdk>/ or the PDK under
    $PDK_ROOT) run by the ``klayout`` application, and an LVS-style extraction of every bit
    site. ``merged``: a folder of merged dies (else the custom layers are checked alone).
    ``result.passed``; with ``raise_on_failure``, CheckFailed on violations and ToolError
    on a deck run that failed, as `taalasc signoff` exits."""
    from taalasc.errors import TaalascError
    from taalasc.signoff.run import SignoffOptions, signoff

    if not drc and not lvs:
        raise TaalascError("drc=False and lvs=False leave nothing to check")
    report = signoff(Path(out), Path(to), SignoffOptions(
        decks=tuple(Path(d) for d in decks), merged=None if merged is None else Path(merged),
        klayout=klayout, drc=drc, lvs=lvs, threads=threads, force=force))
    return report.raise_if_failed(to) if raise_on_failure else report
