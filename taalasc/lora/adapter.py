"""The loaded adapter: one (A, B, scaling) per adapted base weight, at its stored precision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ADAPTER_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}  # storage dtype -> bytes per value


@dataclass(frozen=True, eq=False)
class LoraPair:
    """One adapted weight: ``target`` (a base tensor name) gets scaling · B @ A added."""

    target: str
    A: np.ndarray  # [r, in], the stored values as float32 (exact for F32/F16/BF16)
    B: np.ndarray  # [out, r]
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


@dataclass(frozen=True, eq=False)
class LoraAdapter:
    """A validated PEFT LoRA adapter, matched to one base checkpoint."""

    path: Path
    rank: int  # the config's r (a module may differ through rank_pattern)
    alpha: float
    scaling: float  # the config's default scaling
    dtype: str  # storage dtype of every A and B: "F32" | "F16" | "BF16"
    pairs: dict[str, LoraPair]  # by target weight name, in the checkpoint's dataflow order
    base_model: str | None = None  # base_model_name_or_path, as recorded by PEFT

    def sram_bytes(self) -> int:
        """Bytes to hold every A and B at the adapter's own precision."""
        values = sum(p.A.size + p.B.size for p in self.pairs.values())
        return values * ADAPTER_DTYPES[self.dtype]

    def delta(self, target: str) -> np.ndarray | None:
        """scaling · B @ A as float32, or None when ``target`` is not adapted."""
        pair = self.pairs.get(target)
        if pair is None:
            return None
        return (np.float32(pair.scaling) * (pair.B @ pair.A)).astype(np.float32)
