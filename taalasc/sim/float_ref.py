"""The float32 reference forward pass, following the Hugging Face implementations.

Every operator computes in float32 as PyTorch does on CPU for a float32 model: Linear is
``x @ W.T + b``, RMSNorm is ``x * rsqrt(mean(x^2) + eps) * w``, LayerNorm uses the biased
variance, softmax subtracts the row maximum, RoPE uses cos/sin of ``position * inv_freq``.
Weights come from a ``WeightSource``, so the same forward runs on checkpoint tensors,
dequantized codes, or any mapping of arrays.

GELU is the exact erf form (HF "gelu"). numpy has no erf and scipy is not allowed, so ``erf``
below evaluates it in float64: the Maclaurin series for |z| < 3 (60 terms; cancellation
costs < 1e-13) and the Laplace continued fraction for erfc beyond (60 levels). It agrees with
``math.erf`` to ~1e-14, far below float32 resolution; the tests check it against math.erf.
"""

from __future__ import annotations

import math
from typing import Mapping, Protocol, Sequence

import numpy as np

from taalasc.errors import ModelError
from taalasc.sim.graph import SimResult, run_graph

F32 = np.float32


class WeightSource(Protocol):
    """Float32 weights by Hugging Face tensor name."""

    def names(self) -> list[str]: ...
    def get(self, name: str) -> np.ndarray: ...


class ArraySource:
    """A WeightSource over a mapping name -> array (converted to float32 on ``get``)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self._arrays = arrays

    def names(self) -> list[str]:
        return sorted(self._arrays)

    def get(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            raise ModelError(f"weights have no tensor {name!r}")
        return np.asarray(self._arrays[name], dtype=F32)


class CheckpointSource:
    """A WeightSource over a taalasc Checkpoint (reads one tensor at a time)."""

    def __init__(self, ckpt):
        self._ckpt = ckpt

    def names(self) -> list[str]:
        return list(self._ckpt.tensors)

    def get(self, name: str) -> np.ndarray:
        return self._ckpt.read(name)


def erf(z: np.ndarray) -> np.ndarray:
    """erf in float64 (see the module docstring for the method and its accuracy)."""
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z)
    out = np.empty_like(z)
    small = a < 3.0
    if small.any():
        zs = z[small]
        z2 = zs * zs
        term = zs.copy()
        total = zs.copy()
        for n in range(1, 60):
            term = term * (-z2) / n
            total = total + term / (2 * n + 1)
        out[small] = total * (2.0 / math.sqrt(math.pi))
    large = ~small
    if large.any():
        al = a[large]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            t = al.copy()
            for k in range(60, 0, -1):
                t = al + (k / 2.0) / t
            erfc = np.exp(-al * al) / math.sqrt(math.pi) / t
        out[large] = np.sign(z[large]) * (1.0 - np.nan_to_num(erfc, nan=0.0))
        out[large & np.isnan(z)] = np.nan
    return out


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """HF "gelu": 0.5 * x * (1 + erf(x / sqrt(2))), erf in float64, result float32."""
    x64 = np.asarray(x, dtype=np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(F32)


class FloatOps:
    """The graph operators in plain float32 numpy (BLAS matmul for Linear and attention)."""

    def __init__(self, source: WeightSource):
        self.source = source

    def names(self) -> list[str]:
        return self.source.names()

    def linear(self, x, weight, bias):
        w = self.source.get(weight)
        if w.ndim != 2 or w.shape[1] != x.shape[-1]:
            raise ModelError(f"tensor {weight!r}: shape {tuple(w.shape)} does not take an "
                             f"input of {x.shape[-1]} features")
        y = np.matmul(x, w.T).astype(F32)
        return (y + self.source.get(bias)).astype(F32) if bias else y

    def embed(self, weight, ids):
        return self.source.get(weight)[ids].astype(F32)

    def vector(self, name):
        return self.source.get(name)

    def rmsnorm(self, x, weight, eps):
        var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
        return (weight * (x * (F32(1) / np.sqrt(var + F32(eps))))).astype(F32)

    def layernorm(self, x, weight, bias, eps):
        mean = np.mean(x, axis=-1, keepdims=True, dtype=F32)
        d = x - mean
        var = np.mean(d * d, axis=-1, keepdims=True, dtype=F32)
        return (d / np.sqrt(var + F32(eps)) * weight + bias).astype(F32)

    def attention(self, q, k, v, allowed, scale):
        scores = np.matmul(q, k.transpose(0, 2, 1)).astype(F32) * F32(scale)
        scores = np.where(allowed[None], scores, F32(-np.inf))
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = (e / e.sum(axis=-1, keepdims=True, dtype=F32)).astype(F32)
        return np.matmul(probs, v).astype(F32)

    def cos_sin(self, angles):
        return np.cos(angles).astype(F32), np.sin(angles).astype(F32)

    def silu(self, x):
        with np.errstate(over="ignore"):
            return (x / (F32(1) + np.exp(-x))).astype(F32)

    def gelu(self, x):
        return gelu_exact(x)

    def tanh(self, x):
        return np.tanh(x).astype(F32)


def run_float(source: WeightSource, config: dict | None, architecture: str,
              tokens: Sequence[int]) -> SimResult:
    """The float32 reference forward pass on ``source``'s weights (logits or hidden+pooled)."""
    return run_graph(FloatOps(source), config, architecture, tokens)
