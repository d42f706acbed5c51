"""The chip's run-time LoRA path, the float reference it is checked against, and SRAM fit.

The printed weights cannot change, so the chip keeps A and B in its LoRA SRAM at the adapter's
own precision and adds ``scaling · (x Aᵀ) Bᵀ`` to the printed layer's output (``apply_lora``).
``merged_weights`` is PEFT's merge, W + scaling · B A, in float32.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from taalasc.errors import ModelError
from taalasc.lora.adapter import LoraAdapter
from taalasc.model.checkpoint import Checkpoint

_ROUND = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def lora_bytes(rank: int, target_shapes: dict[str, tuple[int, int]],
               bytes_per_value: float) -> int:
    """SRAM bytes for rank-``rank`` A [r, in] and B [out, r] on every [out, in] target."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ModelError(f"LoRA rank must be a positive integer, not {rank!r}")
    if not bytes_per_value > 0:
        raise ModelError(f"bytes_per_value must be positive, not {bytes_per_value!r}")
    values = sum(rank * (out_f + in_f) for out_f, in_f in target_shapes.values())
    return math.ceil(values * bytes_per_value)


def lora_fits(rank: int, target_shapes: dict[str, tuple[int, int]], bytes_per_value: float,
              sram_bytes: int) -> tuple[bool, int]:
    """(fits, needed bytes) for a rank-``rank`` adapter on ``target_shapes`` in ``sram_bytes``."""
    needed = lora_bytes(rank, target_shapes, bytes_per_value)
    return needed <= sram_bytes, needed


def merged_weights(ckpt: Checkpoint, adapter: LoraAdapter) -> dict[str, np.ndarray]:
    """Float reference: W + scaling · B @ A (float32) for every adapted weight."""
    return {t: ckpt.read(t) + adapter.delta(t) for t in adapter.pairs}  # type: ignore[operator]


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to the storage dtype and back (exact for A and B themselves)."""
    return np.asarray(x, dtype=np.float32).astype(_ROUND[dtype]).astype(np.float32)


def apply_lora(x: np.ndarray, target: str, base_out: np.ndarray,
               adapter: LoraAdapter) -> np.ndarray:
    """What the chip does with its SRAM copy: base_out + scaling · ((x Aᵀ) Bᵀ).

    x is rounded to the adapter's dtype, both products accumulate in float32 and the rank-r
    intermediate is rounded to the adapter's dtype again (it is held between the two passes,
    as a bf16 PEFT layer holds it); the scaled correction is added in float32. For an F32
    adapter this equals x @ (W + scaling·B A)ᵀ up to float32 rounding. An unadapted target
    returns base_out unchanged.
    """
    pair = adapter.pairs.get(target)
    if pair is None:
        return np.asarray(base_out, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)
    base_out = np.asarray(base_out, dtype=np.float32)
    out_f, in_f = pair.B.shape[0], pair.A.shape[1]
    if x.shape[-1] != in_f or base_out.shape != x.shape[:-1] + (out_f,):
        raise ModelError(f"apply_lora {target}: x must be [..., {in_f}] and base_out "
                         f"[..., {out_f}] with the same leading shape, not "
                         f"{list(x.shape)} and {list(base_out.shape)}")
    h = _round(_round(x, adapter.dtype) @ pair.A.T, adapter.dtype)
    return base_out + np.float32(pair.scaling) * (h @ pair.B.T)
