"""Bit assignment: which tensor gets how many bits, and the streaming model quantizer.

Precedence, from weakest to strongest:
  1. ``default_bits`` for every 2-D tensor (or, with ``auto``, the automatic 3/6-bit choice);
  2. explicit rules ``GLOB=BITS`` — the *last* matching rule wins, as with repeated
     command-line options: ``--rule '*=4' --rule '*.v_proj.*=6'`` reads left to right.
Rules always override the automatic policy, and tensors fixed by rules count in its budget.

Only 2-D tensors are quantized. 0-D/1-D tensors (norms, biases) stay fp16 constants and are
listed as such. A tensor with more than two dimensions is an error: we do not guess how to
flatten a convolution.

Group size: ``resolve_group_size`` gives each tensor the policy's ``group_size`` when it
divides the tensor's in_features, else its documented automatic choice (the largest divisor
not above it, at least 8, or the whole row); a row shorter than the group is one group.

The automatic policy (HC1-style low bits everywhere, high bits where they help most):
  * sensitivity of a tensor = how much its noise-to-signal ratio NSR = sum((w-w_hat)^2)/sum(w^2)
    drops from low to high bits, per extra bit spent: (NSR_low - NSR_high) / (numel*(high-low)).
    For a linear layer y = W x with random x, the output noise power relative to the output
    signal is NSR, so summing NSRs approximates the error added to the network; the budget is
    counted in bits, so the knapsack ratio is gain per bit. Both NSRs come from really
    quantizing the tensor (one tensor in memory at a time).
  * greedy: tensors in decreasing ratio (ties by name) get high bits while the average
    code bits per weight stays <= the budget; a tensor that does not fit is skipped and
    smaller ones after it may still fit.
The budget counts code bits only (the "3-bit weights" of HC1); the report also gives the
average including the fp16 scales.

Calibrated quantization (``method="gptq"``, or ``calib`` / ``calib_tokens`` given): the
policy's calibration data (taalasc.quant.calib; the shipped sample by default) drives
  * the rounding: GPTQ (taalasc.quant.gptq) on every linear layer, with the Hessian of its
    real input activations; tensors that are not linears (embedding tables, a tied head)
    stay round-to-nearest;
  * the automatic policy's sensitivity: the *measured* output error of each layer on the
    calibration activations, E = trace(dW H dW^T), relative to its output power
    trace(W H W^T), instead of the weight NSR (which is the same measure for white
    activations, H = I). Tables without a Hessian keep the weight NSR. The codes measured
    are the method's own (GPTQ codes when the method is gptq).
Without calibration, everything is exactly as before (round-to-nearest, weight NSR).
``asymmetric`` gives every tensor codes with an fp16 minimum per group.

``ternary`` (set from a ternary base array, not by the user): every tensor gets ternary
codes {-1, 0, +1} (QuantSpec.ternary), which needs 2 bits for every tensor and round to
nearest without --asym, --awq or --auto: GPTQ and AWQ search integer grids, the auto
policy chooses among widths, and a ternary site stores one width only.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import PurePath
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from taalasc.errors import QuantizationError
from taalasc.quant.method import METHODS
from taalasc.quant.quantize import (MAX_BITS, MIN_BITS, QuantizedTensor, QuantSpec,
                                    quantize_tensor, resolve_group_size)

# progress(stage, done, total) as in taalasc.compile; stage is "sensitivity", "calibrate" or
# "quantize".
Progress = Callable[[str, int, int], None]

DEFAULT_CALIB = "default"
DEFAULT_CALIB_MAX_TOKENS = 4096
# The measured auto policy holds the Hessians of at most this many bytes at once; more
# layers take more calibration passes (each stops after its last layer).
HESSIAN_BUDGET_BYTES = 256 << 20


def _check_bits(what: str, bits: Any) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise QuantizationError(
            f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, not {bits!r}")


@dataclass(frozen=True)
class BitRule:
    """Tensors whose name matches ``pattern`` (fnmatch glob, case-sensitive) get ``bits``."""

    pattern: str
    bits: int

    def __post_init__(self) -> None:
        if not self.pattern:
            raise QuantizationError("rule pattern must not be empty")
        _check_bits(f"bits of rule '{self.pattern}'", self.bits)

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)

    def __str__(self) -> str:
        return f"{self.pattern}={self.bits}"


_RULE = re.compile(r"^(?P<glob>[^=]+?)\s*=\s*(?P<bits>[0-9]+)$")


def parse_rule(text: str) -> BitRule:
    """Parse ``'GLOB=BITS'`` (e.g. ``'*.v_proj.*=6'``)."""
    m = _RULE.match(text.strip()) if isinstance(text, str) else None
    if not m or not m.group("glob").strip():
        raise QuantizationError(
            f"rule must look like GLOB=BITS (e.g. '*.v_proj.*=6'), not {text!r}")
    return BitRule(m.group("glob").strip(), int(m.group("bits")))


@dataclass(frozen=True)
class AutoMixed:
    """Low bits everywhere, high bits to the most error-sensitive tensors within a budget."""

    low_bits: int = 3
    high_bits: int = 6
    budget_bits_per_weight: float = 3.5

    def __post_init__(self) -> None:
        _check_bits("auto low_bits", self.low_bits)
        _check_bits("auto high_bits", self.high_bits)
        if self.high_bits <= self.low_bits:
            raise QuantizationError(
                f"auto high_bits must be greater than low_bits {self.low_bits}, "
                f"not {self.high_bits!r}")
        b = self.budget_bits_per_weight
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= self.low_bits:
            raise QuantizationError(
                f"auto budget must be at least low_bits {self.low_bits} bits/weight, not {b!r}")


@dataclass(frozen=True)
class BitPolicy:
    """Which bits each tensor gets, and how its codes are found.

    ``method``: "rtn" (round to nearest) or "gptq" (error-compensating, calibrated).
    ``asymmetric``: codes with an fp16 minimum per group (QuantSpec.asymmetric).
    ``calib``: a calibration text file, or "default" (the shipped sample); ``calib_tokens``:
    a file of token ids instead. Either one (or method gptq, which then uses the default
    sample) makes the policy *calibrated*: see the module docstring.
    """

    default_bits: int = 4
    rules: tuple[BitRule, ...] = ()
    group_size: int | None = 128
    auto: AutoMixed | None = None
    method: str = "rtn"
    asymmetric: bool = False
    calib: str | None = None
    calib_tokens: str | None = None
    calib_max_tokens: int = DEFAULT_CALIB_MAX_TOKENS
    # GGUF files: keep the file's own Q8_0/Q4_0/Q4_1 codes (plan_bits gives those tensors
    # their format unless a rule says otherwise; taalasc.quant.method.TensorQuantizer takes
    # the codes). The commands that print a model (compile, simulate) turn it on.
    native: bool = False
    # Activation-aware scales folded into the RMSNorm weights (taalasc.quant.awq); needs
    # calibration data (the default sample unless calib/calib_tokens say otherwise).
    awq: bool = False
    # The base array stores ternary weights: every 2-D tensor gets QuantSpec(2, ternary=True).
    ternary: bool = False

    def __post_init__(self) -> None:
        _check_bits("default bits", self.default_bits)
        if self.method not in METHODS:
            raise QuantizationError(f"method must be one of {', '.join(METHODS)}, "
                                    f"not {self.method!r}")
        for key in ("asymmetric", "native", "awq", "ternary"):
            if not isinstance(getattr(self, key), bool):
                raise QuantizationError(f"{key} must be true or false, "
                                        f"not {getattr(self, key)!r}")
        for key in ("calib", "calib_tokens"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, (str, PurePath)) or not str(value)):
                raise QuantizationError(f"{key} must be a file path (or 'default' for calib), "
                                        f"not {value!r}")
            if isinstance(value, PurePath):
                object.__setattr__(self, key, str(value))
        if self.calib is not None and self.calib_tokens is not None:
            raise QuantizationError("give calibration text (calib) or token ids "
                                    "(calib_tokens), not both")
        if self.method == "rtn" and self.auto is None and not self.awq and (
                self.calib is not None or self.calib_tokens is not None):
            raise QuantizationError("calibration data is used by method gptq, --awq and the "
                                    "auto policy; with round-to-nearest and fixed bits it would "
                                    "change nothing (add --method gptq, --awq or --auto)")
        m = self.calib_max_tokens
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise QuantizationError(f"calib_max_tokens must be an integer >= 2, not {m!r}")
        QuantSpec(self.default_bits, self.group_size, self.asymmetric)  # validates group_size
        if self.ternary:
            asked = [what for what, on in (("--asym", self.asymmetric),
                                           (f"--method {self.method}", self.method != "rtn"),
                                           ("--awq", self.awq), ("--auto", self.auto is not None))
                     if on]
            if asked:
                raise QuantizationError(
                    f"ternary bases store {{-1, 0, +1}} weights at --bits 2, rounded to nearest; "
                    f"{' and '.join(asked)} cannot make ternary codes")

    @property
    def calibrated(self) -> bool:
        """True when calibration data drives the codes or the auto policy."""
        return (self.method != "rtn" or self.awq or self.calib is not None
                or self.calib_tokens is not None)

    def to_dict(self) -> dict[str, Any]:
        calibration = None
        if self.calibrated:
            calibration = {"tokens": self.calib_tokens} if self.calib_tokens is not None \
                else {"text": self.calib if self.calib is not None else DEFAULT_CALIB}
            calibration["max_tokens"] = self.calib_max_tokens
        return {
            "default_bits": self.default_bits,
            "rules": [str(r) for r in self.rules],
            "group_size": self.group_size if self.group_size is not None else "per-channel",
            "auto": None if self.auto is None else {
                "low_bits": self.auto.low_bits, "high_bits": self.auto.high_bits,
                "budget_bits_per_weight": self.auto.budget_bits_per_weight},
            "method": self.method,
            "asymmetric": self.asymmetric,
            "calibration": calibration,
            "native": self.native,
            "awq": self.awq,
            **({"ternary": True} if self.ternary else {}),
            "auto_sensitivity": None if self.auto is None else (
                "output-error" if self.calibrated else "weight-nsr"),
        }


@dataclass(frozen=True)
class TensorPlan:
    """The bits chosen for one 2-D tensor and why (``reason``: default, rule GLOB=B, auto-*)."""

    name: str
    shape: tuple[int, int]
    spec: QuantSpec          # group_size resolved for this tensor
    reason: str
    sensitivity: float | None = None   # auto only: NSR (or output NSR) drop per extra bit

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class BitPlan:
    tensors: tuple[TensorPlan, ...]   # dataflow order
    constants: tuple[str, ...]        # 0-D/1-D tensors, not quantized

    @property
    def specs(self) -> dict[str, QuantSpec]:
        return {t.name: t.spec for t in self.tensors}

    @property
    def bits_per_weight(self) -> float:
        total = sum(t.numel for t in self.tensors)
        return sum(t.numel * t.spec.bits for t in self.tensors) / total if total else 0.0


class _Source:
    """A checkpoint (``.tensors`` + ``.read``) or a plain mapping name -> array, uniformly."""

    def __init__(self, obj: Any):
        if hasattr(obj, "tensors") and hasattr(obj, "read"):
            self.shapes = {n: tuple(int(d) for d in ti.shape) for n, ti in obj.tensors.items()}
            self.read: Callable[[str], np.ndarray] = obj.read
        elif isinstance(obj, Mapping):
            self.shapes = {n: tuple(np.shape(a)) for n, a in obj.items()}
            self.read = lambda n: np.asarray(obj[n])
        else:
            raise QuantizationError(
                f"expected a Checkpoint or a mapping of arrays, not {type(obj).__name__}")


def _did_you_mean(pattern: str, names: list[str]) -> str:
    """A hint for a rule that matches nothing: fix its misspelt dotted parts."""
    parts = sorted({p for n in names for p in n.split(".")})
    fixed = []
    for piece in pattern.split("."):
        if any(ch in piece for ch in "*?[") or piece in parts:
            fixed.append(piece)
        else:
            close = difflib.get_close_matches(piece, parts, n=1, cutoff=0.6)
            fixed.append(close[0] if close else piece)
    guess = ".".join(fixed)
    if guess != pattern and any(fnmatch.fnmatchcase(n, guess) for n in names):
        return f"; did you mean '{guess}'?"
    close = difflib.get_close_matches(pattern, names, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _rule_bits(policy: BitPolicy, matrices: list[str], constants: list[str]) -> dict[str, BitRule]:
    """name -> the last rule matching it; every rule must match at least one 2-D tensor."""
    winner: dict[str, BitRule] = {}
    for rule in policy.rules:
        hits = [n for n in matrices if rule.matches(n)]
        if not hits:
            const = [n for n in constants if rule.matches(n)]
            if const:
                raise QuantizationError(
                    f"rule '{rule}' matches only unquantized 1-D tensors (e.g. {const[0]!r}); "
                    "norms and biases stay fp16")
            raise QuantizationError(
                f"rule '{rule}' matches no tensor{_did_you_mean(rule.pattern, matrices)}")
        for n in hits:
            winner[n] = rule   # later rules overwrite earlier ones: last match wins
    return winner


def _nsr(qt: QuantizedTensor) -> float:
    return 0.0 if qt.sqnr_db == float("inf") else 10.0 ** (-qt.sqnr_db / 10.0)


def plan_bits(ckpt_or_tensors: Any, policy: BitPolicy,
              progress: Progress | None = None) -> BitPlan:
    """Decide the QuantSpec of every 2-D tensor. Reads tensor data only for the auto policy."""
    src = _Source(ckpt_or_tensors)
    matrices, constants = [], []
    for name, shape in src.shapes.items():
        if len(shape) == 2:
            matrices.append(name)
        elif len(shape) <= 1:
            constants.append(name)
        else:
            raise QuantizationError(
                f"tensor {name!r} has shape {shape}: only 2-D weights (quantized) and "
                "1-D constants are supported")
    gs = {n: resolve_group_size(n, src.shapes[n][1], policy.group_size) for n in matrices}
    ruled = _rule_bits(policy, matrices, constants)

    def plan(name: str, bits: int, reason: str, sens: float | None = None) -> TensorPlan:
        shape = src.shapes[name]
        ternary = policy.ternary and bits == 2   # other bits: _require_ternary names them
        return TensorPlan(name, (int(shape[0]), int(shape[1])),
                          QuantSpec(bits, gs[name], policy.asymmetric, ternary), reason, sens)

    fixed = {n: plan(n, r.bits, f"rule {r}") for n, r in ruled.items()}
    if policy.native:  # the checkpoint's own codes (GGUF Q8_0/Q4_0/Q4_1); rules still win
        from taalasc.quant.method import native_specs
        for n, spec in native_specs(ckpt_or_tensors).items():
            if n not in fixed:
                shape = src.shapes[n]
                fixed[n] = TensorPlan(n, (int(shape[0]), int(shape[1])), spec,
                                      f"native {ckpt_or_tensors.tensors[n].dtype}")
    if policy.auto is None:
        chosen = {n: fixed.get(n) or plan(n, policy.default_bits, "default") for n in matrices}
        if policy.ternary:
            _require_ternary(chosen[n] for n in matrices)
        return BitPlan(tuple(chosen[n] for n in matrices), tuple(constants))

    auto = policy.auto
    numel = {n: src.shapes[n][0] * src.shapes[n][1] for n in matrices}
    cap = Fraction(auto.budget_bits_per_weight) * sum(numel.values())
    free = [n for n in matrices if n not in fixed]
    used = sum(numel[n] * fixed[n].spec.bits for n in fixed) + sum(numel[n] * auto.low_bits
                                                                    for n in free)
    if used > cap:
        raise QuantizationError(
            f"auto budget {auto.budget_bits_per_weight} bits/weight cannot be met: the rules "
            f"and {auto.low_bits}-bit default already need {used / sum(numel.values()):.4f}")
    if policy.calibrated:
        ratio = _measured_ratios(ckpt_or_tensors, src, policy, free, gs, progress)
    else:
        ratio = {}
        for i, n in enumerate(free):
            if progress:
                progress("sensitivity", i, len(free))
            w = src.read(n)
            lo = quantize_tensor(n, w, QuantSpec(auto.low_bits, gs[n], policy.asymmetric))
            hi = quantize_tensor(n, w, QuantSpec(auto.high_bits, gs[n], policy.asymmetric))
            del w
            ratio[n] = (_nsr(lo) - _nsr(hi)) / (numel[n] * (auto.high_bits - auto.low_bits))
        if progress and free:
            progress("sensitivity", len(free), len(free))
    high: set[str] = set()
    for n in sorted(free, key=lambda n: (-ratio[n], n)):
        extra = numel[n] * (auto.high_bits - auto.low_bits)
        if used + extra <= cap:
            used += extra
            high.add(n)
    chosen = dict(fixed)
    for n in free:
        chosen[n] = plan(n, auto.high_bits if n in high else auto.low_bits,
                         "auto-high" if n in high else "auto-low", ratio[n])
    return BitPlan(tuple(chosen[n] for n in matrices), tuple(constants))


def _require_ternary(plans: Iterator[TensorPlan]) -> None:
    """QuantizationError naming the first tensor that a ternary base cannot store."""
    for tp in plans:
        if not tp.spec.ternary:
            hint = " (or --requantize for a .gguf file's own blocks)" \
                if tp.reason.startswith("native") else ""
            raise QuantizationError(
                f"tensor {tp.name!r}: ternary bases store {{-1, 0, +1}} weights at --bits 2, "
                f"but {'--bits' if tp.reason == 'default' else tp.reason} gives it "
                f"{tp.spec.bits} bits{hint}")


def _checkpoint_only(obj: Any, what: str) -> Any:
    if not (hasattr(obj, "tensors") and hasattr(obj, "read") and hasattr(obj, "config")):
        raise QuantizationError(f"{what} runs the model on calibration data, so it needs a "
                                f"checkpoint with its config.json, not {type(obj).__name__}")
    return obj


def _hessian_chunks(names: list[str], shapes: Mapping[str, tuple], budget: int
                    ) -> Iterator[list[str]]:
    """Runs of ``names`` (dataflow order) whose Hessians (8 * in**2 bytes each, counted as
    if none were shared) fit in ``budget`` bytes; at least one name per run."""
    run: list[str] = []
    used = 0
    for n in names:
        need = 8 * int(shapes[n][1]) ** 2
        if run and used + need > budget:
            yield run
            run, used = [], 0
        run.append(n)
        used += need
    if run:
        yield run


def _measured_ratios(ckpt: Any, src: _Source, policy: BitPolicy, free: list[str],
                     gs: Mapping[str, int], progress: Progress | None) -> dict[str, float]:
    """name -> drop of the output NSR trace(dW H dW^T) / trace(W H W^T) from low to high
    bits, per extra bit, on the calibration activations (weight NSR for tables without a
    Hessian). Hessians are collected a few layers at a time (HESSIAN_BUDGET_BYTES)."""
    from taalasc.quant.calib import collect_hessians, policy_sequences
    from taalasc.quant.gptq import gptq_quantize, output_error

    ckpt = _checkpoint_only(ckpt, "the calibrated auto policy")
    auto = policy.auto
    sequences = policy_sequences(ckpt, policy)
    ratio: dict[str, float] = {}
    done = 0
    for chunk in _hessian_chunks(free, src.shapes, HESSIAN_BUDGET_BYTES):
        hessians = collect_hessians(ckpt, sequences, names=chunk)
        for n in chunk:
            if progress:
                progress("sensitivity", done, len(free))
            w = src.read(n)
            h = hessians.get(n)
            nsr = []
            for bits in (auto.low_bits, auto.high_bits):
                spec = QuantSpec(bits, gs[n], policy.asymmetric)
                if h is None:
                    nsr.append(_nsr(quantize_tensor(n, w, spec)))
                    continue
                qt = gptq_quantize(n, w, h, spec) if policy.method == "gptq" \
                    else quantize_tensor(n, w, spec)
                power = _output_power(w, h)
                nsr.append(output_error(w, qt, h) / power if power > 0 else 0.0)
            del w
            numel = src.shapes[n][0] * src.shapes[n][1]
            ratio[n] = (nsr[0] - nsr[1]) / (numel * (auto.high_bits - auto.low_bits))
            done += 1
        del hessians
    if progress and free:
        progress("sensitivity", len(free), len(free))
    return ratio


def _output_power(w: np.ndarray, h: np.ndarray) -> float:
    """trace(W H W^T): the layer's output power on the calibration inputs (times 2)."""
    total = 0.0
    rows = max(1, (1 << 21) // max(1, w.shape[1]))
    for r0 in range(0, w.shape[0], rows):
        block = np.asarray(w[r0:r0 + rows], dtype=np.float64)
        total += float(np.einsum("ij,ij->", block @ h, block))
    return total


def assign_bits(ckpt_or_tensors: Any, policy: BitPolicy) -> dict[str, QuantSpec]:
    """name -> QuantSpec (group size resolved) for every 2-D tensor, in dataflow order."""
    return plan_bits(ckpt_or_tensors, policy).specs


def quantize_model(ckpt: Any, policy: BitPolicy, progress: Progress | None = None,
                   plan: BitPlan | None = None, quantizer: Any = None
                   ) -> Iterator[QuantizedTensor]:
    """Quantize every 2-D tensor in dataflow order, one at a time (a generator).

    Only one tensor's float data is held at once; the caller decides whether to keep the
    yielded codes. Pass ``plan`` to reuse a plan already made with ``plan_bits``.
    """
    src = _Source(ckpt)
    if plan is None:
        plan = plan_bits(ckpt, policy, progress)   # eager: bad rules fail at the call
    if hasattr(ckpt, "tensors") and hasattr(ckpt, "read"):
        # The one per-tensor quantizer every command shares: the checkpoint's native codes
        # (GGUF), GPTQ with the calibration Hessians (computed at its first GPTQ tensor), or
        # round to nearest.
        from taalasc.quant.method import TensorQuantizer
        if policy.method == "gptq":
            _checkpoint_only(ckpt, "method gptq")
        if quantizer is None:
            quantizer = TensorQuantizer(ckpt, policy, progress)
    else:
        if policy.calibrated:
            _checkpoint_only(ckpt, f"method {policy.method} with calibration")

        def quantizer(name: str, spec: QuantSpec) -> QuantizedTensor:
            return quantize_tensor(name, src.read(name), spec)

    def stream(tensors: tuple[TensorPlan, ...]) -> Iterator[QuantizedTensor]:
        for i, tp in enumerate(tensors):
            if progress:
                progress("quantize", i, len(tensors))
            yield quantizer(tp.name, tp.spec)
        if progress and tensors:
            progress("quantize", len(tensors), len(tensors))

    return stream(plan.tensors)
