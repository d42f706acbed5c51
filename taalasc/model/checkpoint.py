"""Open a checkpoint (one .safetensors file, a sharded index, or a folder) from headers only.

``open_checkpoint`` reads the safetensors headers, the index and config.json, checks that they
agree, and returns a ``Checkpoint`` whose tensors are ordered by dataflow. No weight byte is
read until ``Checkpoint.read(name)`` asks for one tensor.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from taalasc.errors import ModelError
from taalasc.model import arch
from taalasc.inputfile import MAX_CONFIG_BYTES, MAX_INDEX_BYTES, read_json
from taalasc.model.safetensors_io import (FLOAT32_READABLE, INTEGER_DTYPES, TensorInfo,
                                          read_header, read_tensor)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

__all__ = ["BUFFERS", "Checkpoint", "TensorInfo", "buffer_reason", "dataflow_order",
           "open_checkpoint"]

# Non-weight buffers that PyTorch modules save next to the weights, left off the chip.
# (name pattern, dtypes it may have, reason). The name must match AND the dtype be listed:
# an integer tensor with any other name is refused, and a float "attn.bias" is a buffer only
# in GPT-2's causal-mask shape [1, 1, n, n].
_ANY_DTYPE = None
BUFFERS: tuple[tuple[re.Pattern, tuple[str, ...] | None, str], ...] = (
    (re.compile(r"(?:^|\.)position_ids$"), INTEGER_DTYPES,
     "buffer: position ids, recomputed on chip"),
    (re.compile(r"(?:^|\.)token_type_ids$"), INTEGER_DTYPES,
     "buffer: token type ids (all 0), recomputed on chip"),
    (re.compile(r"(?:^|\.)rotary_emb\.inv_freq$"), _ANY_DTYPE,
     "buffer: RoPE inverse frequencies, recomputed from config.json"),
    (re.compile(r"(?:^|\.)rotary_emb\.(?:cos|sin)_cached$"), _ANY_DTYPE,
     "buffer: RoPE cos/sin cache, recomputed from config.json"),
    (re.compile(r"(?:^|\.)attn\.masked_bias$"), _ANY_DTYPE,
     "buffer: masked-attention fill value, not a weight"),
    (re.compile(r"(?:^|\.)attn\.bias$"), INTEGER_DTYPES + ("BOOL",),
     "buffer: causal attention mask, built on chip"),
)
_CAUSAL_MASK = "buffer: causal attention mask, built on chip"


def dataflow_order(names: Iterable[str], architecture: str) -> list[str]:
    """Tensor names in forward-pass order (see taalasc.model.arch.dataflow_order)."""
    return arch.dataflow_order(names, architecture)


class Checkpoint:
    """The headers of a model: names, dtypes, shapes and where each tensor's bytes are.

    Attributes:
        path: what the user gave (a .safetensors file, an index .json, or a folder).
        files: the shard files, sorted.
        tensors: name -> TensorInfo, in dataflow order.
        config: parsed config.json next to the weights, or None.
        architecture: "llama" | "bert" | "generic".
        skipped: name -> reason for tensors of the file left off the chip (buffers such as
            BERT's position_ids); they are not in ``tensors``.
    """

    def __init__(self, path: Path, files: list[Path], tensors: dict[str, TensorInfo],
                 config: dict | None, architecture: str,
                 skipped: dict[str, str] | None = None):
        self.path = path
        self.files = files
        self.tensors = tensors
        self.config = config
        self.architecture = architecture
        self.skipped = dict(skipped or {})

    def __repr__(self) -> str:
        return (f"Checkpoint({str(self.path)!r}, architecture={self.architecture!r}, "
                f"tensors={len(self.tensors)}, params={self.param_count})")

    def info(self, name: str) -> TensorInfo:
        """The TensorInfo of ``name``; ModelError with a suggestion when it is unknown."""
        try:
            return self.tensors[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.tensors), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ModelError(f"{self.path}: no tensor named {name!r}{hint}") from None

    def read(self, name: str) -> np.ndarray:
        """Read one tensor as a float32 C-contiguous copy; reads only its bytes."""
        return read_tensor(self.info(name))

    @property
    def param_count(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def layer_of(self, name: str) -> int | None:
        """Transformer block index of ``name``; None for embeddings, heads and others."""
        return arch.layer_of(name)

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks present in the tensors."""
        layers = {arch.layer_of(n) for n in self.tensors}
        layers.discard(None)
        return len(layers)

    def summary(self) -> dict[str, Any]:
        """hidden, layers, heads, kv_heads, vocab, tied: from config.json, else the tensors.

        A value nobody can tell (heads without a config) is None.
        """
        cfg = self.config or {}
        embed = next((t for n, t in self.tensors.items()
                      if n.endswith(("embed_tokens.weight", "word_embeddings.weight"))), None)
        heads = cfg.get("num_attention_heads")
        has_head = any(n == "lm_head.weight" or n.endswith(".lm_head.weight")
                       for n in self.tensors)
        tied = cfg.get("tie_word_embeddings")
        if self.architecture == "llama":
            tied = not has_head if tied is None else bool(tied)
        return {
            "hidden": cfg.get("hidden_size", embed.shape[1] if embed and len(embed.shape) == 2
                              else None),
            "layers": cfg.get("num_hidden_layers", self.num_layers),
            "heads": heads,
            "kv_heads": cfg.get("num_key_value_heads", heads),
            "intermediate": cfg.get("intermediate_size"),
            "vocab": cfg.get("vocab_size", embed.shape[0] if embed else None),
            "tied": tied,
        }


def open_checkpoint(path: str | Path, numerics: bool = True) -> Checkpoint:
    """Open a checkpoint from its headers only; never reads weight data.

    ``path`` is a .safetensors file, a ``*.safetensors.index.json`` file, or a folder holding
    model.safetensors.index.json, model.safetensors, or exactly one *.safetensors file.
    Non-weight buffers (``BUFFERS``) go to ``Checkpoint.skipped``, not ``tensors``. With
    ``numerics`` (the default) config.json keys whose numbers taalasc cannot compute are
    refused (``arch.check_numerics``); headers-only commands (inspect, estimate) may pass
    False, the simulator checks again before it computes.
    """
    given = Path(path)
    if not given.exists():
        raise ModelError(f"{given}: no such file or folder")
    target = _resolve_target(given)
    if target.name.endswith(".gguf"):
        from taalasc.model.gguf_io import open_gguf
        return open_gguf(target, given)
    if target.name.endswith(".json"):
        files, tensors = _load_sharded(target)
    else:
        header = read_header(target)
        files, tensors = [target], dict(header.tensors)
    if not tensors:
        raise ModelError(f"{target}: checkpoint holds no tensors")
    skipped = {name: reason for name in sorted(tensors)
               if (reason := buffer_reason(tensors[name])) is not None}
    tensors = {n: t for n, t in tensors.items() if n not in skipped}
    if not tensors:
        raise ModelError(f"{target}: checkpoint holds only buffers "
                         f"({', '.join(sorted(skipped))}), no weights")

    config_path = target.parent / "config.json"
    # exists(), not is_file(): a config.json that is a FIFO or a device is an error, not absent
    config = _load_config(config_path) if config_path.exists() else None

    from_config = arch.architecture_from_config(config)
    from_names = arch.architecture_from_names(tensors)
    if from_config and from_names and from_config != from_names:
        raise ModelError(f"{config_path}: model_type says {from_config} but the tensor names "
                         f"are {from_names} names (e.g. {_example(tensors, from_names)!r})")
    architecture = from_config or from_names or "generic"
    if config is not None:
        shapes = {n: t.shape for n, t in tensors.items()}
        arch.check_config(config, shapes, architecture, str(config_path))
        if numerics:
            arch.check_numerics(config, architecture, str(config_path))

    order = arch.dataflow_order(tensors, architecture)
    return Checkpoint(path=given, files=sorted(files), tensors={n: tensors[n] for n in order},
                      config=config, architecture=architecture, skipped=skipped)


def buffer_reason(info: TensorInfo) -> str | None:
    """Why ``info`` is a non-weight buffer left off the chip, or None for a weight.

    A buffer's name matches a BUFFERS pattern and its dtype is one that pattern allows (a
    float GPT-2 ``attn.bias`` counts in its causal-mask shape [1, 1, n, n]). Any other tensor
    whose dtype cannot be a weight (I32, U32, I64, U64) is a ModelError naming it.
    """
    for pattern, dtypes, reason in BUFFERS:
        if pattern.search(info.name):
            if dtypes is None or info.dtype in dtypes:
                return reason
            if (reason == _CAUSAL_MASK and len(info.shape) == 4 and info.shape[:2] == (1, 1)
                    and info.shape[2] == info.shape[3]):
                return reason
    if info.dtype not in FLOAT32_READABLE and info.dtype in INTEGER_DTYPES:
        raise ModelError(f"{info.file}: tensor {info.name!r} has dtype {info.dtype}; weights "
                         f"must be one of {', '.join(FLOAT32_READABLE)}, and integer tensors "
                         "are accepted only as known buffers (position_ids, token_type_ids, "
                         "attn.bias)")
    return None


def _example(tensors: Iterable[str], architecture: str) -> str:
    pattern = arch.LLAMA_NAME_RE if architecture == "llama" else arch.BERT_NAME_RE
    return next(n for n in sorted(tensors) if pattern.match(n))


def _resolve_target(given: Path) -> Path:
    if given.is_file():
        if not given.name.endswith((".safetensors", ".json", ".gguf")):
            raise ModelError(f"{given}: a checkpoint must be a .safetensors file, a "
                             f"{INDEX_NAME} file, a .gguf file or a folder")
        return given
    if not given.is_dir():
        raise ModelError(f"{given}: not a file or folder")
    if (given / INDEX_NAME).is_file():
        return given / INDEX_NAME
    if (given / SINGLE_NAME).is_file():
        return given / SINGLE_NAME
    found = sorted(p.name for p in given.glob("*.safetensors") if p.is_file())
    if len(found) == 1:
        return given / found[0]
    if not found:
        raise ModelError(f"{given}: folder has no {INDEX_NAME} and no .safetensors file")
    raise ModelError(f"{given}: folder has {len(found)} .safetensors files and no "
                     f"{INDEX_NAME}: {', '.join(found)}")


def _load_config(path: Path) -> dict:
    config = read_json(path, MAX_CONFIG_BYTES, "config.json")
    if not isinstance(config, dict):
        raise ModelError(f"{path}: config.json must be a JSON object, not "
                         f"{type(config).__name__}")
    return config


def _safe_shard_path(index: Path, name: Any) -> Path:
    """The shard file named in an index, refusing anything outside the index's folder.

    Only the written name is checked (absolute, drive, or '..' parts are refused); symlinks
    are followed on purpose, because the Hugging Face cache links snapshots to ../../blobs.
    """
    if not isinstance(name, str) or not name:
        raise ModelError(f"{index}: weight_map file names must be non-empty strings, "
                         f"not {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (posix.is_absolute() or windows.is_absolute() or windows.drive
            or ".." in posix.parts or ".." in windows.parts or "\x00" in name):
        raise ModelError(f"{index}: weight_map file {name!r} must stay inside the index's "
                         "folder")
    return index.parent / posix


def _load_sharded(index: Path) -> tuple[list[Path], dict[str, TensorInfo]]:
    doc = read_json(index, MAX_INDEX_BYTES, "index")
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise ModelError(f"{index}: index must be a JSON object with a 'weight_map' object")
    weight_map: dict[str, Any] = doc["weight_map"]
    if not weight_map:
        raise ModelError(f"{index}: weight_map is empty")

    by_file: dict[str, list[str]] = {}
    for tensor, file in weight_map.items():
        _safe_shard_path(index, file)
        by_file.setdefault(file, []).append(tensor)

    tensors: dict[str, TensorInfo] = {}
    owner: dict[str, str] = {}
    files: list[Path] = []
    for file in sorted(by_file):
        shard = _safe_shard_path(index, file)
        if not shard.is_file():
            raise ModelError(f"{index}: shard file {file!r} is missing "
                             f"(named for tensor {by_file[file][0]!r})")
        header = read_header(shard)
        files.append(shard)
        for name in sorted(by_file[file]):
            if name not in header.tensors:
                raise ModelError(f"{index}: tensor {name!r} is mapped to {file!r} but that "
                                 "shard does not contain it")
        for name, info in header.tensors.items():
            if name in owner:
                raise ModelError(f"{index}: tensor {name!r} is in two shards, "
                                 f"{owner[name]!r} and {file!r}")
            owner[name] = file
            if weight_map.get(name) != file:
                where = (f"mapped to {weight_map[name]!r}" if name in weight_map
                         else "not listed in the weight_map")
                raise ModelError(f"{index}: tensor {name!r} is stored in shard {file!r} but "
                                 f"{where}")
            tensors[name] = info
    return files, tensors
