"""Model families: recognising them, ordering their tensors by dataflow, checking config.json.

Two families are understood in depth: "llama" (Llama, Mistral, Qwen2: Hugging Face
``LlamaForCausalLM``-style names) and "bert" (BERT, RoBERTa encoders). Everything else is
"generic": still loadable, ordered by a best-effort rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from taalasc.errors import ModelError

LLAMA_MODEL_TYPES = ("llama", "mistral", "qwen2")
BERT_MODEL_TYPES = ("bert", "roberta")
ARCHITECTURES = ("llama", "bert", "generic")

# A transformer block index: "...layers.7." (llama), "...layer.7." (bert), "h.7." / "blocks.7."
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")
LLAMA_NAME_RE = re.compile(r"^(?:model\.)?layers\.\d+\.self_attn\.[qkv]_proj\.weight$")
BERT_NAME_RE = re.compile(r"^(?:(?:bert|roberta)\.)?encoder\.layer\.\d+\.attention\.self\."
                           r"(?:query|key|value)\.weight$")

# Modules inside one block, in the order the computation uses them.
_LAYER_ORDER = {
    "llama": ("input_layernorm", "self_attn.q_proj", "self_attn.q_norm", "self_attn.k_proj",
              "self_attn.k_norm", "self_attn.v_proj", "self_attn.o_proj",
              "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
             "output.dense", "output.LayerNorm"),
}
_EMBED_ORDER = ("embed_tokens", "word_embeddings", "position_embeddings",
                "token_type_embeddings", "embeddings.LayerNorm", "wte", "wpe")
_HEAD_ORDER = ("lm_head", "pooler", "cls", "classifier", "score", "qa_outputs")
_PARAM_ORDER = {"weight": 0, "bias": 1}


def natural_key(text: str) -> tuple:
    """Sort key where digit runs compare as numbers ("layer.10" after "layer.9")."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def layer_of(name: str) -> int | None:
    """Transformer block index of a tensor name, None for embeddings, heads and others."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def architecture_from_config(config: Mapping[str, Any] | None) -> str | None:
    """Family named by config.json (model_type, else architectures), None if unknown."""
    if not config:
        return None
    model_type = config.get("model_type")
    if isinstance(model_type, str):
        if model_type in LLAMA_MODEL_TYPES:
            return "llama"
        if model_type in BERT_MODEL_TYPES:
            return "bert"
    archs = config.get("architectures")
    if isinstance(archs, list):
        for arch in archs:
            if not isinstance(arch, str):
                continue
            low = arch.lower()
            if any(low.startswith(t) for t in LLAMA_MODEL_TYPES):
                return "llama"
            if any(low.startswith(t) for t in BERT_MODEL_TYPES):
                return "bert"
    return None


def architecture_from_names(names: Iterable[str]) -> str | None:
    """Family recognised from tensor names alone, None if neither pattern is present."""
    names = list(names)
    if any(LLAMA_NAME_RE.match(n) for n in names):
        return "llama"
    if any(BERT_NAME_RE.match(n) for n in names):
        return "bert"
    return None


def _split_param(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return (module, param) if module else (name, "")


def _rank(module: str, order: tuple[str, ...]) -> int | None:
    for i, key in enumerate(order):
        if module == key or module.endswith("." + key):
            return i
    return None


def _order_key(name: str, architecture: str) -> tuple:
    module, param = _split_param(name)
    param_rank = _PARAM_ORDER.get(param, 2)
    nat = natural_key(name)
    layer = layer_of(name)
    if layer is not None:
        m = _LAYER_RE.search(name)
        inner = _split_param(name[m.end():])[0]
        rank = _rank(inner, _LAYER_ORDER.get(architecture, ()))
        inner_rank = rank if rank is not None else len(_LAYER_ORDER.get(architecture, ()))
        return (1, layer, inner_rank, param_rank, nat)
    rank = _rank(module, _EMBED_ORDER)
    if rank is not None or "embed" in module:
        return (0, 0, rank if rank is not None else len(_EMBED_ORDER), param_rank, nat)
    parts = module.split(".")
    if len(parts) > 1 and parts[0] in ("model", "bert", "roberta", "transformer"):
        parts = parts[1:]
    head_root = parts[0]
    if head_root in _HEAD_ORDER:
        return (3, 0, _HEAD_ORDER.index(head_root), param_rank, nat)
    if "norm" in module.lower() or parts[-1] == "ln_f":  # model.norm, final_layernorm, ln_f
        return (2, 0, 0, param_rank, nat)
    return (4, 0, 0, 0, nat)


def dataflow_order(names: Iterable[str], architecture: str) -> list[str]:
    """Tensor names in the order the forward pass uses them.

    Embeddings, then block 0..N (inside a block in computation order, weight before bias),
    then the final norm, then heads (lm_head, pooler, classifier); unknown names last,
    naturally sorted. Deterministic for any input order.
    """
    if architecture not in ARCHITECTURES:
        raise ModelError(f"architecture must be one of {', '.join(ARCHITECTURES)}, "
                         f"not {architecture!r}")
    return sorted(set(names), key=lambda n: _order_key(n, architecture))


# --- config.json consistency -------------------------------------------------------------

def _find(shapes: Mapping[str, tuple[int, ...]], suffix: str) -> tuple[str, tuple] | None:
    for name in sorted(shapes):
        if name == suffix or name.endswith("." + suffix):
            return name, shapes[name]
    return None


def _int_key(config: Mapping[str, Any], key: str, source: str) -> int | None:
    if key not in config or config[key] is None:
        return None
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"{source}: {key} must be a positive integer, not {value!r}")
    return value


def check_config(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                 architecture: str, source: str) -> None:
    """Raise ModelError when config.json disagrees with the tensors' shapes or count."""
    get = {k: _int_key(config, k, source) for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "vocab_size", "head_dim", "max_position_embeddings",
        "type_vocab_size")}

    def expect(key: str, suffix: str, axis: int, factor_key: str | None = None) -> None:
        want = get[key]
        found = _find(shapes, suffix)
        if want is None or found is None:
            return
        name, shape = found
        if factor_key is not None:
            factor = get[factor_key] or _head_dim(get)
            if factor is None:
                return
            want = want * factor
        if len(shape) <= axis or shape[axis] != want:
            what = f"{key} {config[key]}" + (f" x {factor_key} {factor}" if factor_key else "")
            raise ModelError(f"{source}: {what} disagrees with tensor {name!r} of shape "
                             f"{list(shape)} (axis {axis} should be {want})")

    hidden, heads = get["hidden_size"], get["num_attention_heads"]
    if hidden and heads and get["head_dim"] is None and hidden % heads:
        raise ModelError(f"{source}: hidden_size {hidden} must be a multiple of "
                         f"num_attention_heads {heads}")
    kv = get["num_key_value_heads"]
    if heads and kv and heads % kv:
        raise ModelError(f"{source}: num_attention_heads {heads} must be a multiple of "
                         f"num_key_value_heads {kv}")

    if architecture == "llama":
        expect("vocab_size", "embed_tokens.weight", 0)
        expect("hidden_size", "embed_tokens.weight", 1)
        expect("hidden_size", "norm.weight", 0)
        expect("intermediate_size", "layers.0.mlp.gate_proj.weight", 0)
        expect("num_attention_heads", "layers.0.self_attn.q_proj.weight", 0, "head_dim")
        expect("num_key_value_heads", "layers.0.self_attn.k_proj.weight", 0, "head_dim")
        expect("vocab_size", "lm_head.weight", 0)
        tied = config.get("tie_word_embeddings", False)
        if tied is False and _find(shapes, "embed_tokens.weight") and "lm_head.weight" \
                not in shapes:
            raise ModelError(f"{source}: tie_word_embeddings is false but the checkpoint has "
                             "no 'lm_head.weight' tensor")
    elif architecture == "bert":
        expect("vocab_size", "embeddings.word_embeddings.weight", 0)
        expect("hidden_size", "embeddings.word_embeddings.weight", 1)
        expect("max_position_embeddings", "embeddings.position_embeddings.weight", 0)
        expect("type_vocab_size", "embeddings.token_type_embeddings.weight", 0)
        expect("intermediate_size", "layer.0.intermediate.dense.weight", 0)

    layers = get["num_hidden_layers"]
    present = sorted({i for i in map(layer_of, shapes) if i is not None})
    if layers is not None and architecture != "generic" and present != list(range(layers)):
        shown = f"{len(present)} (indices {present[0]}..{present[-1]})" if present else "none"
        raise ModelError(f"{source}: num_hidden_layers is {layers} but the checkpoint has "
                         f"layers {shown}")


def _head_dim(get: Mapping[str, int | None]) -> int | None:
    hidden, heads = get["hidden_size"], get["num_attention_heads"]
    if hidden and heads and hidden % heads == 0:
        return hidden // heads
    return None
