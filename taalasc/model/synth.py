"""Deterministic synthetic checkpoints: the embedded demo model and every test's model.

The files are written by our own small safetensors writer so that the bytes are fixed: keys
sorted, compact JSON, header padded with spaces to 8 bytes (as the reference writer does),
tensors laid out in name order, metadata exactly {"format": "pt"} (what transformers expects).
Same arguments -> same bytes, on every machine.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from taalasc.errors import ModelError
from taalasc.model.arch import dataflow_order

_WRITE_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
                 "BF16": np.dtype(ml_dtypes.bfloat16)}
_TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_TRANSFORMERS_VERSION = "4.44.0"


def llama_config(hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 intermediate: int = 128, vocab: int = 256, tie_embeddings: bool = False,
                 rope_theta: float = 10000.0, rope_scaling: dict | None = None,
                 max_position: int = 512) -> dict:
    """A valid Hugging Face LlamaConfig dict for a small model."""
    if hidden % heads or heads % kv_heads:
        raise ModelError(f"llama_config: hidden {hidden} must be a multiple of heads {heads} "
                         f"and heads a multiple of kv_heads {kv_heads}")
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": max_position,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": rope_scaling,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tie_embeddings,
        "torch_dtype": "bfloat16",
        "transformers_version": _TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": vocab,
    }


def bert_config(hidden: int = 64, layers: int = 2, heads: int = 4, intermediate: int = 128,
                vocab: int = 256, max_position: int = 128, type_vocab: int = 2) -> dict:
    """A valid Hugging Face BertConfig dict for a small BertModel."""
    if hidden % heads:
        raise ModelError(f"bert_config: hidden {hidden} must be a multiple of heads {heads}")
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": max_position,
        "model_type": "bert",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": _TRANSFORMERS_VERSION,
        "type_vocab_size": type_vocab,
        "use_cache": True,
        "vocab_size": vocab,
    }


def llama_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """HF LlamaForCausalLM tensor names -> shapes for ``config`` (no lm_head when tied)."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (heads * hd, h),
            p + "self_attn.k_proj.weight": (kv * hd, h),
            p + "self_attn.v_proj.weight": (kv * hd, h),
            p + "self_attn.o_proj.weight": (h, heads * hd),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        })
        if config.get("attention_bias"):
            for proj, n in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd),
                            ("o_proj", h)):
                shapes[p + f"self_attn.{proj}.bias"] = (n,)
    shapes["model.norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def bert_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """HF BertModel tensor names -> shapes for ``config`` (biases, LayerNorms, pooler)."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], h),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for mod, out, inp in (("attention.self.query", h, h), ("attention.self.key", h, h),
                              ("attention.self.value", h, h), ("attention.output.dense", h, h),
                              ("intermediate.dense", inter, h), ("output.dense", h, inter)):
            shapes[p + mod + ".weight"] = (out, inp)
            shapes[p + mod + ".bias"] = (out,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"] = (h,)
            shapes[p + norm + ".bias"] = (h,)
    shapes["pooler.dense.weight"] = (h, h)
    shapes["pooler.dense.bias"] = (h,)
    return shapes


def _init(shapes: dict[str, tuple[int, ...]], architecture: str, seed: int
          ) -> dict[str, np.ndarray]:
    """Realistic values: weights N(0, 0.02), norm scales 1 + N(0, 0.02), biases N(0, 0.02).

    Drawn in dataflow order from one seeded generator, so adding a layer at the end does not
    change the earlier tensors.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name in dataflow_order(shapes, architecture):
        noise = rng.standard_normal(shapes[name], dtype=np.float32) * np.float32(0.02)
        is_norm_scale = name.endswith(".weight") and "norm" in name.lower()
        out[name] = noise + np.float32(1.0) if is_norm_scale else noise
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """Write ``tensors`` (float arrays) converted to ``dtype`` as byte-deterministic safetensors."""
    np_dtype = _WRITE_DTYPES[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name].astype(np_dtype)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data area to 8 bytes, like the reference
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def _ternarize(tensors: dict[str, np.ndarray], group: int, dtype: str) -> dict[str, np.ndarray]:
    """Every 2-D tensor as gamma_g * t, t in {-1, 0, +1}, per group of ``group`` inputs: t is
    the TWN rule of the float values (sign where |w| > 0.7 mean|w|), gamma their mean |w|
    rounded to ``dtype`` and fp16 both (for BF16: 8 significant bits in fp16's normal range),
    so the stored file holds gamma * t exactly and a ternary scale is gamma itself."""
    out = dict(tensors)
    for name, w in tensors.items():
        if w.ndim != 2 or w.shape[1] % group:
            continue
        g = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1, group)
        t = np.sign(w.reshape(g.shape)) * (g > 0.7 * g.mean(axis=2, keepdims=True))
        gamma = g.mean(axis=2, keepdims=True).astype(np.float32).astype(_WRITE_DTYPES[dtype])
        gamma = gamma.astype(np.float16).astype(np.float32)   # in both formats: exact
        out[name] = (t * gamma).reshape(w.shape).astype(np.float32)
    return out


def _write(out_dir: str | Path, config: dict, shapes: dict[str, tuple[int, ...]],
           architecture: str, dtype: str, seed: int, shards: int,
           ternary_group: int | None = None) -> Path:
    if dtype not in _WRITE_DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(_WRITE_DTYPES)}, not {dtype!r}")
    if not isinstance(shards, int) or shards < 1 or shards > len(shapes):
        raise ModelError(f"shards must be between 1 and {len(shapes)}, not {shards!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config, torch_dtype=_TORCH_DTYPE[dtype])
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tensors = _init(shapes, architecture, seed)
    if ternary_group is not None:
        tensors = _ternarize(tensors, ternary_group, dtype)
    if shards == 1:
        write_safetensors(out / "model.safetensors", tensors, dtype)
        return out
    # Cut the dataflow-ordered list into `shards` runs of about equal bytes.
    order = dataflow_order(tensors, architecture)
    itemsize = _WRITE_DTYPES[dtype].itemsize
    total = sum(tensors[n].size * itemsize for n in order)
    groups: list[list[str]] = [[] for _ in range(shards)]
    done = 0
    last = 0
    for i, name in enumerate(order):
        want = min(shards - 1, done * shards // total) if total else 0
        g = min(max(want, last), last + 1) if groups[last] else last  # no empty shard
        g = max(g, shards - (len(order) - i))  # leave one name for every later shard
        groups[g].append(name)
        last = g
        done += tensors[name].size * itemsize
    weight_map = {}
    for k, names in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(out / fname, {n: tensors[n] for n in names}, dtype)
        weight_map.update({n: fname for n in names})
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def write_llama(out_dir: str | Path, config: dict, dtype: str = "BF16", seed: int = 0,
                shards: int = 1, ternary_group: int | None = None) -> Path:
    """Write config.json + model.safetensors (or shards + index) for a Llama; returns the folder.
    ``ternary_group``: 2-D weights ternary per group of that many inputs (``_ternarize``)."""
    return _write(out_dir, config, llama_shapes(config), "llama", dtype, seed, shards,
                  ternary_group)


def write_bert(out_dir: str | Path, config: dict, dtype: str = "F32", seed: int = 0,
               shards: int = 1) -> Path:
    """Write config.json + model.safetensors (or shards + index) for a BertModel; returns the folder."""
    return _write(out_dir, config, bert_shapes(config), "bert", dtype, seed, shards)


def write_demo(out_dir: str | Path, ternary: bool = False) -> Path:
    """The embedded demo model: Llama, hidden 64, 2 layers, 4 heads, 2 kv heads,
    intermediate 128, vocab 256, BF16, seed 0; byte-identical every time.

    ``ternary``: a born-ternary demo for ternary bases: every 2-D weight is gamma_g * t,
    t in {-1, 0, +1}, gamma_g an fp16 value per group of the compile's default group size.
    A ternary chip computes ternary models (BitNet b1.58 checkpoints store ternary weights);
    ternarizing a float model after training loses too much to pass verify's quality
    thresholds, so the demo for a ternary base is a ternary model, whose ternary compile is
    exact up to activation quantization."""
    if not ternary:
        return write_llama(out_dir, llama_config(), dtype="BF16", seed=0, shards=1)
    from taalasc.compile import CompileOptions

    return write_llama(out_dir, llama_config(), dtype="BF16", seed=0, shards=1,
                       ternary_group=CompileOptions.group_size)
