"""The quantization report: data first (records, to_dict for JSON), formatting in the CLI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from taalasc.quant.policy import BitPlan, BitPolicy, Progress, plan_bits, quantize_model
from taalasc.quant.quantize import QuantizedTensor

SCALE_BITS = 16  # every scale is one IEEE fp16 value


@dataclass(frozen=True)
class TensorReport:
    name: str
    shape: tuple[int, int]
    bits: int
    group_size: int
    n_groups: int            # per output row
    sqnr_db: float           # inf when exact
    reason: str              # default | rule GLOB=B | auto-high | auto-low
    sensitivity: float | None = None

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_scales(self) -> int:
        return self.shape[0] * self.n_groups

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "numel": self.numel,
            "bits": self.bits, "group_size": self.group_size, "n_scales": self.n_scales,
            # JSON has no infinity: an exact tensor is reported as null
            "sqnr_db": None if math.isinf(self.sqnr_db) else round(self.sqnr_db, 4),
            "reason": self.reason, "sensitivity": self.sensitivity,
        }


@dataclass(frozen=True)
class QuantReport:
    """Bits, group size and SQNR of every quantized tensor, and the model-wide averages."""

    tensors: tuple[TensorReport, ...]
    constants: tuple[str, ...]
    policy: BitPolicy

    @property
    def total_weights(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Average code bits per weight (what the budget counts): sum(bits*numel)/sum(numel)."""
        n = self.total_weights
        return sum(t.bits * t.numel for t in self.tensors) / n if n else 0.0

    @property
    def bits_per_weight_with_scales(self) -> float:
        """(code bits + 16 * number of scales) / number of weights."""
        n = self.total_weights
        code = sum(t.bits * t.numel for t in self.tensors)
        return (code + SCALE_BITS * sum(t.n_scales for t in self.tensors)) / n if n else 0.0

    @property
    def min_sqnr_db(self) -> float:
        return min((t.sqnr_db for t in self.tensors), default=math.inf)

    @classmethod
    def from_tensors(cls, plan: BitPlan, tensors: Iterable[QuantizedTensor],
                     policy: BitPolicy) -> "QuantReport":
        """Consume quantized tensors (codes are dropped as we go) into a report."""
        by_name = {tp.name: tp for tp in plan.tensors}
        rows = []
        for qt in tensors:
            tp = by_name[qt.name]
            rows.append(TensorReport(qt.name, qt.shape, qt.bits, qt.group_size, qt.n_groups,
                                     qt.sqnr_db, tp.reason, tp.sensitivity))
        return cls(tuple(rows), plan.constants, policy)

    def to_dict(self) -> dict[str, Any]:
        m = self.min_sqnr_db
        return {
            "policy": self.policy.to_dict(),
            "quant__weights__count": self.total_weights,
            "quant__bits_per_weight": round(self.bits_per_weight, 6),
            "quant__bits_per_weight_with_scales": round(self.bits_per_weight_with_scales, 6),
            "quant__sqnr_db__min": None if math.isinf(m) else round(m, 4),
            "tensors": [t.to_dict() for t in self.tensors],
            "constants": list(self.constants),
        }


def quantize_report(ckpt: Any, policy: BitPolicy,
                    progress: Progress | None = None) -> QuantReport:
    """Plan, quantize tensor by tensor (memory bounded by one tensor) and summarise."""
    plan = plan_bits(ckpt, policy, progress)
    return QuantReport.from_tensors(plan, quantize_model(ckpt, policy, progress, plan=plan),
                                    policy)
