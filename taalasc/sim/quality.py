"""Quality figures: how far the chip's outputs are from the float reference.

Decoders (logits [seq, vocab]), each averaged over positions unless named _min/_max:
  top1_agreement      fraction of positions where both predict the same next token
  logit_cosine_mean   cosine of the two logit vectors, mean over positions (also _min)
  kl_mean_nats        KL(P_float || P_chip) with softmax in float64, mean over positions
  max_abs_logit_error largest |float - chip| logit
Encoders (hidden [seq, hidden], pooled [hidden]):
  hidden_cosine_mean / hidden_cosine_min   per-token cosine of the last hidden states
  pooled_cosine                            cosine of the pooled [CLS] vectors
  max_abs_hidden_error
"""

from __future__ import annotations

import numpy as np

from taalasc.errors import ModelError
from taalasc.sim.graph import SimResult


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    # two zero vectors are the same vector; one zero vector is orthogonal to anything
    both_zero = (den == 0) & (np.abs(a).sum(-1) == 0) & (np.abs(b).sum(-1) == 0)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(both_zero, 1.0, 0.0))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) per row, in nats, computed in float64."""
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


def compare(reference: SimResult, chip: SimResult) -> dict[str, float]:
    """Named quality figures of ``chip`` against ``reference`` (same tokens, same model)."""
    if reference.tokens != chip.tokens:
        raise ModelError("compare: the two results ran on different token sequences")
    if reference.logits is not None and chip.logits is not None:
        a, b = reference.logits, chip.logits
        if a.shape != b.shape:
            raise ModelError(f"compare: logits shapes differ: {a.shape} and {b.shape}")
        cos = _cosine_rows(a, b)
        return {
            "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
            "logit_cosine_mean": float(cos.mean()),
            "logit_cosine_min": float(cos.min()),
            "kl_mean_nats": float(kl_divergence(a, b).mean()),
            "max_abs_logit_error": float(np.abs(a.astype(np.float64) - b).max()),
        }
    if reference.hidden is not None and chip.hidden is not None:
        a, b = reference.hidden, chip.hidden
        if a.shape != b.shape:
            raise ModelError(f"compare: hidden shapes differ: {a.shape} and {b.shape}")
        cos = _cosine_rows(a, b)
        out = {
            "hidden_cosine_mean": float(cos.mean()),
            "hidden_cosine_min": float(cos.min()),
            "max_abs_hidden_error": float(np.abs(a.astype(np.float64) - b).max()),
        }
        if reference.pooled is not None and chip.pooled is not None:
            out["pooled_cosine"] = float(_cosine_rows(reference.pooled, chip.pooled))
        return out
    raise ModelError("compare: the results must both hold logits or both hold hidden states")
