"""Model families: recognising them, ordering their tensors by dataflow, checking config.json.

Two families are understood in depth: "llama" (Llama, Mistral, Qwen2: Hugging Face
``LlamaForCausalLM``-style names) and "bert" (BERT, RoBERTa encoders). Everything else is
"generic": still loadable, ordered by a best-effort rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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


def block_role(name: str) -> str:
    """A tensor's name inside its transformer block, without the parameter suffix
    ("model.layers.3.mlp.up_proj.weight" -> "mlp.up_proj"); outside a block, the module
    ("lm_head.weight" -> "lm_head")."""
    m = _LAYER_RE.search(name)
    return _split_param(name[m.end():] if m else name)[0]


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


def require_matrices(shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """ModelError unless ``shapes`` holds a 2-D weight tensor: vectors alone (norms, biases)
    are no model to print or estimate. Checked before a compile's work, not after it."""
    if any(len(shape) == 2 for shape in shapes.values()):
        return
    shown = ", ".join(f"{n} {list(shapes[n])}" for n in sorted(shapes)[:3])
    more = ", ..." if len(shapes) > 3 else ""
    raise ModelError(f"{where}: no 2-D weight tensors (a model's matrices) to quantize; "
                     f"only {len(shapes)} other tensor(s): {shown}{more}")


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


# --- upper bounds on the sizes a config.json may claim -------------------------------------
#
# A config.json of a few hundred bytes can claim any size; nothing but these bounds limits what
# ``estimate --config`` computes from it (with weights, the tensors must agree as well). The
# largest published dense configs: Llama 3.1 405B (126 layers, hidden 16384, MLP 53248, 128
# heads; huggingface.co/meta-llama/Llama-3.1-405B config.json), Megatron-Turing NLG 530B (105
# layers, hidden 20480; arXiv:2201.11990), PaLM 540B (118 layers, hidden 18432, MLP 73728;
# arXiv:2204.02311); the largest vocabularies are ~256k (Gemma: 256,000) and the longest
# contexts ~10M tokens (Llama 4 Scout). The limits leave 8x or more of room above each; the
# biggest published models of any kind (mixtures of experts) have 1-2 T parameters.
DIMENSION_LIMITS: dict[str, int] = {
    "num_hidden_layers": 1024,
    "hidden_size": 1 << 20,
    "intermediate_size": 1 << 20,
    "num_attention_heads": 1 << 16,
    "num_key_value_heads": 1 << 16,
    "head_dim": 1 << 16,
    "vocab_size": 1 << 24,
    "type_vocab_size": 1 << 24,
    "max_position_embeddings": 1 << 27,
    # mixtures of experts: the widest published ones route over a few hundred experts
    # (DeepSeek-V3: 256, Kimi K2: 384)
    "num_local_experts": 1 << 12,
    "num_experts": 1 << 12,
}
MAX_PARAMS = 10**13


def check_dimensions(config: Mapping[str, Any], source: str) -> None:
    """One ModelError naming every size key of config.json above DIMENSION_LIMITS.

    Values that are not positive integers are left to the callers' own checks.
    """
    problems = [f"{key} must be at most {limit:,} (far beyond any published model), not "
                f"{config[key]:,}"
                for key, limit in DIMENSION_LIMITS.items()
                if _positive_int(config.get(key)) and config[key] > limit]
    if problems:
        raise ModelError(f"{source}: " + "; ".join(problems))


def check_config(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                 architecture: str, source: str) -> None:
    """Raise ModelError when config.json disagrees with the tensors' shapes or count, or
    claims sizes beyond DIMENSION_LIMITS."""
    get = {k: _int_key(config, k, source) for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "vocab_size", "head_dim", "max_position_embeddings",
        "type_vocab_size")}
    check_dimensions(config, source)

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
    # distinct indices >= 0: 0..layers-1 exactly when there are `layers` of them and the last
    # is layers-1 (no list of the claimed length is built)
    complete = len(present) == layers and bool(present) and present[-1] == layers - 1
    if layers is not None and architecture != "generic" and not complete:
        shown = f"{len(present)} (indices {present[0]}..{present[-1]})" if present else "none"
        raise ModelError(f"{source}: num_hidden_layers is {layers} but the checkpoint has "
                         f"layers {shown}")


def _head_dim(get: Mapping[str, int | None]) -> int | None:
    hidden, heads = get["hidden_size"], get["num_attention_heads"]
    if hidden and heads and hidden % heads == 0:
        return hidden // heads
    return None


# --- config.json keys that change the numbers --------------------------------------------
#
# Every key that LlamaConfig, MistralConfig, Qwen2Config, BertConfig and RobertaConfig write
# (transformers 4.x and 5.x), plus the keys of neighbouring families that would change the
# numbers if a config of ours carried them, with what taalasc does about each, per model_type.
# "implemented": the graph (taalasc.sim.graph) computes it, the value is checked here;
# "ignored: why": it does not change the numbers of one forward pass;
# "refused": only the neutral value(s) named in ``supported`` are accepted.
# A key that is in no table is ignored on purpose: configs carry much metadata (tokenizer
# ids, training settings, blocks for other tools), and a key that the transformers model of
# that model_type does not read cannot change what transformers computes. When a numerics key
# is absent, transformers' own default is used (the value named in the decision), exactly as
# transformers does; taalasc adds no default of its own.

IMPLEMENTED = "implemented"
REFUSED = "refused"
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class KeyRule:
    """What taalasc does with one config.json key: decision, accepted values, their test."""

    decision: str  # IMPLEMENTED (+ note) | "ignored: <why>" | REFUSED
    supported: str = "any value"  # the accepted values in words, as errors say them
    ok: Callable[[Any], bool] = lambda value: True


def _absent_or(*neutral: Any) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if v is None:
            return True
        for n in neutral:
            if isinstance(n, bool) or isinstance(v, bool):
                if v is n:
                    return True
            elif _is_number(n) and _is_number(v) and float(v) == float(n):
                return True
        return False
    return ok


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _ignored(why: str) -> KeyRule:
    return KeyRule(f"ignored: {why}")


def _refused(what: str, *neutral: Any) -> KeyRule:
    words = ["absent", "null"] + [str(n).lower() if isinstance(n, bool) else repr(n)
                                  for n in neutral]
    shown = ", ".join(words[:-1]) + " or " + words[-1]
    return KeyRule(f"{REFUSED}: {what}", shown, _absent_or(*neutral))


def _flag(note: str) -> KeyRule:
    return KeyRule(f"{IMPLEMENTED} ({note})", "true or false",
                   lambda v: v is None or isinstance(v, bool))


_POS_INT = KeyRule(IMPLEMENTED, "a positive integer", lambda v: v is None or _positive_int(v))
_EPS = KeyRule(IMPLEMENTED, "a positive number", lambda v: v is None or (_is_number(v) and v > 0))
_ROPE = KeyRule(IMPLEMENTED + f" (rope_type {', '.join(ROPE_TYPES)}; checked by rope_settings)")

_METADATA = {key: _ignored(why) for why, keys in {
    "training only (dropout is off at inference)": (
        "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
        "classifier_dropout", "hidden_dropout", "embd_pdrop", "resid_pdrop"),
    "training only (weight initialisation)": ("initializer_range", "gradient_checkpointing"),
    "generation or tokenizer metadata": (
        "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "use_cache",
        "max_length", "tokenizer_class"),
    "which class or tool wrote the file": (
        "architectures", "model_type", "transformers_version", "_name_or_path", "auto_map",
        "is_llama_config", "_attn_implementation", "attn_implementation"),
    "storage dtype; the float reference computes in float32 from the stored values": (
        "torch_dtype", "dtype"),
    "task heads and labels outside the simulated base model": (
        "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",
        "task_specific_params"),
    "splits the feed-forward into chunks over the sequence; same numbers": (
        "chunk_size_feed_forward",),
    "what the Python call returns, not its numbers": (
        "output_attentions", "output_hidden_states", "return_dict", "torchscript"),
}.items() for key in keys}

_FOREIGN = {  # keys of other families: a neutral value only
    "attn_logit_softcapping": _refused("attention logit soft-capping is not implemented"),
    "final_logit_softcapping": _refused("final logit soft-capping is not implemented"),
    "query_pre_attn_scalar": _refused("a query pre-attention scalar is not implemented"),
    "qk_layernorm": _refused("query/key normalisation is not implemented", False),
    "use_qk_norm": _refused("query/key normalisation is not implemented", False),
    "qk_norm": _refused("query/key normalisation is not implemented", False),
    "qk_layer_norms": _refused("query/key normalisation is not implemented", False),
    "rope_interleaved": _refused("interleaved (GPT-J style) RoPE is not implemented", False),
    "use_mrope": _refused("multimodal RoPE is not implemented", False),
    "no_rope_layers": _refused("layers without RoPE are not implemented"),
    "scale_embedding": _refused("embedding scaling is not implemented", False),
    "embedding_multiplier": _refused("an embedding multiplier is not implemented", 1.0),
    "residual_multiplier": _refused("a residual multiplier is not implemented", 1.0),
    "attention_multiplier": _refused("an attention multiplier is not implemented"),
    "logits_scaling": _refused("logit scaling is not implemented", 1.0),
    "clip_qkv": _refused("query/key/value clipping is not implemented"),
    "use_parallel_residual": _refused("parallel residual blocks are not implemented", False),
    "alibi": _refused("ALiBi is not implemented", False),
    "num_local_experts": _refused("mixture of experts is not implemented", 0, 1),
    "num_experts": _refused("mixture of experts is not implemented", 0, 1),
    "embedding_size": _refused("a factorised embedding is not implemented"),
    "is_encoder_decoder": _refused("encoder-decoder models are not implemented", False),
}

_NOT_READ = "transformers' Mistral and Qwen2 models do not read it: fixed biases"
_LLAMA = {
    **_METADATA, **_FOREIGN,
    "vocab_size": _POS_INT, "hidden_size": _POS_INT, "intermediate_size": _POS_INT,
    "num_hidden_layers": _POS_INT, "num_attention_heads": _POS_INT,
    "num_key_value_heads": _POS_INT, "head_dim": _POS_INT,
    "max_position_embeddings": KeyRule(
        IMPLEMENTED + " (fallback for rope original_max_position_embeddings)", "a positive "
        "integer", lambda v: v is None or _positive_int(v)),
    "hidden_act": KeyRule(IMPLEMENTED + " (absent: 'silu')", "'silu' or 'swish'",
                          lambda v: v is None or v in ("silu", "swish")),
    "rms_norm_eps": KeyRule(IMPLEMENTED + " (absent: 1e-06)", _EPS.supported, _EPS.ok),
    "tie_word_embeddings": _flag("absent: false"),
    "rope_theta": _ROPE, "rope_scaling": _ROPE, "rope_parameters": _ROPE,
    "partial_rotary_factor": _ROPE,
    "pretraining_tp": KeyRule("ignored: > 1 makes transformers 4.x split each matmul into "
                              "slices and add them, the same sum up to float rounding; 5.x no "
                              "longer reads it", "a positive integer",
                              lambda v: v is None or _positive_int(v)),
    "pad_token_id": _ignored("padding id; one unpadded sequence is simulated"),
    "attention_bias": _refused(_NOT_READ, False),
    "mlp_bias": _refused(_NOT_READ, False),
    "sliding_window": _refused("Llama has no sliding-window attention"),
    "use_sliding_window": _refused("Llama has no sliding-window attention", False),
    "max_window_layers": _ignored("read only with use_sliding_window (qwen2)"),
    "layer_types": KeyRule(IMPLEMENTED + " (checked by attention_windows)"),
}
_WINDOW = KeyRule(IMPLEMENTED + " (checked by attention_windows)")

CONFIG_KEYS: dict[str, dict[str, KeyRule]] = {
    "llama": {**_LLAMA, "attention_bias": _flag("q, k, v and o biases; absent: false"),
              "mlp_bias": _flag("gate, up and down biases; absent: false")},
    "mistral": {**_LLAMA, "sliding_window": _WINDOW,
                "use_sliding_window": _ignored("Mistral applies sliding_window to every layer "
                                               "and does not read it")},
    "qwen2": {**_LLAMA, "sliding_window": _WINDOW, "use_sliding_window": _WINDOW,
              "max_window_layers": _WINDOW},
    "bert": {
        **_METADATA, **_FOREIGN,
        "vocab_size": _POS_INT, "hidden_size": _POS_INT, "intermediate_size": _POS_INT,
        "num_hidden_layers": _POS_INT, "num_attention_heads": _POS_INT,
        "max_position_embeddings": _POS_INT, "type_vocab_size": _POS_INT,
        "hidden_act": KeyRule(IMPLEMENTED + " (exact erf GELU; absent: 'gelu')", "'gelu'",
                              lambda v: v is None or v == "gelu"),
        "layer_norm_eps": KeyRule(IMPLEMENTED + " (absent: 1e-12)", _EPS.supported, _EPS.ok),
        "position_embedding_type": KeyRule(IMPLEMENTED + " (absolute only; 5.x dropped the "
                                           "key)", "absent or 'absolute'",
                                           lambda v: v is None or v == "absolute"),
        "is_decoder": _refused("a causal (decoder) BERT is not implemented", False),
        "add_cross_attention": _refused("cross-attention is not implemented", False),
        "tie_word_embeddings": _ignored("ties the masked-LM head, which BertModel does not "
                                        "have (5.x writes true by default)"),
        "pad_token_id": _ignored("padding id; one unpadded sequence is simulated"),
    },
}
CONFIG_KEYS["roberta"] = {**CONFIG_KEYS["bert"], "pad_token_id": KeyRule(
    IMPLEMENTED + " (positions start after it; absent: 1)", "a non-negative integer",
    lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0))}


def model_type_of(config: Mapping[str, Any], architecture: str) -> str:
    """The model_type whose key table applies: config's model_type, else from architectures,
    else the family name ("llama" or "bert")."""
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_KEYS:
        return model_type
    for name in config.get("architectures") or ():
        if isinstance(name, str):
            for known in CONFIG_KEYS:
                if name.lower().startswith(known):
                    return known
    return architecture


def check_numerics(config: Mapping[str, Any], architecture: str, source: str) -> None:
    """One ModelError naming every config.json key whose value taalasc cannot compute.

    Looks up each key in CONFIG_KEYS[model_type]; then the RoPE settings and the attention
    windows of the Llama family. Does nothing for "generic" models (nothing is simulated).
    """
    if architecture not in ("llama", "bert"):
        return
    model_type = model_type_of(config, architecture)
    table = CONFIG_KEYS[model_type]
    problems = []
    for key in sorted(config):
        rule = table.get(key)
        if rule is not None and not rule.ok(config[key]):
            why = rule.decision.removeprefix(REFUSED + ": ")
            why = f" ({why})" if rule.decision.startswith(REFUSED) else ""
            problems.append(f"{key} must be {rule.supported}{why}, not {_short(config[key])}")
    if architecture == "llama":
        try:
            rope_settings(config, source)
            n_layers = config.get("num_hidden_layers")
            if _positive_int(n_layers):
                attention_windows(config, n_layers, source)
        except ModelError as exc:
            problems.append(str(exc).removeprefix(f"{source}: "))
    if problems:
        raise ModelError(f"{source}: " + "; ".join(problems))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- RoPE: transformers 4.x (rope_theta + rope_scaling) and 5.x (rope_parameters) ----------

_ROPE_NEEDS = {"default": (), "linear": ("factor",),
               "llama3": ("factor", "low_freq_factor", "high_freq_factor")}


def rope_settings(config: Mapping[str, Any], source: str = "config.json") -> dict[str, Any]:
    """The RoPE settings of a Llama-family config, the same for both styles of config.json.

    transformers 4.x writes ``rope_theta`` and ``rope_scaling`` ({"rope_type" or "type",
    "factor", ...} or null); 5.x writes ``rope_parameters`` ({"rope_type", "rope_theta", ...}).
    Normalised as transformers' ``standardize_rope_params`` does: rope_type from "rope_type",
    else "type", else "default"; rope_theta from the RoPE object, else top-level rope_theta,
    else 10000.0; llama3's original_max_position_embeddings, else max_position_embeddings.
    Returns {"rope_type", "rope_theta"} plus the type's own float parameters. Types other than
    default, linear and llama3, partial rotary factors and per-layer-type RoPE are refused.
    """
    scaling, params = config.get("rope_scaling"), config.get("rope_parameters")
    found = {}
    for key, value in (("rope_scaling", scaling), ("rope_parameters", params)):
        if value is None or value == {}:
            continue
        if not isinstance(value, dict):
            raise ModelError(f"{source}: {key} must be an object or null, not {_short(value)}")
        found[key] = _rope_from(key, value, config, source)
    if len(found) == 2 and found["rope_scaling"] != found["rope_parameters"]:
        raise ModelError(f"{source}: rope_scaling and rope_parameters must agree when both "
                         f"are given, not {found['rope_scaling']} and "
                         f"{found['rope_parameters']}")
    if found:
        return next(iter(found.values()))
    return _rope_from("rope_parameters", {}, config, source)


def _rope_from(key: str, value: Mapping[str, Any], config: Mapping[str, Any],
               source: str) -> dict[str, Any]:
    nested = sorted(k for k, v in value.items() if isinstance(v, dict))
    if nested:
        raise ModelError(f"{source}: {key}.{nested[0]} must not be used: one RoPE object for "
                         "all layers is supported, not one per layer type")
    type_key = "rope_type" if "rope_type" in value else "type" if "type" in value else None
    untyped = sorted(set(value) - {"rope_theta", "partial_rotary_factor"})
    if type_key is None and untyped:  # transformers 4.x cannot run it (no rope function)
        raise ModelError(f"{source}: {key} must name its rope_type (one of "
                         f"{', '.join(ROPE_TYPES)}) when it sets {', '.join(untyped)}")
    kind = value.get(type_key, "default") if type_key else "default"
    if kind not in ROPE_TYPES:
        raise ModelError(f"{source}: {key}.{type_key or 'rope_type'} must be one of "
                         f"{', '.join(ROPE_TYPES)}, not {_short(kind)}")
    theta_key = f"{key}.rope_theta" if "rope_theta" in value else "rope_theta"
    top = config.get("rope_theta")
    if "rope_theta" in value and top is not None and top != value["rope_theta"]:
        raise ModelError(f"{source}: rope_theta and {key}.rope_theta must agree when both are "
                         f"given, not {_short(top)} and {_short(value['rope_theta'])}")
    theta = value.get("rope_theta", top)
    theta = 10000.0 if theta is None else theta
    if not _is_number(theta) or theta <= 0:
        raise ModelError(f"{source}: {theta_key} must be a positive number, not {_short(theta)}")
    for where, factor in ((f"{key}.partial_rotary_factor", value.get("partial_rotary_factor")),
                          ("partial_rotary_factor", config.get("partial_rotary_factor"))):
        if factor is not None and not (_is_number(factor) and float(factor) == 1.0):
            raise ModelError(f"{source}: {where} must be absent, null or 1.0 (partial rotary "
                             f"embedding is not implemented), not {_short(factor)}")
    out: dict[str, Any] = {"rope_type": kind, "rope_theta": float(theta)}
    for name in _ROPE_NEEDS[kind]:
        v = value.get(name)
        if not _is_number(v) or v <= 0:
            raise ModelError(f"{source}: {key}.{name} must be a positive number for rope_type "
                             f"{kind!r}, not {_short(v)}")
        out[name] = float(v)
    if kind == "llama3":
        old = value.get("original_max_position_embeddings",
                        config.get("max_position_embeddings"))
        if not _positive_int(old):
            raise ModelError(f"{source}: {key}.original_max_position_embeddings must be a "
                             f"positive integer for rope_type 'llama3', not {_short(old)}")
        out["original_max_position_embeddings"] = float(old)
        if out["high_freq_factor"] <= out["low_freq_factor"]:
            raise ModelError(f"{source}: {key}.high_freq_factor must be greater than "
                             f"low_freq_factor, not {out['high_freq_factor']} <= "
                             f"{out['low_freq_factor']}")
    return out


# --- attention windows: Mistral's sliding_window, Qwen2's use_sliding_window / layer_types --

ATTENTION_KINDS = ("full_attention", "sliding_attention")


def attention_windows(config: Mapping[str, Any], n_layers: int,
                      source: str = "config.json") -> list[int | None]:
    """Per layer, the sliding window (keys j with i - j < window) or None for full attention.

    As transformers 5.x: llama has none; mistral applies sliding_window (when not null) to
    every layer; qwen2 uses sliding_window only with use_sliding_window, on the layers that
    ``layer_types`` marks "sliding_attention", else on layers >= max_window_layers (absent: 28,
    Qwen2Config's default). A ``layer_types`` that disagrees with what the model does is refused.
    """
    model_type = model_type_of(config, "llama")
    window = config.get("sliding_window")
    if model_type == "qwen2" and not config.get("use_sliding_window"):
        window = None
    if window is not None and not _positive_int(window):
        raise ModelError(f"{source}: sliding_window must be a positive integer or null, "
                         f"not {_short(window)}")
    if model_type == "llama":
        window = None
    layer_types = config.get("layer_types")
    if layer_types is not None:
        if (not isinstance(layer_types, list) or len(layer_types) != n_layers
                or any(t not in ATTENTION_KINDS for t in layer_types)):
            raise ModelError(f"{source}: layer_types must be a list of {n_layers} "
                             f"(num_hidden_layers) entries, each one of "
                             f"{', '.join(ATTENTION_KINDS)}, not {_short(layer_types)}")
    if model_type == "qwen2":
        if layer_types is None:
            first = config.get("max_window_layers", 28)
            if not isinstance(first, int) or isinstance(first, bool) or first < 0:
                raise ModelError(f"{source}: max_window_layers must be a non-negative integer, "
                                 f"not {_short(first)}")
            return [window if window is not None and i >= first else None
                    for i in range(n_layers)]
        if window is None and "sliding_attention" in layer_types:
            raise ModelError(f"{source}: layer_types must not hold 'sliding_attention' when "
                             "use_sliding_window is false or sliding_window is null")
        return [window if t == "sliding_attention" else None for t in layer_types]
    windows = [window] * n_layers
    if layer_types is not None:
        want = "sliding_attention" if window is not None else "full_attention"
        if any(t != want for t in layer_types):
            raise ModelError(f"{source}: layer_types must be all {want!r} for model_type "
                             f"{model_type!r} (it has no per-layer attention), not "
                             f"{_short(layer_types)}")
    return windows
