"""Published model configurations, and the tensor names and shapes they imply.

``taalasc estimate --preset NAME`` needs no checkpoint: the Hugging Face ``config.json`` of a
published model fixes every weight shape. The dicts below copy the published config.json
values (huggingface.co/<repo>/blob/main/config.json); ``tensor_shapes`` rebuilds the
checkpoint's tensor names and shapes, and its parameter count reproduces the published count
exactly (see PUBLISHED_PARAMS, checked by tests/test_report_presets.py).
"""

from __future__ import annotations

import copy
import difflib

from taalasc.errors import ModelError
from taalasc.model import arch

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int, repo: str, **extra) -> dict:
    config = {
        "_name_or_path": repo, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": 128256,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": dict(_LLAMA3_ROPE), "max_position_embeddings": 131072,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16",
    }
    config.update(extra)
    return config


PRESETS: dict[str, dict] = {
    "llama-3.1-8b": _llama(4096, 14336, 32, 32, 8, "meta-llama/Llama-3.1-8B"),
    "llama-3.1-70b": _llama(8192, 28672, 80, 64, 8, "meta-llama/Llama-3.1-70B"),
    "llama-3.1-405b": _llama(16384, 53248, 126, 128, 8, "meta-llama/Llama-3.1-405B"),
    "llama-3.2-1b": _llama(2048, 8192, 16, 32, 8, "meta-llama/Llama-3.2-1B", head_dim=64,
                           tie_word_embeddings=True,
                           rope_scaling={**_LLAMA3_ROPE, "factor": 32.0}),
    "qwen2.5-7b": {
        "_name_or_path": "Qwen/Qwen2.5-7B", "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 131072,
        "sliding_window": 131072, "use_sliding_window": False, "max_window_layers": 28,
        "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    },
    "mistral-7b-v0.1": {
        "_name_or_path": "mistralai/Mistral-7B-v0.1", "architectures": ["MistralForCausalLM"],
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 32768, "sliding_window": 4096,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    },
    "mistral-7b-v0.3": {
        "_name_or_path": "mistralai/Mistral-7B-v0.3", "architectures": ["MistralForCausalLM"],
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32768, "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
        "max_position_embeddings": 32768, "sliding_window": None,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    },
    "bert-base-uncased": {
        "_name_or_path": "google-bert/bert-base-uncased", "architectures": ["BertForMaskedLM"],
        "model_type": "bert", "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 30522,
        "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    },
}
# openai/gpt-oss-120b (config.json as published; a mixture of experts: 128 experts, 4 per
# token). The model HNLPU (arXiv 2508.16151) hardwires on 16 chips.
PRESETS["gpt-oss-120b"] = {
    "_name_or_path": "openai/gpt-oss-120b", "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
    "num_hidden_layers": 36, "num_attention_heads": 64, "num_key_value_heads": 8,
    "head_dim": 64, "vocab_size": 201088, "num_local_experts": 128,
    "num_experts_per_tok": 4, "experts_per_token": 4, "attention_bias": True,
    "hidden_act": "silu", "swiglu_limit": 7.0, "rms_norm_eps": 1e-5, "rope_theta": 150000,
    "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "original_max_position_embeddings": 4096, "truncate": False},
    "max_position_embeddings": 131072, "initial_context_length": 4096, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 18,
    "tie_word_embeddings": False, "eos_token_id": 200002, "pad_token_id": 199999,
    "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "mxfp4"},
}
PRESETS["mistral-7b"] = PRESETS["mistral-7b-v0.1"]

# Published parameter counts (model cards / safetensors metadata on the Hub).
PUBLISHED_PARAMS: dict[str, int] = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "llama-3.2-1b": 1_235_814_400,
    "qwen2.5-7b": 7_615_616_512,
    "mistral-7b-v0.1": 7_241_732_096,
    "bert-base-uncased": 109_482_240,  # BertModel incl. pooler, without the MLM head
    # OpenAI's gpt-oss model card: 116.83 B total, 5.13 B active per token (the active count
    # leaves out the embedding table, a lookup); tests/test_report_presets.py checks both.
    "gpt-oss-120b": 116_829_156_672,
}
PUBLISHED_ACTIVE_PARAMS: dict[str, float] = {"gpt-oss-120b": 5.13e9}

# Config keys that make a model a mixture of experts, and the keys that give its counts
# (Hugging Face spells them differently per family; the first one present wins).
MOE_EXPERT_KEYS = ("num_local_experts", "num_experts")
MOE_ACTIVE_KEYS = ("num_experts_per_tok", "experts_per_token")
MOE_MODEL_TYPES = ("gpt_oss",)
MAX_EXPERT_BLOCKS = 1 << 20   # layers × experts: each expert is a few tensors per layer


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_config(name: str) -> dict:
    """A copy of a preset's config.json dict. Names are case-insensitive."""
    key = name.lower()
    if key not in PRESETS:
        hint = difflib.get_close_matches(key, PRESETS, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ModelError(f"--preset: unknown model {name!r}{extra}; "
                         f"known: {', '.join(preset_names())}")
    return copy.deepcopy(PRESETS[key])


def _need(config: dict, key: str, source: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelError(f"{source}: {key} must be a positive integer, not {value!r}")
    return value


def tensor_shapes(config: dict, source: str = "config.json") -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for a Llama-family (llama, mistral, qwen2) or BERT config.

    The sizes are checked against ``arch.DIMENSION_LIMITS`` and the parameter count against
    ``arch.MAX_PARAMS`` (from one block, before the blocks are listed), so a config that
    claims 10**9 layers costs nothing.
    """
    kind = config.get("model_type")
    experts = moe_counts(config, source)
    if experts and kind not in MOE_MODEL_TYPES:
        raise ModelError(f"{source}: {MOE_EXPERT_KEYS[0]} is set but model_type {kind!r} is a "
                         f"dense family; the mixture-of-experts families are "
                         f"{', '.join(MOE_MODEL_TYPES)}")
    if kind in MOE_MODEL_TYPES:
        before, block, after = _gpt_oss_shapes(config, experts, source)
    elif kind in ("llama", "mistral", "qwen2"):
        qkv_bias = kind == "qwen2" or bool(config.get("attention_bias"))
        before, block, after = _llama_shapes(config, qkv_bias, source)
    elif kind == "bert":
        before, block, after = _bert_shapes(config, source)
    else:
        raise ModelError(f"{source}: model_type must be one of llama, mistral, qwen2, bert, "
                         f"{', '.join(MOE_MODEL_TYPES)}, not {kind!r}")
    arch.check_dimensions(config, source)
    layers = _need(config, "num_hidden_layers", source)
    params = param_count(before) + layers * param_count(block(0)) + param_count(after)
    if params > arch.MAX_PARAMS:
        raise ModelError(f"{source}: the config describes {params:,} parameters; at most "
                         f"{arch.MAX_PARAMS:,} (several times the largest published model) "
                         "are estimated")
    shapes = dict(before)
    for i in range(layers):
        shapes.update(block(i))
    shapes.update(after)
    return shapes


def moe_counts(config: dict, source: str) -> tuple[int, int] | None:
    """(experts, experts per token) of a mixture-of-experts config, None for a dense one.

    A config is a mixture of experts when its model_type is one (MOE_MODEL_TYPES) or it sets
    an expert count; then both counts must be positive integers, experts per token at most
    the experts: one ModelError naming what is missing."""
    given = {k: config[k] for k in MOE_EXPERT_KEYS + MOE_ACTIVE_KEYS if k in config}
    if not given and config.get("model_type") not in MOE_MODEL_TYPES:
        return None
    counts = []
    for keys in (MOE_EXPERT_KEYS, MOE_ACTIVE_KEYS):
        value = next((config[k] for k in keys if k in config), None)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            what = "missing" if value is None else f"{value!r}, not a positive integer"
            raise ModelError(f"{source}: a mixture-of-experts config needs {keys[0]} (the "
                             f"expert count: {' or '.join(keys)}); it is {what}")
        counts.append(value)
    experts, active = counts
    if active > experts:
        raise ModelError(f"{source}: {MOE_ACTIVE_KEYS[0]} ({active}) is more than "
                         f"{MOE_EXPERT_KEYS[0]} ({experts})")
    return experts, active


def _gpt_oss_shapes(config: dict, counts: tuple[int, int], source: str):
    """gpt-oss: Llama-like attention with biases and per-head sinks; the MLP is a router and
    ``experts`` SwiGLU experts. The checkpoint fuses each layer's experts into 3-D tensors
    ([experts, hidden, 2·intermediate]); they are listed here per expert as 2-D matrices
    (mlp.experts.E.gate_up_proj.weight [2·intermediate, hidden], .down_proj.weight [hidden,
    intermediate], with biases), the same parameters in the layout a weight tile stores."""
    experts = counts[0]
    hidden, inter = _need(config, "hidden_size", source), _need(config, "intermediate_size", source)
    heads = _need(config, "num_attention_heads", source)
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    vocab = _need(config, "vocab_size", source)
    layers = _need(config, "num_hidden_layers", source)
    if layers * experts > MAX_EXPERT_BLOCKS:
        raise ModelError(f"{source}: {layers:,} layers × {experts:,} experts is more than "
                         f"{MAX_EXPERT_BLOCKS:,} expert blocks")
    q_out, kv_out = heads * head_dim, kv_heads * head_dim

    def block(i: int) -> dict[str, tuple[int, ...]]:
        p = f"model.layers.{i}."
        shapes: dict[str, tuple[int, ...]] = {p + "input_layernorm.weight": (hidden,)}
        for name, out, fan_in in (("q_proj", q_out, hidden), ("k_proj", kv_out, hidden),
                                  ("v_proj", kv_out, hidden), ("o_proj", hidden, q_out)):
            shapes[p + f"self_attn.{name}.weight"] = (out, fan_in)
            shapes[p + f"self_attn.{name}.bias"] = (out,)
        shapes[p + "self_attn.sinks"] = (heads,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "mlp.router.weight"] = (experts, hidden)
        shapes[p + "mlp.router.bias"] = (experts,)
        for e in range(experts):
            x = f"{p}mlp.experts.{e}."
            shapes[x + "gate_up_proj.weight"] = (2 * inter, hidden)
            shapes[x + "gate_up_proj.bias"] = (2 * inter,)
            shapes[x + "down_proj.weight"] = (hidden, inter)
            shapes[x + "down_proj.bias"] = (hidden,)
        return shapes

    after = {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    return {"model.embed_tokens.weight": (vocab, hidden)}, block, after


def _llama_shapes(config: dict, qkv_bias: bool, source: str):
    """(shapes before the blocks, block index -> that block's shapes, shapes after them)."""
    hidden, inter = _need(config, "hidden_size", source), _need(config, "intermediate_size", source)
    heads = _need(config, "num_attention_heads", source)
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    vocab = _need(config, "vocab_size", source)
    q_out, kv_out = heads * head_dim, kv_heads * head_dim

    def block(i: int) -> dict[str, tuple[int, ...]]:
        p = f"model.layers.{i}."
        shapes = {p + "input_layernorm.weight": (hidden,),
                  p + "self_attn.q_proj.weight": (q_out, hidden),
                  p + "self_attn.k_proj.weight": (kv_out, hidden),
                  p + "self_attn.v_proj.weight": (kv_out, hidden)}
        if qkv_bias:
            shapes[p + "self_attn.q_proj.bias"] = (q_out,)
            shapes[p + "self_attn.k_proj.bias"] = (kv_out,)
            shapes[p + "self_attn.v_proj.bias"] = (kv_out,)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, q_out)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        return shapes

    after: dict[str, tuple[int, ...]] = {"model.norm.weight": (hidden,)}
    if not config.get("tie_word_embeddings", False):
        after["lm_head.weight"] = (vocab, hidden)
    return {"model.embed_tokens.weight": (vocab, hidden)}, block, after


def _bert_shapes(config: dict, source: str):
    """(shapes before the blocks, block index -> that block's shapes, shapes after them)."""
    hidden, inter = _need(config, "hidden_size", source), _need(config, "intermediate_size", source)
    vocab = _need(config, "vocab_size", source)
    positions = _need(config, "max_position_embeddings", source)
    types = config.get("type_vocab_size", 2)

    def block(i: int) -> dict[str, tuple[int, ...]]:
        p = f"encoder.layer.{i}."
        shapes: dict[str, tuple[int, ...]] = {}
        for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes[p + part + ".weight"] = (hidden, hidden)
            shapes[p + part + ".bias"] = (hidden,)
        shapes[p + "intermediate.dense.weight"] = (inter, hidden)
        shapes[p + "intermediate.dense.bias"] = (inter,)
        shapes[p + "output.dense.weight"] = (hidden, inter)
        shapes[p + "output.dense.bias"] = (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"] = (hidden,)
            shapes[p + norm + ".bias"] = (hidden,)
        return shapes

    before: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (positions, hidden),
        "embeddings.token_type_embeddings.weight": (types, hidden),
        "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,),
    }
    return before, block, {"pooler.dense.weight": (hidden, hidden),
                           "pooler.dense.bias": (hidden,)}


def param_count(shapes: dict[str, tuple[int, ...]]) -> int:
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total
