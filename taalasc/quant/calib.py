"""Calibration data: token sequences, and the Hessians X^T X that GPTQ and the policy use.

Calibration input is one of
  * text (a file, or the small sample shipped as ``calib_default.txt``, named "default"),
    tokenized with the model's own tokenizer: a Hugging Face ``tokenizer.json`` next to the
    checkpoint, or ``ckpt.tokenizer()`` when the checkpoint offers one (GGUF files do);
  * token ids (``token_file_sequences``: a file of whitespace-separated integers, one
    sequence per non-empty line).

Text is split into units (paragraphs; sentences and lines for encoders, see
``text_units``), each tokenized without special tokens, cut into windows of at most
``seq_tokens`` tokens and wrapped in the special tokens the tokenizer adds to any text
(BERT's [CLS] ... [SEP], a Llama BOS), so every sequence is what the model sees in use.
``max_tokens`` caps the total; a window never exceeds the model's max_position_embeddings.

``collect_hessians`` runs the float reference (taalasc.sim.graph over FloatOps) on every
sequence and sums, per linear layer, X^T X of its float32 input in float64, then returns
H = 2/n X^T X (n = rows of X seen, i.e. tokens; 1 per sequence for BERT's pooler). Linears that read
the very same input array (q/k/v after one norm, gate/up after another) share one
accumulator, and the returned dict maps each of their names to the same array.

Memory bound: only the Hessians are held, 8 * in_features**2 bytes per distinct input
(MiniLM: about 130 MB for all layers; a 7B Llama layer about 1.5 GB), plus one forward pass
of one sequence. Callers that cannot hold all of them ask for a subset with ``names``;
the forward pass stops as soon as every asked-for layer has been seen, so a layer-by-layer
sweep costs about half the passes' full price.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from taalasc.errors import ModelError, QuantizationError
from taalasc.inputfile import read_text
from taalasc.sim.float_ref import CheckpointSource, FloatOps
from taalasc.sim.graph import check_tokens, run_graph, vocab_size

DEFAULT_NAME = "default"
DEFAULT_MAX_TOKENS = 4096
DEFAULT_SEQ_TOKENS = 256
MAX_TOKEN_FILE_BYTES = 64 << 20
# Calibration uses at most DEFAULT_MAX_TOKENS tokens (~16 KB of text); GPTQ's usual 128 x 2048
# tokens are ~1 MB. 16 MiB is plenty, and bounds what an endless file (/dev/zero) can cost.
MAX_TEXT_FILE_BYTES = 16 << 20

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_SEQ_TOKENS", "calibration_hessians",
           "calibration_sequences", "calibration_tokens", "collect_hessians", "default_text",
           "load_tokenizer", "policy_sequences", "text_units", "token_file_sequences"]


def default_text() -> str:
    """The calibration sample shipped with taalasc (a few KB of plain English and code)."""
    return importlib.resources.files("taalasc.quant").joinpath(
        "calib_default.txt").read_text(encoding="utf-8")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise QuantizationError(f"{path}: calibration text file does not exist")
    return read_text(path, MAX_TEXT_FILE_BYTES, "calibration text",
                     lambda message: QuantizationError(f"{path}: {message}"))


def _model_folder(ckpt: Any) -> Path | None:
    path = Path(getattr(ckpt, "path", "") or "")
    if path.is_dir():
        return path
    files = getattr(ckpt, "files", None)
    return Path(files[0]).parent if files else (path.parent if str(path) else None)


class _HFTokenizer:
    """A ``tokenizers.Tokenizer`` copy with padding and truncation switched off
    (MiniLM's tokenizer.json pads and truncates every text to 128 tokens)."""

    def __init__(self, tok: Any):
        from tokenizers import Tokenizer
        self._tok = Tokenizer.from_str(tok.to_str())
        self._tok.no_padding()
        self._tok.no_truncation()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)


def load_tokenizer(ckpt: Any) -> Any | None:
    """The model's tokenizer: ``ckpt.tokenizer()`` if it has one, else a tokenizer.json next
    to the checkpoint (read with the ``tokenizers`` package); None when there is neither."""
    if callable(getattr(ckpt, "tokenizer", None)):
        tok = ckpt.tokenizer()
        if tok is not None:
            return tok
    folder = _model_folder(ckpt)
    path = folder / "tokenizer.json" if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers is a dependency
        raise QuantizationError(f"{path}: reading it needs the 'tokenizers' package "
                                "(pip install tokenizers)") from None
    try:
        return _HFTokenizer(Tokenizer.from_file(str(path)))
    except Exception as exc:  # the Rust library raises plain Exceptions
        raise QuantizationError(f"{path}: not a readable Hugging Face tokenizer: "
                                f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def _as_encoder(tok: Any) -> Any:
    """A raw ``tokenizers.Tokenizer`` gets padding and truncation switched off (on a copy)."""
    if type(tok).__module__.startswith("tokenizers") and hasattr(tok, "to_str"):
        return _HFTokenizer(tok)
    return tok


def _encode(tok: Any, text: str, special: bool) -> list[int]:
    """Token ids from a tokenizer-like object (ours, or one with the transformers API)."""
    try:
        out = tok.encode(text, add_special_tokens=special)
    except TypeError:  # an encoder without the keyword: no special tokens then
        out = [] if special and not text else tok.encode(text)
    ids = getattr(out, "ids", out)
    return [int(i) for i in ids]


def _special_wrap(tok: Any) -> tuple[list[int], list[int]]:
    """(prefix, suffix) special ids the tokenizer adds around any text, from a probe word."""
    plain = _encode(tok, "a", False)
    full = _encode(tok, "a", True)
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return full[:k], full[k + len(plain):]
    return [], []


def _max_positions(ckpt: Any) -> int | None:
    cfg = getattr(ckpt, "config", None) or {}
    value = cfg.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def _window(ckpt: Any, seq_tokens: int, max_tokens: int) -> int:
    for what, value in (("seq_tokens", seq_tokens), ("max_tokens", max_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise QuantizationError(f"calibration {what} must be an integer >= 2, "
                                    f"not {value!r}")
    limit = _max_positions(ckpt)
    return min(seq_tokens, max_tokens, limit) if limit else min(seq_tokens, max_tokens)


def calibration_tokens(ckpt: Any, text_or_path: str | Path | None = None,
                       tokenizer: Any = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                       seq_tokens: int = DEFAULT_SEQ_TOKENS) -> list[list[int]]:
    """Token id sequences for calibrating ``ckpt`` from text.

    ``text_or_path``: None or "default" (the shipped sample), a Path or a path string (a
    UTF-8 text file), or the text itself (any string holding whitespace). ``tokenizer``:
    anything with ``encode(text, add_special_tokens=...)``; by default the model's own
    (see ``load_tokenizer``). QuantizationError for empty text or no tokenizer.
    """
    if text_or_path is None or text_or_path == DEFAULT_NAME:
        text, where = default_text(), "the default calibration sample: "
    elif isinstance(text_or_path, Path) or (isinstance(text_or_path, str)
                                            and not re.search(r"\s", text_or_path)):
        text, where = _read_text(Path(text_or_path)), f"{text_or_path}: "
    elif isinstance(text_or_path, str):
        text, where = text_or_path, ""
    else:
        raise QuantizationError(f"calibration text must be a string or a path, "
                                f"not {type(text_or_path).__name__}")
    if not text.strip():
        raise QuantizationError(f"{where}calibration text is empty")
    tok = tokenizer if tokenizer is not None else load_tokenizer(ckpt)
    if tok is None:
        folder = _model_folder(ckpt)
        raise QuantizationError(
            f"calibration text needs the model's tokenizer, and {folder or 'the model'} has "
            "no tokenizer.json; give token ids instead (--calib-tokens FILE)")
    window = _window(ckpt, seq_tokens, max_tokens)
    tok = _as_encoder(tok)
    prefix, suffix = _special_wrap(tok)
    body = window - len(prefix) - len(suffix)
    if body < 1:
        raise QuantizationError(f"calibration seq_tokens {seq_tokens} leaves no room beside "
                                f"the {len(prefix) + len(suffix)} special tokens")
    encoder = getattr(ckpt, "architecture", None) == "bert"
    sequences: list[list[int]] = []
    total = 0
    for unit in text_units(text, encoder):
        ids = _encode(tok, unit, False)
        for start in range(0, len(ids), body):
            room = min(body, max_tokens - total - len(prefix) - len(suffix))
            if room < 1:
                break
            seq = prefix + ids[start:start + room] + suffix
            sequences.append(seq)
            total += len(seq)
        if total >= max_tokens:
            break
    if not sequences:
        raise QuantizationError(f"{where}calibration text gives no tokens")
    return sequences


def text_units(text: str, sentences: bool) -> list[str]:
    """The pieces of ``text`` that become separate sequences: paragraphs (blank-line
    separated), or for encoders sentences and lines, which is how encoders are used
    (sentence embeddings): a [CLS] ... [SEP] every few dozen tokens, not every 256. GPTQ
    fitted on long windows generalises worse to short sentences (measured on MiniLM)."""
    units = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if sentences:
        units = [s.strip() for p in units for line in p.splitlines()
                 for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
    return units


def token_file_sequences(ckpt: Any, path: str | Path, max_tokens: int = DEFAULT_MAX_TOKENS,
                         seq_tokens: int = DEFAULT_SEQ_TOKENS) -> list[list[int]]:
    """Token id sequences from a file of whitespace-separated integers, one sequence per
    non-empty line; long lines are cut into windows of ``seq_tokens``. Ids are checked
    against the model's vocabulary when it has a config."""
    path = Path(path)
    if not path.exists():
        raise QuantizationError(f"{path}: calibration token file does not exist")
    window = _window(ckpt, seq_tokens, max_tokens)
    vocab = (ckpt.config or {}).get("vocab_size") if getattr(ckpt, "config", None) else None
    sequences: list[list[int]] = []
    total = 0
    lines = read_text(path, MAX_TOKEN_FILE_BYTES, "calibration token file",
                      lambda message: QuantizationError(f"{path}: {message}"),
                      encoding="ascii").splitlines()
    for lineno, line in enumerate(lines, 1):
        ids = []
        for word in line.split():
            if not re.fullmatch(r"[0-9]+", word) or (vocab and int(word) >= int(vocab)):
                limit = f" from 0 to {int(vocab) - 1}" if vocab else " >= 0"
                raise QuantizationError(f"{path}:{lineno}: token ids must be integers{limit}, "
                                        f"not {word!r}")
            ids.append(int(word))
        for start in range(0, len(ids), window):
            seq = ids[start:start + window][:max_tokens - total]
            if seq:
                sequences.append(seq)
                total += len(seq)
    if not sequences:
        raise QuantizationError(f"{path}: calibration token file holds no token ids")
    return sequences


def calibration_sequences(ckpt: Any, calib: str | Path | None = None,
                          calib_tokens: str | Path | None = None,
                          max_tokens: int = DEFAULT_MAX_TOKENS) -> list[list[int]]:
    """The sequences a BitPolicy asks for: token ids from ``calib_tokens`` if given, else
    text ``calib`` (a path or "default"; None is the default sample)."""
    if calib is not None and calib_tokens is not None:
        raise QuantizationError("give calibration text or calibration token ids, not both")
    if calib_tokens is not None:
        return token_file_sequences(ckpt, calib_tokens, max_tokens)
    path = calib if calib in (None, DEFAULT_NAME) else Path(calib)
    return calibration_tokens(ckpt, path, max_tokens=max_tokens)


# --------------------------------------------------------------------------- Hessians


class _StopForward(Exception):
    """Raised inside the graph once every asked-for layer has seen this sequence."""


class _HessianOps(FloatOps):
    """FloatOps whose ``linear`` adds X^T X of its input to a per-input accumulator."""

    def __init__(self, source: Any, wanted: set[str] | None):
        super().__init__(source)
        self.wanted = wanted
        self.xtx: dict[str, np.ndarray] = {}    # group key -> sum X^T X (float64)
        self.count: dict[str, int] = {}         # group key -> rows of X
        self.group: dict[str, str] = {}         # weight name -> group key
        self.embedded: set[str] = set()
        self.seen: set[str] = set()             # names seen in the current sequence
        self._last_x: np.ndarray | None = None
        self._last_key: str | None = None

    def start_sequence(self) -> None:
        self.seen = set()
        self._last_x = self._last_key = None

    def embed(self, weight, ids):
        self.embedded.add(weight)
        self.seen.add(weight)   # asked for but no linear: nothing to wait for
        return super().embed(weight, ids)

    def linear(self, x, weight, bias):
        if self.wanted is None or weight in self.wanted:
            if weight not in self.group:
                shared = self._last_x is not None and x is self._last_x
                self.group[weight] = self._last_key if shared else weight
            key = self.group[weight]
            if key not in self.seen:  # a shared input is added once per sequence
                x2 = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
                if key not in self.xtx:
                    self.xtx[key] = np.zeros((x2.shape[1], x2.shape[1]), dtype=np.float64)
                    self.count[key] = 0
                self.xtx[key] += x2.T @ x2
                self.count[key] += x2.shape[0]
                self.seen.add(key)
            self._last_x, self._last_key = x, key
            self.seen.add(weight)
            if self.wanted is not None and self.wanted <= self.seen:
                raise _StopForward
        return super().linear(x, weight, bias)


def collect_hessians(ckpt: Any, sequences: Sequence[Sequence[int]],
                     names: Iterable[str] | None = None,
                     progress: Any = None) -> dict[str, np.ndarray]:
    """name -> H = 2/n X^T X (float64 [in, in]) for every linear layer of ``ckpt`` (or only
    ``names``) over the float reference run on ``sequences``.

    Weights also read by an embedding lookup (a tied lm_head) are left out: compensating
    the head's error would distort the lookup. Linears that read the same input share one
    array. ``progress(stage, done, total)`` is called with stage "calibrate".
    """
    if not sequences:
        raise QuantizationError("calibration needs at least one token sequence")
    where = str(getattr(ckpt, "path", "model"))
    config, arch = getattr(ckpt, "config", None), getattr(ckpt, "architecture", None)
    try:
        vocab = vocab_size(config, arch, where)
        for seq in sequences:
            check_tokens(seq, vocab, f"{where}: calibration")
    except ModelError as exc:
        raise QuantizationError(f"calibration cannot run the model: {exc}") from None
    wanted = None if names is None else set(names)
    ops = _HessianOps(CheckpointSource(ckpt), wanted)
    for i, seq in enumerate(sequences):
        if progress:
            progress("calibrate", i, len(sequences))
        ops.start_sequence()
        try:
            run_graph(ops, config, arch, seq)
        except _StopForward:
            pass
    if progress:
        progress("calibrate", len(sequences), len(sequences))
    hessians = {key: xtx * (2.0 / ops.count[key]) for key, xtx in ops.xtx.items()}
    return {name: hessians[key] for name, key in ops.group.items()
            if name not in ops.embedded}


def policy_sequences(ckpt: Any, policy: Any) -> list[list[int]]:
    """The calibration sequences a BitPolicy asks for (its calib / calib_tokens fields)."""
    return calibration_sequences(ckpt, getattr(policy, "calib", None),
                                 getattr(policy, "calib_tokens", None),
                                 getattr(policy, "calib_max_tokens", DEFAULT_MAX_TOKENS))


# GPTQ in a compile holds every linear input's Hessian at once (in x in float64 each): refuse
# up front what would not fit a 24 GiB machine with the model's own work beside it.
MAX_HESSIAN_BYTES = 8 << 30


def hessian_bytes_bound(ckpt: Any) -> int:
    """An upper bound of the Hessians' bytes: one in x in float64 matrix per 2-D weight
    (linears that share an input share one, so the real figure is lower)."""
    return sum(8 * int(info.shape[1]) ** 2 for name, info in ckpt.tensors.items()
               if len(info.shape) == 2 and "embed" not in name)


def calibration_hessians(ckpt: Any, policy: Any, progress: Any = None
                         ) -> dict[str, np.ndarray]:
    """Hessians of every linear layer on ``policy``'s calibration data (all held at once:
    see the module docstring for the memory they take)."""
    bound = hessian_bytes_bound(ckpt)
    if bound > MAX_HESSIAN_BYTES:
        raise QuantizationError(
            f"{getattr(ckpt, 'path', 'model')}: GPTQ would hold up to {bound / 2**30:.1f} GiB "
            f"of calibration Hessians (one in x in float64 matrix per linear input), more "
            f"than {MAX_HESSIAN_BYTES >> 30} GiB; use --method rtn for a model this size")
    return collect_hessians(ckpt, policy_sequences(ckpt, policy), progress=progress)
