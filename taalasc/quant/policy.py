"""Bit assignment: which tensor gets how many bits, and the streaming model quantizer.

Precedence, from weakest to strongest:
  1. ``default_bits`` for every 2-D tensor (or, with ``auto``, the automatic 3/6-bit choice);
  2. explicit rules ``GLOB=BITS`` — the *last* matching rule wins, as with repeated
     command-line options: ``--rule '*=4' --rule '*.v_proj.*=6'`` reads left to right.
Rules always override the automatic policy, and tensors fixed by rules count in its budget.

Only 2-D tensors are quantized. 0-D/1-D tensors (norms, biases) stay fp16 constants and are
listed as such. A tensor with more than two dimensions is an error: we do not guess how to
flatten a convolution.

Group size: the policy's ``group_size`` must divide every quantized tensor's in_features
(a row shorter than the group is one group); otherwise the user must pick another size or
per-channel (None). We never silently substitute a divisor.

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
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from taalasc.errors import QuantizationError
from taalasc.quant.quantize import (MAX_BITS, MIN_BITS, QuantizedTensor, QuantSpec,
                                    quantize_tensor, resolve_group_size)

# progress(stage, done, total) as in taalasc.compile; stage is "sensitivity" or "quantize".
Progress = Callable[[str, int, int], None]


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
    default_bits: int = 4
    rules: tuple[BitRule, ...] = ()
    group_size: int | None = 128
    auto: AutoMixed | None = None

    def __post_init__(self) -> None:
        _check_bits("default bits", self.default_bits)
        QuantSpec(self.default_bits, self.group_size)  # validates group_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_bits": self.default_bits,
            "rules": [str(r) for r in self.rules],
            "group_size": self.group_size if self.group_size is not None else "per-channel",
            "auto": None if self.auto is None else {
                "low_bits": self.auto.low_bits, "high_bits": self.auto.high_bits,
                "budget_bits_per_weight": self.auto.budget_bits_per_weight},
        }


@dataclass(frozen=True)
class TensorPlan:
    """The bits chosen for one 2-D tensor and why (``reason``: default, rule GLOB=B, auto-*)."""

    name: str
    shape: tuple[int, int]
    spec: QuantSpec          # group_size resolved for this tensor
    reason: str
    sensitivity: float | None = None   # auto only: NSR drop per extra bit

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
        return TensorPlan(name, (int(shape[0]), int(shape[1])), QuantSpec(bits, gs[name]),
                          reason, sens)

    fixed = {n: plan(n, r.bits, f"rule {r}") for n, r in ruled.items()}
    if policy.auto is None:
        chosen = {n: fixed.get(n) or plan(n, policy.default_bits, "default") for n in matrices}
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
    ratio: dict[str, float] = {}
    for i, n in enumerate(free):
        if progress:
            progress("sensitivity", i, len(free))
        w = src.read(n)
        lo = quantize_tensor(n, w, QuantSpec(auto.low_bits, gs[n]))
        hi = quantize_tensor(n, w, QuantSpec(auto.high_bits, gs[n]))
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


def assign_bits(ckpt_or_tensors: Any, policy: BitPolicy) -> dict[str, QuantSpec]:
    """name -> QuantSpec (group size resolved) for every 2-D tensor, in dataflow order."""
    return plan_bits(ckpt_or_tensors, policy).specs


def quantize_model(ckpt: Any, policy: BitPolicy, progress: Progress | None = None,
                   plan: BitPlan | None = None) -> Iterator[QuantizedTensor]:
    """Quantize every 2-D tensor in dataflow order, one at a time (a generator).

    Only one tensor's float data is held at once; the caller decides whether to keep the
    yielded codes. Pass ``plan`` to reuse a plan already made with ``plan_bits``.
    """
    src = _Source(ckpt)
    if plan is None:
        plan = plan_bits(ckpt, policy, progress)   # eager: bad rules fail at the call

    def stream(tensors: tuple[TensorPlan, ...]) -> Iterator[QuantizedTensor]:
        for i, tp in enumerate(tensors):
            if progress:
                progress("quantize", i, len(tensors))
            yield quantize_tensor(tp.name, src.read(tp.name), tp.spec)
        if progress and tensors:
            progress("quantize", len(tensors), len(tensors))

    return stream(plan.tensors)
