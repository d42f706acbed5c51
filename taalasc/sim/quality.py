"""Quality figures: how far the chip's outputs are from the float reference.

Decoders (logits [seq, vocab]), each averaged over positions unless named _min/_max:
  top1_agreement      fraction of positions where both predict the same next token
  logit_cosine_mean   cosine of the two logit vectors, mean over positions (also _min)
  kl_mean_nats        KL(P_float || P_chip) with softmax in float64, mean over positions
  max_abs_logit_error largest |float - chip| logit
Encoders (hidden [seq, hidden], pooled [hidden]):
  embedding_cosine   cosine of the sentence embeddings: the mean of the last hidden states
                     over the tokens, L2-normalised (sentence-transformers' mean pooling +
                     Normalize, as all-MiniLM-L6-v2 uses; one unpadded sequence)
  hidden_cosine_mean / hidden_cosine_min   per-token cosine of the last hidden states
  pooled_cosine                            cosine of the pooled [CLS] vectors
  max_abs_hidden_error

Text quality (``TextQuality``, over many windows or sentences, all in float64):
  nll_float_nats / nll_chip_nats   mean negative log-likelihood of tokens 1..n-1 of each
                                   window given the tokens before it
  ppl_float / ppl_chip             perplexity exp(nll), over all scored tokens together
  ppl_increase_pct                 100 * (ppl_chip / ppl_float - 1)
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass, field

from taalasc.errors import ModelError
from taalasc.sim.graph import SimResult


# An inf logit (a float32 overflow in the model or in a fault-injected chip) makes these
# figures NaN through inf - inf or inf / inf: the NaN is the honest answer and is reported
# (null in JSON), so numpy's warnings about it are silenced where it arises.
_NONFINITE_IS_MEASURED = dict(over="ignore", divide="ignore", invalid="ignore")


@np.errstate(**_NONFINITE_IS_MEASURED)
def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    # two zero vectors are the same vector; one zero vector is orthogonal to anything
    both_zero = (den == 0) & (np.abs(a).sum(-1) == 0) & (np.abs(b).sum(-1) == 0)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(both_zero, 1.0, 0.0))


@np.errstate(**_NONFINITE_IS_MEASURED)
def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@np.errstate(**_NONFINITE_IS_MEASURED)
def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) per row, in nats, computed in float64."""
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


@np.errstate(**_NONFINITE_IS_MEASURED)
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
            "embedding_cosine": embedding_cosine(a, b),
            "hidden_cosine_mean": float(cos.mean()),
            "hidden_cosine_min": float(cos.min()),
            "max_abs_hidden_error": float(np.abs(a.astype(np.float64) - b).max()),
        }
        if reference.pooled is not None and chip.pooled is not None:
            out["pooled_cosine"] = float(_cosine_rows(reference.pooled, chip.pooled))
        return out
    raise ModelError("compare: the results must both hold logits or both hold hidden states")


# --------------------------------------------------------------------------- sentences


@np.errstate(**_NONFINITE_IS_MEASURED)
def sentence_embedding(hidden: np.ndarray) -> np.ndarray:
    """float64 [hidden]: the mean of ``hidden`` [seq, hidden] over the tokens, L2-normalised
    (a zero mean stays zero)."""
    h = np.asarray(hidden, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] == 0:
        raise ModelError(f"hidden states must be [tokens, hidden] with at least one token, "
                         f"not shape {h.shape}")
    mean = h.mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else mean


def embedding_cosine(ref_hidden: np.ndarray, chip_hidden: np.ndarray) -> float:
    """Cosine of the two mean-pooled sentence embeddings (see ``sentence_embedding``)."""
    return float(_cosine_rows(sentence_embedding(ref_hidden), sentence_embedding(chip_hidden)))


# --------------------------------------------------------------------------- perplexity


def token_nll(logits: np.ndarray, tokens) -> np.ndarray:
    """float64 [n-1]: -log P(tokens[i+1] | tokens[..i]) from ``logits`` [n, vocab] (row i
    predicts token i+1), softmax in float64."""
    ids = np.asarray(tokens, dtype=np.int64)
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != len(ids):
        raise ModelError(f"logits must be [tokens, vocab] for {len(ids)} tokens, "
                         f"not shape {logits.shape}")
    if len(ids) < 2:
        raise ModelError(f"perplexity needs at least 2 tokens, not {len(ids)}")
    logp = _log_softmax(logits[:-1])
    return -logp[np.arange(len(ids) - 1), ids[1:]]


@np.errstate(**_NONFINITE_IS_MEASURED)
def perplexity(nll_nats: float) -> float:
    """exp(mean NLL in nats)."""
    return float(np.exp(nll_nats))


def ppl_increase_pct(ppl_float: float, ppl_chip: float) -> float:
    """100 * (ppl_chip / ppl_float - 1): how much worse the chip predicts the text."""
    return 100.0 * (ppl_chip / ppl_float - 1.0)


@dataclass
class TextQuality:
    """Quality of the chip against the float model over many windows (decoders) or sentences
    (encoders); ``add_*`` one at a time, then ``figures()``. Sums are float64, in order."""

    nll_float: list[np.ndarray] = field(default_factory=list)
    nll_chip: list[np.ndarray] = field(default_factory=list)
    kl: list[np.ndarray] = field(default_factory=list)
    top1: list[np.ndarray] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)
    hidden_cosines: list[np.ndarray] = field(default_factory=list)

    def add_decoder(self, ref_logits: np.ndarray, chip_logits: np.ndarray, tokens) -> None:
        self.nll_float.append(token_nll(ref_logits, tokens))
        self.nll_chip.append(token_nll(chip_logits, tokens))
        self.kl.append(kl_divergence(ref_logits, chip_logits))
        self.top1.append(ref_logits.argmax(-1) == chip_logits.argmax(-1))

    def add_encoder(self, ref_hidden: np.ndarray, chip_hidden: np.ndarray) -> None:
        self.cosines.append(embedding_cosine(ref_hidden, chip_hidden))
        self.hidden_cosines.append(_cosine_rows(ref_hidden, chip_hidden))

    def figures(self) -> dict[str, float | int]:
        if self.nll_float:
            nf = float(np.concatenate(self.nll_float).mean())
            nc = float(np.concatenate(self.nll_chip).mean())
            pf, pc = perplexity(nf), perplexity(nc)
            return {
                "windows": len(self.nll_float),
                "tokens_scored": int(sum(len(n) for n in self.nll_float)),
                "nll_float_nats": nf, "nll_chip_nats": nc,
                "ppl_float": pf, "ppl_chip": pc, "ppl_increase_pct": ppl_increase_pct(pf, pc),
                "kl_mean_nats": float(np.concatenate(self.kl).mean()),
                "top1_agreement": float(np.concatenate(self.top1).mean()),
            }
        if self.cosines:
            return {
                "sentences": len(self.cosines),
                "embedding_cosine_mean": float(np.mean(self.cosines)),
                "embedding_cosine_min": float(np.min(self.cosines)),
                "hidden_cosine_mean": float(np.concatenate(self.hidden_cosines).mean()),
            }
        raise ModelError("text quality: no window or sentence was scored")


# --------------------------------------------------------------------------- text to sequences


def decoder_windows(ids, window: int) -> list[list[int]]:
    """Consecutive windows of ``window`` tokens, each scored on its own; a last window of
    fewer than 2 tokens predicts nothing and is left out."""
    if window < 2:
        raise ModelError(f"window must be at least 2 tokens, not {window}")
    ids = [int(t) for t in ids]
    if len(ids) < 2:
        raise ModelError(f"the text must hold at least 2 tokens to score, not {len(ids)}")
    return [ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) >= 2]


def weight_bits(weights) -> dict[str, float]:
    """Bits per weight of ChipWeights: ``code`` (what a bit budget counts,
    sum(bits*numel)/sum(numel)) and ``stored`` (codes plus the fp16 scales and minimums)."""
    numel = code = extra = 0
    for value in weights.values():
        shape = getattr(value, "shape", None)
        if not hasattr(value, "codes") or shape is None or len(shape) != 2:
            continue
        n = int(shape[0]) * int(shape[1])
        numel += n
        code += int(value.bits) * n
        per_group = 16 * (2 if getattr(value, "mins", None) is not None else 1)
        extra += per_group * int(shape[0]) * (int(shape[1]) // int(value.group_size))
    if not numel:
        raise ModelError("chip weights hold no quantized tensor")
    return {"code": code / numel, "stored": (code + extra) / numel}


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(ckpt):
    """The model's tokenizer as a ``tokenizers.Tokenizer`` without padding or truncation:
    the checkpoint's own (``ckpt.tokenizer()``, e.g. a GGUF file's vocabulary) or the Hugging
    Face ``tokenizer.json`` next to the checkpoint. ModelError when there is none."""
    from pathlib import Path

    own = getattr(ckpt, "tokenizer", None)
    tok = own() if callable(own) else None
    where = Path(ckpt.path)
    if tok is None:
        folder = where if where.is_dir() else where.parent
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{where}: no tokenizer: a Hugging Face tokenizer.json must sit "
                             "next to the checkpoint (or use a .gguf file, which holds its own)")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelError(f"{path}: reading it needs the 'tokenizers' package "
                             "(pip install tokenizers)") from None
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust library raises plain Exception
            raise ModelError(f"{path}: not a valid tokenizer.json ({exc})") from None
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode(tok, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's special tokens ([CLS] ... [SEP] for BERT, a
    BOS token where the tokenizer's post-processor adds one)."""
    return [int(t) for t in tok.encode(text, add_special_tokens=True).ids]


def encoder_sentences(tok, text: str, max_tokens: int, max_sentences: int | None = None
                      ) -> list[list[int]]:
    """One sequence per non-blank line, each cut to ``max_tokens`` by the tokenizer's own
    truncation (so BERT keeps its [SEP]); lines of no token are skipped."""
    tok.enable_truncation(max_length=max_tokens)
    try:
        out = [ids for line in text.splitlines() if line.strip()
               for ids in [encode(tok, line)] if ids]
    finally:
        tok.no_truncation()
    return out[:max_sentences] if max_sentences is not None else out


# --------------------------------------------------------------------------- runs


def float_outputs(ckpt, sequences, progress=None) -> list[np.ndarray]:
    """The float reference's main output per sequence: logits [n, vocab] (decoders) or last
    hidden states [n, hidden] (encoders); computed once and shared by every policy."""
    from taalasc.sim.float_ref import ArraySource, run_float

    # every sequence runs the whole model: read each tensor once, not once per sequence
    source, out = ArraySource({name: ckpt.read(name) for name in ckpt.tensors}), []
    for i, ids in enumerate(sequences):
        r = run_float(source, ckpt.config, ckpt.architecture, ids)
        out.append(r.logits if r.logits is not None else r.hidden)
        if progress:
            progress(i + 1, len(sequences))
    return out


def text_quality(ckpt, weights, sequences, datapath, reference: list[np.ndarray],
                 progress=None, weight_tile=None) -> dict[str, float | int]:
    """``TextQuality.figures()`` of the chip on ``weights`` against the float outputs
    ``reference`` (``float_outputs``), plus the accumulator overflow count. ``weight_tile``:
    the base array's (its encoding); None: tie-high-low."""
    from taalasc.sim.chip import run_chip

    acc, overflows = TextQuality(), 0
    for i, (ids, ref) in enumerate(zip(sequences, reference)):
        chip = run_chip(weights, ckpt.config, ckpt.architecture, ids, datapath,
                        weight_tile=weight_tile)
        overflows += chip.overflow_count
        if chip.logits is not None:
            acc.add_decoder(ref, chip.logits, ids)
        else:
            acc.add_encoder(ref, chip.hidden)
        if progress:
            progress(i + 1, len(sequences))
    return {**acc.figures(), "accumulator_overflows": overflows}
