"""Read a llama.cpp GGUF file (Llama family) as a taalasc Checkpoint.

``open_gguf(path)`` parses the header with ``gguf.GGUFReader`` (memory-mapped: no weight byte
is read until ``read`` or ``native`` asks for one tensor) and gives a ``GGUFCheckpoint``:

* ``config``: a Hugging Face-style config dict made from the ``llama.*`` metadata keys;
* ``tensors``: Hugging Face names (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj
  .weight``) and shapes in HF order [out, in] (GGUF lists dimensions innermost first);
* ``read(name)``: float32 values (``gguf.quants.dequantize`` for block types) with llama.cpp's
  q/k row permutation undone, so the float reference equals the Hugging Face model;
* ``native(name)``: the file's own codes as a ``QuantizedTensor`` for Q8_0, Q4_0 and Q4_1
  blocks (None for every other type);
* ``tokenizer()``: the tokenizer embedded in the file, as a ``tokenizers.Tokenizer``.

The permutation. llama.cpp's ``convert_hf_to_gguf.py`` reorders the rows of q_proj and k_proj
(weights and biases) so that each head's two rotary halves are interleaved:
``w.reshape(n_head, 2, head_dim // 2, ...).swapaxes(1, 2).reshape(w.shape)`` with n_head the
number of query heads for q and of key/value heads for k. We apply the inverse,
``w.reshape(n_head, head_dim // 2, 2, ...).swapaxes(1, 2)``, to values, codes, scales and mins.
Rows move as a whole, so the groups of 32 inputs of a block stay intact.

Block layouts (32 weights per block, little-endian, ``d`` and ``m`` IEEE fp16):
  Q8_0  d, 32 x int8 q                     w = d * q          code = q,      scale = d
  Q4_0  d, 16 bytes of nibbles             w = d * (q - 8)    code = q - 8,  scale = d
  Q4_1  d, m, 16 bytes of nibbles          w = d * q + m      code = q - 8,  scale = d, min = m
The low nibbles of the 16 bytes are elements 0..15, the high nibbles elements 16..31.

Bad input (truncated file, a tensor that lies beyond the end of the file, wrong magic, an
architecture we do not simulate, a tensor type nobody can dequantize) is one ModelError line
that names the file. Whatever the gguf package raises on garbage is converted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taalasc.errors import ModelError
from taalasc.model import arch
from taalasc.model.checkpoint import Checkpoint
from taalasc.model.safetensors_io import TensorInfo

__all__ = ["GGUFCheckpoint", "GGUFTensorInfo", "NATIVE_TYPES", "SUPPORTED_ARCHITECTURES",
           "open_gguf", "permute_rows", "unpermute_rows"]

SUPPORTED_ARCHITECTURES = ("llama",)
NATIVE_TYPES = ("Q8_0", "Q4_0", "Q4_1")   # block types whose codes map onto the chip exactly
BLOCK_WEIGHTS = 32                         # weights per Q8_0 / Q4_0 / Q4_1 block
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
_INTEGER_TYPES = ("I8", "I16", "I32", "I64")

# GGUF block-layer part -> Hugging Face module inside model.layers.N
_LAYER_PARTS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_PARTS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")

# tokenizer.ggml.pre -> how the text is split before byte-level BPE
_DIGITS_THEN_BYTES = ("smollm", "starcoder", "refact")
_GPT2_PRE = ("default", "gpt-2", "gpt2")
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4   # tokenizer.ggml.token_type values


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py ``LlamaModel.permute``)."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``permute_rows``: back to Hugging Face's row order."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


@dataclass(frozen=True)
class GGUFTensorInfo(TensorInfo):
    """A TensorInfo whose ``dtype`` is the GGML type name ("F32", "Q4_1", "Q6_K", ...)."""

    gguf_name: str = ""
    permute_heads: int = 0   # >0: rows carry llama.cpp's q/k permutation over this many heads
    index: int = -1          # position in the reader's tensor list


class GGUFCheckpoint(Checkpoint):
    """A Checkpoint over one GGUF file; see the module docstring."""

    def __init__(self, path: Path, file: Path, reader: Any, tensors: dict[str, GGUFTensorInfo],
                 config: dict, metadata: dict[str, Any]):
        super().__init__(path=path, files=[file], tensors=tensors, config=config,
                         architecture="llama")
        self.metadata = metadata      # the scalar metadata keys (arrays left out)
        self._reader = reader
        self._file = file
        self._tokenizer = None

    def __getstate__(self) -> dict:
        # Worker processes get the headers only; the memory map is reopened there on demand
        # (pickling it would copy the whole file).
        return {**self.__dict__, "_reader": None, "_tokenizer": None}

    def _open(self) -> Any:
        if self._reader is None:
            self._reader = _open_reader(self._file)
        return self._reader

    def __repr__(self) -> str:
        return (f"GGUFCheckpoint({str(self.path)!r}, tensors={len(self.tensors)}, "
                f"params={self.param_count})")

    @property
    def block_types(self) -> dict[str, int]:
        """GGML type name -> number of tensors stored in it, sorted by name."""
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.dtype] = counts.get(t.dtype, 0) + 1
        return dict(sorted(counts.items()))

    def _raw(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's stored bytes (uint8), read by the offset found at open: a worker
        process reads its tensors without parsing the header again (5 s for SmolLM2's
        98k-string vocabulary)."""
        try:
            raw = np.fromfile(self._file, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{self._file}: cannot read tensor {info.gguf_name!r}: "
                             f"{exc}") from None
        if raw.size != info.nbytes:
            raise ModelError(f"{self._file}: tensor {info.gguf_name!r} needs {info.nbytes} "
                             f"bytes at offset {info.offset}; the file ends before "
                             "(truncated since it was opened?)")
        return raw

    def read(self, name: str) -> np.ndarray:
        """float32 values in Hugging Face layout; reads only this tensor's bytes."""
        import gguf

        info = self.info(name)
        if info.dtype in _INTEGER_TYPES:
            raise ModelError(f"{self._file}: tensor {info.gguf_name!r} has integer type "
                             f"{info.dtype}; weights must be float or quantized blocks")
        raw = self._raw(info)
        if info.dtype == "F64":
            values = raw.view(np.float64).astype(np.float32)
        else:
            try:
                with np.errstate(all="ignore"):   # a garbage block may hold inf or NaN
                    values = gguf.quants.dequantize(raw,
                                                    gguf.GGMLQuantizationType[info.dtype])
            except NotImplementedError:
                raise ModelError(f"{self._file}: tensor {info.gguf_name!r} has block type "
                                 f"{info.dtype}, which the gguf package cannot dequantize; "
                                 "re-quantize the model to Q8_0, Q4_0, Q4_1, F16 or F32"
                                 ) from None
        values = np.asarray(values, dtype=np.float32).reshape(info.shape)
        if info.permute_heads:
            values = unpermute_rows(values, info.permute_heads)
        return np.ascontiguousarray(values)

    def native_spec(self, name: str):
        """The QuantSpec of the file's own codes of ``name`` (headers only), else None."""
        info = self.info(name)
        if info.dtype not in NATIVE_TYPES or len(info.shape) != 2:
            return None
        from taalasc.quant.quantize import QuantSpec

        return QuantSpec(8 if info.dtype == "Q8_0" else 4, BLOCK_WEIGHTS,
                         asymmetric=info.dtype == "Q4_1")

    def native(self, name: str):
        """The file's own codes as a QuantizedTensor (Q8_0, Q4_0, Q4_1), else None."""
        info = self.info(name)
        if info.dtype not in NATIVE_TYPES or len(info.shape) != 2:
            return None
        from taalasc.quant.quantize import QuantizedTensor

        out, inp = info.shape
        blocks = self._raw(info).reshape(out, inp // BLOCK_WEIGHTS, -1)
        codes, scales, mins = _decode_blocks(blocks, info.dtype)
        codes = codes.reshape(out, inp)
        if info.permute_heads:
            codes = unpermute_rows(codes, info.permute_heads)
            scales = unpermute_rows(scales, info.permute_heads)
            mins = None if mins is None else unpermute_rows(mins, info.permute_heads)
        extra = {} if mins is None else {"mins": np.ascontiguousarray(mins)}
        bits = 8 if info.dtype == "Q8_0" else 4
        return QuantizedTensor(name=name, shape=(out, inp), bits=bits, group_size=BLOCK_WEIGHTS,
                               codes=np.ascontiguousarray(codes),
                               scales=np.ascontiguousarray(scales),
                               sqnr_db=float("inf"), **extra)

    @property
    def bos_token_id(self) -> int | None:
        return self.config.get("bos_token_id")

    @property
    def eos_token_id(self) -> int | None:
        return self.config.get("eos_token_id")

    def tokenizer(self):
        """The tokenizer stored in the file, as a ``tokenizers.Tokenizer`` (built once)."""
        if self._tokenizer is None:
            self._tokenizer = _build_tokenizer(self._open(), self._file)
        return self._tokenizer


def _decode_blocks(blocks: np.ndarray, kind: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """int8 codes [out, groups, 32], fp16 scales and mins [out, groups] of raw block bytes."""
    d = np.ascontiguousarray(blocks[..., 0:2]).view("<f2")[..., 0].astype(np.float16)
    if kind == "Q8_0":
        return np.ascontiguousarray(blocks[..., 2:]).view(np.int8), d, None
    start = 4 if kind == "Q4_1" else 2
    packed = blocks[..., start:start + BLOCK_WEIGHTS // 2]
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)   # elements 0..15, 16..31
    codes = nibbles.astype(np.int8) - np.int8(8)
    if kind == "Q4_0":
        return codes, d, None
    m = np.ascontiguousarray(blocks[..., 2:4]).view("<f2")[..., 0].astype(np.float16)
    return codes, d, m


# --------------------------------------------------------------------------- opening


def _reader_class():
    """gguf.GGUFReader with two checks added, so garbage gives a clear message.

    Built on the reader's private ``_get`` and ``_build_tensors`` (gguf 0.10-0.19); if a future
    version changes them the checks are skipped and the generic conversion still applies.
    """
    import gguf

    class _Truncated(Exception):
        def __init__(self, end: int, size: int):
            self.end, self.size = end, size

    class StrictReader(gguf.GGUFReader):
        Truncated = _Truncated

        def _get(self, offset, dtype, count=1, override_order=None):
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > self.data.size:
                raise _Truncated(end, int(self.data.size))
            return super()._get(offset, dtype, count, override_order)

        # Counts are checked against the bytes left before any loop runs, so a garbage count
        # is an error at once rather than millions of tiny reads.
        def _build_fields(self, offs, count):
            _need(offs, int(count), _MIN_KV_BYTES, int(self.data.size))
            return super()._build_fields(offs, count)

        def _build_tensor_info(self, offs, count):
            _need(offs, int(count), _MIN_TENSOR_INFO_BYTES, int(self.data.size))
            return super()._build_tensor_info(offs, count)

        def _get_field_parts(self, orig_offs, raw_type):
            if raw_type == gguf.GGUFValueType.ARRAY:
                item_type, length = int(self._get(orig_offs, np.uint32)[0]), \
                    int(self._get(orig_offs + 4, np.uint64)[0])
                _need(orig_offs + 12, length, _min_item_bytes(item_type), int(self.data.size))
            return super()._get_field_parts(orig_offs, raw_type)

        def _build_tensors(self, start_offs, fields):
            size = int(self.data.size)
            for field in fields:
                _check_tensor_field(field, int(start_offs), size)
            return super()._build_tensors(start_offs, fields)

    def _need(offset: int, count: int, each: int, size: int) -> None:
        end = int(offset) + count * each
        if end > size:
            raise _Truncated(end, size)

    return StrictReader


_MIN_KV_BYTES = 8 + 4 + 1            # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


def _min_item_bytes(item_type: int) -> int:
    """Fewest bytes one array element of GGUF value type ``item_type`` can take."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8}
    return sizes.get(item_type, 1)


def _check_tensor_field(field: Any, start: int, size: int) -> None:
    import gguf

    _len, name_data, _ndims, dims, raw_type, offset = field.parts
    name = bytes(name_data).decode("utf-8", errors="replace")
    try:
        qtype = gguf.GGMLQuantizationType(int(raw_type[0]))
    except ValueError:
        raise ModelError(f"tensor {name!r} has unknown GGML type id {int(raw_type[0])}") from None
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    ne = [int(x) for x in dims]
    n_elements = 1
    for x in ne:
        n_elements *= x
    if ne and ne[0] % block:
        raise ModelError(f"tensor {name!r}: first dimension {ne[0]} must be a multiple of the "
                         f"{qtype.name} block size {block}")
    n_bytes = n_elements // block * type_size
    begin = start + int(offset[0])
    if begin + n_bytes > size:
        raise ModelError(f"tensor {name!r} ({qtype.name}, {n_bytes} bytes at offset {begin}) "
                         f"lies beyond the end of the file ({size} bytes): the file is "
                         "truncated or its tensor offsets are wrong")


def _open_reader(path: Path):
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (it must start with the bytes 'GGUF', not "
                         f"{magic!r})")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelError(f"{path}: reading GGUF files needs the 'gguf' package "
                         "(pip install gguf)") from None
    reader_cls = _reader_class()
    try:
        return reader_cls(str(path), "r")
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except reader_cls.Truncated as exc:
        raise ModelError(f"{path}: the file is truncated: its header needs at least {exc.end} "
                         f"bytes but the file has {size}") from None
    except Exception as exc:  # the gguf package raises anything on garbage  # noqa: BLE001
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: not a readable GGUF file: {reason}") from None


def _metadata(reader: Any, path: Path) -> dict[str, Any]:
    """Every scalar or string metadata value (arrays are read on demand)."""
    import gguf

    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        try:
            meta[key] = field.contents()
        except (UnicodeDecodeError, ValueError, IndexError) as exc:
            raise ModelError(f"{path}: metadata key {key!r} cannot be read: {exc}") from None
    return meta


def _int(meta: dict, key: str, path: Path, default: int | None = None) -> int | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"{path}: metadata {key} must be a positive integer, not {value!r}")
    return value


def _float(meta: dict, key: str, path: Path, default: float | None = None) -> float | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelError(f"{path}: metadata {key} must be a positive number, not {value!r}")
    return float(value)


def _hf_name(gguf_name: str, path: Path) -> str:
    m = _BLOCK_RE.match(gguf_name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"model.layers.{int(m.group(1))}.{_LAYER_PARTS[m.group(2)]}.{m.group(3)}"
    m = _GLOBAL_RE.match(gguf_name)
    if m and m.group(1) in _GLOBAL_PARTS:
        return f"{_GLOBAL_PARTS[m.group(1)]}.{m.group(2)}"
    if gguf_name == "rope_freqs.weight":
        raise ModelError(f"{path}: tensor 'rope_freqs.weight' (Llama 3.1-style RoPE frequency "
                         "factors) is not supported; taalasc simulates RoPE from metadata only")
    known = ", ".join([f"blk.N.{p}" for p in _LAYER_PARTS] + list(_GLOBAL_PARTS))
    raise ModelError(f"{path}: tensor {gguf_name!r} is not a Llama tensor taalasc knows "
                     f"(known: {known}; each .weight or .bias)")


def _config(meta: dict, names: dict[str, str], path: Path, vocab_tokens: int | None,
            embed_rows: int | None) -> dict:
    """A Hugging Face LlamaConfig-style dict from the llama.* metadata keys."""
    hidden = _int(meta, "llama.embedding_length", path)
    layers = _int(meta, "llama.block_count", path)
    heads = _int(meta, "llama.attention.head_count", path)
    for key, value in (("llama.embedding_length", hidden), ("llama.block_count", layers),
                       ("llama.attention.head_count", heads)):
        if value is None:
            raise ModelError(f"{path}: metadata key {key} is missing (or not a single number)")
    if _int(meta, "llama.expert_count", path, None):
        raise ModelError(f"{path}: llama.expert_count is {meta['llama.expert_count']}: "
                         "mixture-of-experts models are not supported")
    kv_heads = _int(meta, "llama.attention.head_count_kv", path, heads)
    head_dim = _int(meta, "llama.attention.key_length", path, None)
    value_dim = _int(meta, "llama.attention.value_length", path, head_dim)
    if head_dim is not None and value_dim != head_dim:
        raise ModelError(f"{path}: llama.attention.value_length {value_dim} must equal "
                         f"llama.attention.key_length {head_dim}")
    actual_head_dim = head_dim or hidden // heads
    rope_dims = _int(meta, "llama.rope.dimension_count", path, actual_head_dim)
    if rope_dims != actual_head_dim:
        raise ModelError(f"{path}: llama.rope.dimension_count {rope_dims} must equal the head "
                         f"dimension {actual_head_dim} (partial rotary is not supported)")
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": _int(meta, "llama.feed_forward_length", path, None),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": _float(meta, "llama.attention.layer_norm_rms_epsilon", path, 1e-5),
        "rope_theta": _float(meta, "llama.rope.freq_base", path, 10000.0),
        "max_position_embeddings": _int(meta, "llama.context_length", path, None),
        "vocab_size": _int(meta, "llama.vocab_size", path, vocab_tokens or embed_rows),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "mlp_bias": "blk.0.ffn_up.bias" in names,
    }
    if head_dim is not None:
        config["head_dim"] = head_dim
    scaling = _rope_scaling(meta, path)
    if scaling is not None:
        config["rope_scaling"] = scaling
    for key in ("bos_token_id", "eos_token_id"):
        value = meta.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int) and not isinstance(value, bool):
            config[key] = value
    return config


def _rope_scaling(meta: dict, path: Path) -> dict | None:
    kind = meta.get("llama.rope.scaling.type")
    legacy = meta.get("llama.rope.scale_linear")
    if kind is None and legacy is not None:
        kind, factor = "linear", _float(meta, "llama.rope.scale_linear", path)
    else:
        factor = _float(meta, "llama.rope.scaling.factor", path, None)
    if kind is None or kind == "none" or (kind == "linear" and factor == 1.0):
        return None
    if kind == "linear":
        if factor is None:
            raise ModelError(f"{path}: llama.rope.scaling.type is 'linear' but "
                             "llama.rope.scaling.factor is missing")
        return {"rope_type": "linear", "factor": factor}
    raise ModelError(f"{path}: llama.rope.scaling.type must be one of none, linear, "
                     f"not {kind!r}")


def open_gguf(path: str | Path, given: str | Path | None = None) -> GGUFCheckpoint:
    """Open a GGUF file from its header only (the tensors stay memory-mapped, unread).

    ``given`` is what the user typed, kept as ``Checkpoint.path`` (default: ``path``).
    """
    path = Path(path)
    reader = _open_reader(path)
    if reader.byte_order != "I":
        raise ModelError(f"{path}: big-endian GGUF files are not supported (convert it with "
                         "llama.cpp's gguf_convert_endian.py)")
    meta = _metadata(reader, path)
    architecture = meta.get("general.architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ModelError(f"{path}: GGUF architecture must be one of "
                         f"{', '.join(SUPPORTED_ARCHITECTURES)} (Llama family: Llama, SmolLM, "
                         f"Mistral-style files), not {architecture!r}")
    if not reader.tensors:
        raise ModelError(f"{path}: GGUF file holds no tensors")

    gguf_names = {t.name: i for i, t in enumerate(reader.tensors)}
    names = {g: _hf_name(g, path) for g in gguf_names}
    embed = reader.tensors[gguf_names["token_embd.weight"]] if "token_embd.weight" in \
        gguf_names else None
    token_field = reader.fields.get("tokenizer.ggml.tokens")
    vocab_tokens = len(token_field.data) if token_field is not None else None
    config = _config(meta, names, path, vocab_tokens,
                     int(embed.shape[-1]) if embed is not None else None)

    shapes = {names[g]: tuple(int(x) for x in reversed(reader.tensors[i].shape.tolist()))
              for g, i in gguf_names.items()}
    arch.check_config(config, shapes, "llama", f"{path} (GGUF metadata)")

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    infos: dict[str, GGUFTensorInfo] = {}
    for gname, index in gguf_names.items():
        t = reader.tensors[index]
        hf = names[gname]
        shape = shapes[hf]
        part = gname.split(".")[2] if gname.startswith("blk.") else ""
        permute = {"attn_q": heads, "attn_k": kv_heads}.get(part, 0)
        if permute and shape[0] % (2 * permute):
            raise ModelError(f"{path}: tensor {gname!r} has {shape[0]} rows, which is not a "
                             f"multiple of 2 x {permute} heads")
        infos[hf] = GGUFTensorInfo(name=hf, dtype=t.tensor_type.name, shape=shape,
                                   file=str(path), offset=int(t.data_offset),
                                   nbytes=int(t.n_bytes), gguf_name=gname,
                                   permute_heads=permute, index=index)
    order = arch.dataflow_order(infos, "llama")
    return GGUFCheckpoint(path=Path(given) if given is not None else path, file=path,
                          reader=reader, tensors={n: infos[n] for n in order}, config=config,
                          metadata=meta)


# --------------------------------------------------------------------------- tokenizer


def _array(reader: Any, key: str, path: Path) -> list | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: metadata key {key!r} cannot be read: {exc}") from None


def _build_tokenizer(reader: Any, path: Path):
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
        from tokenizers import processors
    except ImportError:
        raise ModelError(f"{path}: the embedded tokenizer needs the 'tokenizers' package "
                         "(pip install tokenizers)") from None
    meta = _metadata(reader, path)
    kind = meta.get("tokenizer.ggml.model")
    tokens = _array(reader, "tokenizer.ggml.tokens", path)
    if kind is None or tokens is None:
        raise ModelError(f"{path}: the file holds no tokenizer (tokenizer.ggml.model and "
                         "tokenizer.ggml.tokens are required)")
    types = _array(reader, "tokenizer.ggml.token_type", path) or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ModelError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries but "
                         f"tokenizer.ggml.tokens has {len(tokens)}")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)

    if kind == "gpt2":
        pre = meta.get("tokenizer.ggml.pre", "default")
        merges_text = _array(reader, "tokenizer.ggml.merges", path) or []
        merges = []
        for m in merges_text:
            left, sep, right = m.partition(" ")
            if not sep:
                raise ModelError(f"{path}: tokenizer.ggml.merges entry {m!r} must be two "
                                 "tokens separated by one space")
            merges.append((left, right))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        ignore_merges = False
        if pre in _GPT2_PRE:
            pre_tok = byte_level
        elif pre in _DIGITS_THEN_BYTES:
            pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               byte_level])
        elif pre in _LLAMA3_PRE:
            pre_tok = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            ignore_merges = True
        else:
            known = ", ".join(_GPT2_PRE + _DIGITS_THEN_BYTES + _LLAMA3_PRE)
            raise ModelError(f"{path}: tokenizer.ggml.pre must be one of {known}, not {pre!r}")
        try:
            model = models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises its own types
            raise ModelError(f"{path}: the BPE tokenizer cannot be built: {exc}") from None
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tok
        tok.decoder = decoders.ByteLevel()
        add_bos_default = False
    elif kind == "llama":
        tok = _sentencepiece_tokenizer(reader, path, tokens, vocab, meta)
        add_bos_default = True
    else:
        raise ModelError(f"{path}: tokenizer.ggml.model must be one of gpt2, llama, "
                         f"not {kind!r}")

    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types) if ty == _TOKEN_CONTROL]
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types) if ty == _TOKEN_USER_DEFINED]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token", add_bos_default) and isinstance(bos, int) \
            and 0 <= bos < len(tokens):
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B",
            special_tokens=[(tokens[bos], bos)])
    return tok


def _sentencepiece_tokenizer(reader: Any, path: Path, tokens: list[str], vocab: dict[str, int],
                             meta: dict):
    """A SentencePiece-BPE tokenizer (tokenizer.ggml.model "llama"), as transformers'
    LlamaConverter builds it: merges from the pieces ordered by score, byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = _array(reader, "tokenizer.ggml.scores", path)
    if scores is None or len(scores) != len(tokens):
        raise ModelError(f"{path}: a 'llama' tokenizer needs tokenizer.ggml.scores with one "
                         "score per token")
    # SentencePieceExtractor: every split of a piece into two known pieces is a merge, ranked
    # by the merged piece's score (higher first), then by the two parts' ids.
    merges = []
    for piece, pid in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((-float(scores[pid]), pid, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: m[:4])
    unk = meta.get("tokenizer.ggml.unknown_token_id", 0)
    unk_token = tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None
    try:
        model = models.BPE(vocab=vocab, merges=[(m[4], m[5]) for m in merges],
                           unk_token=unk_token, fuse_unk=True, byte_fallback=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path}: the SentencePiece tokenizer cannot be built: {exc}") from None
    tok = Tokenizer(model)
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    steps = ([normalizers.Prepend("\u2581")] if prefix else []) + \
        [normalizers.Replace(" ", "\u2581")]
    tok.normalizer = normalizers.Sequence(steps)
    steps_dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps_dec.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps_dec)
    return tok
