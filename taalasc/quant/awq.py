"""Activation-aware scaling (AWQ, Lin et al. 2023), folded into the RMSNorm weights.

For a Llama-family block, the linears that read one RMSNorm's output (q/k/v after
``input_layernorm``, gate/up after ``post_attention_layernorm``) see inputs whose channels
differ in size by orders of magnitude. With a per-input-channel scale s:

    norm' = norm / s        W' = W · diag(s)        so  W' (norm' ⊙ x̂) = W (norm ⊙ x̂)

the float model is unchanged (up to the fp16 rounding of norm', which the quality figures
count), but W' puts more of its code grid on the channels that carry large activations.
s = d^α / sqrt(max(d^α) · min(d^α)) with d the RMS of each input channel on the calibration
sample (sqrt of the Hessian's diagonal); α from {0, ¼, ½, ¾, 1} minimises the summed layer
output error trace(ΔW' H' ΔW'ᵀ) of round-to-nearest codes, H' = H / (s sᵀ). α = 0 is no
scaling, so the search never does worse than plain codes on the calibration sample.

Measured on SmolLM2-135M, 3-bit GPTQ asymmetric with the embedding at 6 bits, on the quality
bench's 870 tokens: chip perplexity +125 % without, +62 % with (docs/quality.md); at 4 bits
the search picks α = 0 (no change).
BERT's LayerNorm output also carries the residual stream: the fold is not equivalent there,
so the family is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taalasc.errors import QuantizationError
from taalasc.quant.quantize import QuantSpec, quantize_tensor

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
_GROUPS = (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
           ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))


def norm_groups(ckpt: Any) -> list[tuple[str, list[str]]]:
    """(norm weight, [linear weights reading it]) for every Llama block of ``ckpt``."""
    if ckpt.architecture != "llama":
        raise QuantizationError(f"{ckpt.path}: --awq folds scales into RMSNorm weights, which "
                                f"only the Llama family allows, not {ckpt.architecture!r}")
    out = []
    for name in ckpt.tensors:
        for norm, linears in _GROUPS:
            if name.endswith(f"{norm}.weight"):
                prefix = name[: -len(f"{norm}.weight")]
                names = [f"{prefix}{m}.weight" for m in linears]
                if all(n in ckpt.tensors for n in names):
                    out.append((name, names))
    return out


def _output_error(w: np.ndarray, spec: QuantSpec, hessian: np.ndarray) -> float:
    qt = quantize_tensor("awq", w, spec)
    delta = (w.astype(np.float64) - qt.dequantize().astype(np.float64))
    return float(np.einsum("ij,ij->", delta @ hessian, delta))


def search_scales(ckpt: Any, hessians: dict, spec_of: Any, skip: set[str]
                  ) -> dict[str, np.ndarray]:
    """norm weight name -> float32 scales s [in] for every group none of whose linears is in
    ``skip`` (GGUF tensors kept as their own codes); ``spec_of(name)`` gives each linear's
    planned QuantSpec (the error is measured at the bits it will get)."""
    scales = {}
    for norm, linears in norm_groups(ckpt):
        if any(n in skip or n not in hessians for n in linears):
            continue
        h = hessians[linears[0]]   # the linears of a group read one input: one Hessian
        rms = np.sqrt(np.maximum(np.diag(h), 1e-12))
        weights = {n: ckpt.read(n) for n in linears}
        best = None
        for alpha in ALPHAS:
            s = rms ** alpha
            s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
            hs = h / np.outer(s, s)
            err = sum(_output_error(weights[n] * s[None, :], spec_of(n), hs) for n in linears)
            if best is None or err < best[0]:
                best = (err, s)
        if not np.all(best[1] == np.float32(1.0)):
            scales[norm] = best[1]
    return scales


class ScaledCheckpoint:
    """A checkpoint view with the AWQ fold applied: norm / s and W · diag(s) on ``read``.
    Everything else (names, shapes, config) is the checkpoint's own."""

    def __init__(self, ckpt: Any, scales: dict[str, np.ndarray]):
        self.base = ckpt
        self.scales = scales
        self.of_linear = {lin: norm for norm, lins in norm_groups(ckpt) if norm in scales
                          for lin in lins}
        for attr in ("path", "files", "tensors", "config", "architecture"):
            setattr(self, attr, getattr(ckpt, attr))

    def layer_of(self, name: str):
        return self.base.layer_of(name)

    def read(self, name: str) -> np.ndarray:
        values = self.base.read(name)
        if name in self.scales:
            return (values / self.scales[name]).astype(np.float32)
        norm = self.of_linear.get(name)
        if norm is not None:
            return (values * self.scales[norm][None, :]).astype(np.float32)
        return values

    def hessian(self, name: str, hessian: np.ndarray) -> np.ndarray:
        """The Hessian of the scaled inputs x / s seen by a scaled linear."""
        norm = self.of_linear.get(name)
        if norm is None:
            return hessian
        s = self.scales[norm].astype(np.float64)
        return hessian / np.outer(s, s)
