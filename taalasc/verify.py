"""Verify that a compiled mask set computes the model.

Four checks, each a plain step:
  0. files   — the folder holds exactly what the compile writes: the compile is run again
               from the checkpoint and the options the manifest records (taalasc.rebuilt)
               and every file compared byte for byte — masks (both layers, both formats),
               reports, manifest; nothing missing, nothing extra, nothing read from outside;
  1. codes   — values extracted from the via geometry equal the quantizer's, bit for bit
               (codes, fp16 scales, fp16 vectors), and the masks have no opens or shorts;
  2. datapath — the bit-accurate chip model on the extracted weights equals the chip model
               on the quantizer's weights, bit for bit;
  3. quality — the chip model against the float reference of the original checkpoint, with
               thresholds (top-1 agreement, logit cosine, KL for decoders; hidden and pooled
               cosine for encoders).
All checks run and are reported together; any failure makes the command exit 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Sequence

import numpy as np



@dataclass(frozen=True)
class Thresholds:
    """The quality gate, calibrated on the real models of bench/quality.py (chip vs float):

    | SmolLM2-135M on sky130-reticle | KL nats | top-1 | ppl   |
    | native Q4_1 codes / 8-bit RTN  | 0.0002 / 0.002 | 0.995 / 0.977 | +0.04 / +0.3 % |
    | 4-bit GPTQ asym / 4-bit RTN    | 0.065 / 0.41   | 0.81 / 0.63   | +9 / +25 %     |
    all-MiniLM-L6-v2 sentence-embedding cosine: 8-bit 0.9999, 4-bit GPTQ asym 0.988, 4-bit
    RTN 0.967 on text; on verify's 16 seeded ids 0.9998, 0.979 and 0.945. The KL and cosine defaults pass the first two rows and the GPTQ row and fail
    plain 4-bit rounding, whose loss a user would notice (a quarter more perplexity). Top-1
    stays a loose 0.5: over verify's 16 seeded token ids it is the noisiest figure (synthetic
    checkpoints with random weights have nearly flat logits), and KL already separates.
    """

    min_top1: float = 0.5
    min_cosine: float = 0.97
    max_kl_nats: float = 0.1


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class VerifyResult:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)   # folder against its rebuild
    defects: list[str] = field(default_factory=list)
    defect_count: int = 0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def raise_if_failed(self) -> "VerifyResult":
        """CheckFailed (what `taalasc verify` prints, exit 2) naming the failed checks and
        the first difference, unless every check passed; then this result."""
        from taalasc.errors import CheckFailed

        if self.passed:
            return self
        failed = [c.name for c in self.checks if not c.passed]
        first = (self.mismatches or self.defects or self.differences or [""])[0]
        raise CheckFailed(f"verify failed: {', '.join(failed)}" + (f"; {first}" if first else ""))

    def to_dict(self) -> dict:
        return {"passed": self.passed,
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                           for c in self.checks],
                "figures": self.figures, "mismatches": self.mismatches,
                "differences": self.differences,
                "defect_count": self.defect_count, "defects": self.defects}


def default_tokens(vocab: int, count: int = 16) -> list[int]:
    """A fixed, seeded token sequence inside the vocabulary."""
    return np.random.default_rng(20261124).integers(0, vocab, size=count).tolist()


def _bits_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality of raw bit patterns (so -0.0 != +0.0 and NaNs compare)."""
    if a.dtype == np.float16:
        return a.view(np.uint16) == b.view(np.uint16)
    return a == b


# Elements compared at once: the equality masks of a whole lm_head would be GBs at 8 B.
_COMPARE_ELEMENTS = 1 << 24


def _first_difference(name: str, kind: str, expected: np.ndarray, got: np.ndarray) -> str | None:
    if expected.shape != got.shape:
        return f"{name} {kind}: shape {list(got.shape)} in the masks, {list(expected.shape)} expected"
    step = max(1, _COMPARE_ELEMENTS // max(1, expected[:1].size))   # rows per comparison
    differ, first = 0, None
    for r0 in range(0, len(expected), step):
        same = _bits_equal(expected[r0:r0 + step], got[r0:r0 + step])
        bad = same.size - int(np.count_nonzero(same))
        if bad and first is None:
            at = np.argwhere(~same)[0]
            first = (int(at[0]) + r0, *(int(i) for i in at[1:]))
        differ += bad
    if not differ:
        return None
    return (f"{name} {kind}: {differ} elements differ, first at {list(first)}: "
            f"masks hold {got[first].item()!r}, quantizer gives {expected[first].item()!r}")


def verify(out_dir: Path, model: Path, *, fmt: str | None = None,
           tokens: Sequence[int] | None = None,
           thresholds: Thresholds = Thresholds(), lora_dir: Path | None = None,
           progress=None, jobs: int = 1) -> VerifyResult:
    import tempfile

    # The compile made again and the values extracted from the masks live in one scratch
    # folder, removed on every way out (an error, Ctrl-C included).
    with tempfile.TemporaryDirectory(prefix="taalasc-verify-") as scratch:
        return _verify(Path(out_dir), model, Path(scratch), fmt=fmt, tokens=tokens,
                       thresholds=thresholds, lora_dir=lora_dir,
                       tick=progress or (lambda stage, done, total: None), jobs=jobs)


def _verify(out_dir: Path, model: Path, scratch: Path, *, fmt: str,
            tokens: Sequence[int] | None, thresholds: Thresholds, lora_dir: Path | None,
            tick, jobs: int) -> VerifyResult:
    from taalasc.compile import rebuild
    from taalasc.extract.extract import base_of, read_manifest, written_format

    result = VerifyResult()
    manifest = read_manifest(out_dir)
    fmt = fmt or written_format(manifest)   # None: GDSII when the compile wrote it
    options = recorded_options(manifest, out_dir)
    base = base_of(manifest, out_dir)
    _check_calibration(manifest)
    # 0. the folder holds exactly what the compile writes: the compile is run again from
    # the recorded options alone (masks into a hash-only writer) and compared byte for byte.
    rebuilt, quantized = scratch / "rebuilt", scratch / "quantized"
    rebuilt.mkdir()
    quantized.mkdir()
    # The rebuild keeps every tensor it quantizes (quantized in parallel, memory-mapped when
    # read): the codes check reads them instead of quantizing the model again in this
    # process (at 8 B, minutes of one core). Disk: one byte a weight, beside the extraction's.
    planned, expected, dies, quantizer = rebuild(model, options, rebuilt, base=base, jobs=jobs,
                                                 keep_quantized=quantized)
    tick("rebuild", 1, 1)
    _model_check(result, manifest, expected)
    folder = _files_check(result, out_dir, rebuilt, manifest, expected)
    ckpt = planned.ckpt
    runnable = ckpt.config is not None and ckpt.architecture is not None
    if runnable:
        from taalasc.sim.graph import check_tokens, vocab_size

        where = str(ckpt.path)
        vocab = vocab_size(ckpt.config, ckpt.architecture, where)
        tokens = list(tokens) if tokens is not None else default_tokens(vocab)
        check_tokens(tokens, vocab, where)

    # 1. codes from geometry against the quantizer
    extracted, names = _codes_check(result, out_dir, fmt, jobs, planned, expected, quantizer,
                                    folder, tick, scratch / "extracted", quantized)
    if folder.differing_masks:
        _explain_masks(result, out_dir, folder, dies, planned, options, expected["inputs"],
                       quantizer)

    # 2. the chip model on extracted weights against the chip model on quantizer weights
    from taalasc.errors import ModelError
    from taalasc.sim import CheckpointSource, compare, run_chip, run_float
    from taalasc.sim.run import MergedSource

    if any(n not in extracted for n in names):
        result.checks.append(Check("datapath", False, "skipped: tensors missing from the masks"))
        return result
    if len(names) < len(ckpt.tensors):  # a --layers compile: nothing to run end to end
        result.checks.append(Check("datapath", True, f"skipped: the masks hold {len(names)} of "
                                   f"{len(ckpt.tensors)} tensors (a --layers compile)"))
        return result
    if not runnable:
        result.checks.append(Check("datapath", True, "skipped: no config.json beside the "
                                   "checkpoint, so its architecture is unknown; the codes are "
                                   "checked, the chip is not run"))
        return result
    lora = None
    if lora_dir is not None:
        from taalasc.lora import load_lora
        lora = load_lora(Path(lora_dir), ckpt)
    quantizer = _Requantized(ckpt, expected["quantization"], names, _or_rtn(ckpt, quantizer),
                             quantized)
    datapath = planned.base.datapath
    try:
        with np.errstate(all="ignore"):  # weights decoded from a broken mask may be NaN
            chip = run_chip(extracted, ckpt.config, ckpt.architecture, tokens, datapath,
                            lora=lora, weight_tile=planned.base.weight_tile)
    except ModelError as exc:   # e.g. non-finite activations from such weights
        if not result.mismatches:
            raise
        result.checks.append(Check("datapath", False, "the chip model cannot run on the "
                                   f"weights the masks hold: {exc}"))
        return result
    # Check 1 compared every placed array bit for bit. When all are equal, the quantizer's
    # weights are these very arrays and the chip model is deterministic: a second run would
    # recompute the same thing (at 1B: quantizing the model again plus a chip run). The
    # second run is made when the weights differ, to show whether the difference reaches
    # the outputs.
    identical = not result.mismatches
    chip_q = chip if identical else run_chip(quantizer, ckpt.config, ckpt.architecture, tokens,
                                             datapath, lora=lora,
                                             weight_tile=planned.base.weight_tile)
    tick("simulate", 1, 1)
    main_out = (chip.logits, chip_q.logits) if chip.logits is not None else (chip.hidden, chip_q.hidden)
    same = np.array_equal(main_out[0], main_out[1])
    result.checks.append(Check(
        "datapath", same,
        f"chip model on mask weights {'==' if same else '!='} chip model on quantizer weights "
        f"({len(tokens)} tokens, {datapath.activation_bits}-bit activations, "
        f"{datapath.accumulator_bits}-bit accumulator, {chip.overflow_count} overflows"
        + ("; the weights are bit-identical, so one run serves both)" if identical else ")")))

    # 3. quality against the float reference of the original checkpoint (+ merged LoRA)
    source = CheckpointSource(ckpt) if lora is None else MergedSource(CheckpointSource(ckpt), lora)
    reference = run_float(source, ckpt.config, ckpt.architecture, tokens)
    figures = compare(reference, chip)
    result.figures = {k: float(v) for k, v in figures.items()}
    result.checks.append(_quality_check(result.figures, thresholds))
    return result


class _Requantized(Mapping):
    """The quantizer's weights (a QuantizedTensor per quantized tensor, an fp16 vector per
    other one), read from the rebuild's arrays in ``saved`` (dieworker.load_shared,
    memory-mapped) or made again from the checkpoint each time the simulation asks for a
    tensor: verify then holds one model's worth of codes (the extracted one), not two."""

    def __init__(self, ckpt, quant: dict, names: Sequence[str], quantizer,
                 saved: Path | None = None):
        self._ckpt, self._quant, self._names = ckpt, quant, sorted(names)
        self._quantizer, self._saved = quantizer, saved

    def __getitem__(self, name: str):
        from taalasc.dieworker import is_saved, load_shared
        from taalasc.quant import QuantSpec

        if name not in self._names:
            raise KeyError(name)
        q = self._quant.get(name)
        if q is None:   # a 1-D constant, as the compile stored it (AWQ-folded norms included)
            return self._quantizer.source.read(name).reshape(-1).astype(np.float16)
        if self._saved is not None and is_saved(str(self._saved), name):
            return load_shared(str(self._saved), name, q)
        return self._quantizer(name, QuantSpec(q["bits"], q["group_size"],
                                               asymmetric=bool(q.get("asymmetric", False)),
                                               ternary=bool(q.get("ternary", False))))

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def recorded_options(manifest: dict, out_dir: Path):
    """The CompileOptions a manifest recorded, type-checked: verify runs the compile again
    from them, so a hand-edited value must fail here, not deep inside the compile."""
    from taalasc.compile import CompileOptions
    from taalasc.errors import MaskError

    where = f"{Path(out_dir) / 'manifest.json'}: inputs.options"
    try:
        recorded = manifest["inputs"]["options"]
        if not isinstance(recorded, dict):
            raise TypeError("not a mapping")
        options = CompileOptions.from_json(recorded)
    except (KeyError, TypeError, ValueError) as exc:
        raise MaskError(f"{where}: not what a compile records ({exc})") from None
    none = type(None)
    scalars = {"base": (str,), "default_bits": (int,), "group_size": (int, none),
               "auto": (bool,), "budget_bits_per_weight": (int, float),
               "max_dies": (int, none), "curve": (str,), "layers": (str, none),
               "method": (str,), "asymmetric": (bool,), "calib": (str, none),
               "calib_tokens": (str, none), "native": (bool,), "awq": (bool,),
               "merge": (bool,)}
    sequences = {"rules": (str,), "formats": (str,), "dies": (int,)}

    def recorded(value, kinds) -> bool:   # a JSON true is an int to isinstance: not here
        return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))

    for name, kinds in scalars.items():
        value = getattr(options, name)
        if not recorded(value, kinds):
            raise MaskError(f"{where}.{name}: {type(value).__name__} {value!r:.40} is not a "
                            "value a compile records")
    for name, kinds in sequences.items():
        value = getattr(options, name)
        if value is not None and not all(recorded(v, kinds) for v in value):
            raise MaskError(f"{where}.{name}: holds a value a compile does not record")
    return options


def _check_calibration(manifest: dict) -> None:
    """GPTQ codes depend on every byte of the calibration text: it must be the same file."""
    from taalasc.errors import ModelError
    from taalasc.outdir import sha256_file

    calib = manifest["inputs"].get("calibration")
    if calib is None:
        return
    path = Path(str(calib.get("path")))
    if not path.is_file() or sha256_file(path) != calib.get("sha256"):
        raise ModelError(f"{path}: the calibration file the masks were compiled with is "
                         "missing or changed; GPTQ codes cannot be made again without it")


def _or_rtn(ckpt, quantizer):
    """The compile's quantizer; None there means plain round to nearest (dieworker)."""
    from taalasc.quant.method import TensorQuantizer

    return quantizer if quantizer is not None else TensorQuantizer(ckpt, None)


def _model_check(result: VerifyResult, manifest: dict, expected: dict) -> None:
    def files(m):
        try:
            return {f["name"]: f["sha256"] for f in m["inputs"]["model"]["files"]}
        except (KeyError, TypeError):
            return None

    compiled, given = files(manifest), files(expected)
    same = compiled == given
    result.checks.append(Check(
        "model", same, "the checkpoint the masks were compiled from" if same else
        "MODEL differs from the checkpoint in the manifest (files "
        f"{sorted(given)} vs {sorted(compiled or [])}); values will differ"))


def _files_check(result: VerifyResult, out_dir: Path, scratch: Path, manifest: dict,
                 expected: dict):
    from taalasc import __version__
    from taalasc.rebuilt import compare_folder

    folder = compare_folder(out_dir, scratch, expected)
    if folder.identical:
        detail = (f"{folder.files} files, byte-identical to the compile made again from the "
                  "checkpoint and the recorded options (masks, reports, manifest)")
    else:
        detail = (f"{len(folder.problems)} of {folder.files} files differ from the compile "
                  "made again: " + "; ".join(folder.problems[:4])
                  + (f"; … {len(folder.problems) - 4} more" if len(folder.problems) > 4 else ""))
        tool = manifest["inputs"].get("tool") if isinstance(manifest["inputs"], dict) else None
        version = tool.get("version") if isinstance(tool, dict) else None
        if version != __version__:
            detail += (f" (compiled by taalasc {str(version)[:20]!r}, this is {__version__}: a "
                       "compile from another version can differ for that reason alone)")
    result.differences.extend(folder.problems)
    result.checks.append(Check("files", folder.identical, detail))
    return folder


def _codes_check(result: VerifyResult, out_dir: Path, fmt: str, jobs: int, planned,
                 expected: dict, quantizer, folder, tick, values: Path, saved: Path):
    """Check 1: every placed value decoded from the via geometry equals the quantizer's.

    The decoded values go to files in ``values``; returns the chip weights over them (read
    tensor by tensor when the chip model asks) and the placed tensors' names."""
    from taalasc.extract.extract import ExtractedWeights, extract
    from taalasc.quant import QuantizedTensor

    ckpt = planned.ckpt
    placed = set(planned.placement.tensors)
    names = [n for n in ckpt.tensors if n in placed]
    files = [f for d in expected["dies"] for k, f in d["files"].items() if k == fmt]  # die order
    if not files:
        result.checks.append(Check("codes", False, f"the compile writes no {fmt.upper()} "
                                   "files; verify with --format "
                                   + "/".join(sorted(expected["inputs"]["options"]["formats"]))))
        return {}, names
    unreadable = [f for f in files if f in folder.unreadable]
    if unreadable:
        result.checks.append(Check("codes", False, "not read: " + ", ".join(unreadable)
                                   + " missing or not a regular file"))
        return {}, names
    # A die file that cannot be read as masks is bad input: its MaskError ends verify.
    values.mkdir()
    extraction = extract(out_dir, fmt, jobs=jobs, manifest=expected, base=planned.base,
                         placement=planned.placement, folder=values)
    tick("extract", 1, 1)
    result.defect_count = extraction.defect_count
    result.defects = [d.describe() for d in extraction.defects[:50]]
    # Tensor by tensor: the quantizer's arrays are made and the extracted ones read from the
    # files, compared and dropped, so one tensor is held, not the model (the datapath check
    # reads them again, see ExtractedWeights and _Requantized).
    found: list[str] = []   # the tensors the masks hold in full, which the chip model can use
    want_all = _Requantized(ckpt, expected["quantization"], names, _or_rtn(ckpt, quantizer),
                            saved)
    for done, name in enumerate(names):
        want = want_all[name]
        if isinstance(want, QuantizedTensor):
            if name not in extraction.codes or name not in extraction.scales:
                result.mismatches.append(f"{name}: not found in the masks")
                continue
            has_mins = name in extraction.mins
            if has_mins != (want.mins is not None):
                result.mismatches.append(f"{name}: the masks {'add' if has_mins else 'lack'} "
                                         "the per-group minimums of asymmetric codes")
                continue
            pairs = [("codes", want.codes, extraction.codes), ("scales", want.scales,
                                                               extraction.scales)]
            if has_mins:
                pairs.append(("mins", want.mins, extraction.mins))
            for kind, a, arrays in pairs:
                message = _first_difference(name, kind, a, arrays[name])
                if message:
                    result.mismatches.append(message)
        else:
            if name not in extraction.vectors:
                result.mismatches.append(f"{name}: not found in the masks")
                continue
            message = _first_difference(name, "vector", want, extraction.vectors[name])
            if message:
                result.mismatches.append(message)
        found.append(name)
        del want
        tick("compare codes", done + 1, len(names))
    codes_ok = not result.mismatches and extraction.defect_count == 0
    result.checks.append(Check(
        "codes", codes_ok,
        f"{len(names)} tensors, {extraction.vias_read:,} vias read from {fmt.upper()}: "
        + ("bit-identical to the quantizer, no opens or shorts" if codes_ok else
           f"{len(result.mismatches)} tensors differ, {extraction.defect_count} via defects")))
    return ExtractedWeights(extraction, expected["quantization"], found), names


def _explain_masks(result: VerifyResult, out_dir: Path, folder, dies, planned, options,
                   inputs: dict, quantizer) -> None:
    """Say what differs on the top metal of the first differing die files, shape by shape
    (the via layer is judged site by site by the codes check). Each die's layout is drawn
    again for this (the rebuild keeps none)."""
    from taalasc.compile import die_layout
    from taalasc.errors import MaskError
    from taalasc.rebuilt import metal_differences

    base = planned.base
    die_of = {Path(p).name: d.die for d in dies for p in d.files.values()}
    for name in folder.differing_masks[:2]:
        if name not in die_of:
            continue
        layout = die_layout(planned, options, inputs, die_of[name], quantizer)
        try:
            text = metal_differences(Path(out_dir) / name, layout, base, Path(name).suffix[1:])
        except MaskError as exc:
            text = f"cannot be read: {exc}"
        result.differences.append(f"{name}: {text}")


def _quality_check(figures: dict[str, float], t: Thresholds) -> Check:
    failures = []
    if "top1_agreement" in figures:
        if figures["top1_agreement"] < t.min_top1:
            failures.append(f"top-1 agreement {figures['top1_agreement']:.3f} < {t.min_top1}")
        if figures["logit_cosine_mean"] < t.min_cosine:
            failures.append(f"logit cosine {figures['logit_cosine_mean']:.4f} < {t.min_cosine}")
        if figures["kl_mean_nats"] > t.max_kl_nats:
            failures.append(f"KL {figures['kl_mean_nats']:.4g} nats > {t.max_kl_nats}")
        summary = (f"top-1 {figures['top1_agreement']:.3f}, logit cosine "
                   f"{figures['logit_cosine_mean']:.4f}, KL {figures['kl_mean_nats']:.3g} nats")
    else:
        if figures["hidden_cosine_mean"] < t.min_cosine:
            failures.append(f"hidden cosine {figures['hidden_cosine_mean']:.4f} < {t.min_cosine}")
        pooled = figures.get("pooled_cosine")
        if pooled is not None and np.isfinite(pooled) and pooled < t.min_cosine:
            failures.append(f"pooled cosine {pooled:.4f} < {t.min_cosine}")
        embedding = figures.get("embedding_cosine")  # mean-pooled: the sentence embedding
        if embedding is not None and embedding < t.min_cosine:
            failures.append(f"sentence-embedding cosine {embedding:.4f} < {t.min_cosine}")
        summary = f"hidden cosine {figures['hidden_cosine_mean']:.4f}" + (
            f", sentence-embedding cosine {embedding:.4f}" if embedding is not None else "") + (
            f", pooled cosine {pooled:.4f}" if pooled is not None else "")
    hint = ("; the codes lose too much: compile with --method gptq --asym or more bits "
            "(`taalasc quality MODEL` compares policies on real text)")
    return Check("quality", not failures,
                 summary + (": " + "; ".join(failures) + hint if failures
                            else " (chip vs float reference)"))
