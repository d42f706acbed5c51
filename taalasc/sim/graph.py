"""The network graphs (Llama family, BERT family), written once over a set of operators.

The float reference (``float_ref.FloatOps``) and the chip model (``chip.ChipOps``) supply the
operators; this module only says which operator runs on which tensor, in the order of the
Hugging Face implementations (``modeling_llama.py``, ``modeling_qwen2.py``,
``modeling_mistral.py``, ``modeling_bert.py``, ``modeling_roberta.py``). Keeping the graph in
one place means a chip-versus-float difference can only come from the operators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from taalasc.errors import ModelError
from taalasc.model import arch

F32 = np.float32


@dataclass
class SimResult:
    """What one forward pass produced.

    Decoders fill ``logits`` [sequence, vocab]; encoders fill ``hidden`` [sequence, hidden] and
    ``pooled`` [hidden]. The chip fills ``overflows`` (tensor name -> number of group sums that
    left the accumulator's range) and ``peak_accumulator`` (tensor name -> largest |group sum|).
    """

    architecture: str
    tokens: tuple[int, ...]
    logits: np.ndarray | None = None
    hidden: np.ndarray | None = None
    pooled: np.ndarray | None = None
    overflows: dict[str, int] = field(default_factory=dict)
    peak_accumulator: dict[str, int] = field(default_factory=dict)

    @property
    def overflow_count(self) -> int:
        return sum(self.overflows.values())

    @property
    def accumulator_bits_needed(self) -> int:
        """Signed bits that would have held every group sum seen (0 for the float model)."""
        peak = max(self.peak_accumulator.values(), default=0)
        return peak.bit_length() + 1 if peak else 0


class Ops(Protocol):
    """The operators a graph needs; every array is float32 unless stated."""

    def names(self) -> list[str]: ...
    def linear(self, x: np.ndarray, weight: str, bias: str | None) -> np.ndarray: ...
    def embed(self, weight: str, ids: np.ndarray) -> np.ndarray: ...
    def vector(self, name: str) -> np.ndarray: ...
    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray: ...
    def layernorm(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                  eps: float) -> np.ndarray: ...
    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray,
                  scale: float) -> np.ndarray: ...
    def cos_sin(self, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def silu(self, x: np.ndarray) -> np.ndarray: ...
    def gelu(self, x: np.ndarray) -> np.ndarray: ...
    def tanh(self, x: np.ndarray) -> np.ndarray: ...


def check_tokens(tokens: Sequence[int], vocab: int, where: str) -> np.ndarray:
    """Token ids as int64, each in [0, vocab); ModelError naming the first bad one."""
    if len(tokens) == 0:
        raise ModelError(f"{where}: the token sequence must not be empty")
    ids = []
    for i, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < vocab:
            raise ModelError(f"{where}: token {i} must be an integer id from 0 to {vocab - 1} "
                             f"(vocab_size {vocab}), not {t!r}")
        ids.append(int(t))
    return np.asarray(ids, dtype=np.int64)


def _cfg(config: dict, key: str, where: str):
    if key not in config or config[key] is None:
        raise ModelError(f"{where}: config.json has no {key!r}")
    return config[key]


def f32_setting(value, key: str, where: str = "config.json") -> np.float32:
    """A config.json float (rope_theta, a RoPE factor, a norm epsilon) as the float32 the
    graph computes with. ModelError when float32 cannot hold it: 1e300 would become inf and
    1e-300 zero, and the forward pass would then divide by zero instead of computing."""
    with np.errstate(over="ignore", under="ignore"):  # the overflow is the check below
        f = F32(value)
    if not np.isfinite(f) or (f == 0) != (float(value) == 0):
        raise ModelError(f"{where}: {key} must fit a float32 (the simulation computes in "
                         f"float32), not {float(value)!r}")
    return f


# --------------------------------------------------------------------------- RoPE


def rope_inv_freq(config: dict, head_dim: int) -> np.ndarray:
    """Inverse frequencies [head_dim/2] in float32, as transformers' rope init functions.

    Reads either style of config.json through ``arch.rope_settings`` (4.x rope_theta +
    rope_scaling, 5.x rope_parameters), so equivalent configs give identical frequencies.
    Types "default", "linear" and "llama3" (a port of ``_compute_llama3_parameters``); every
    other type is refused there.
    """
    rope = arch.rope_settings(config, "config.json")
    base = f32_setting(rope["rope_theta"], "rope_theta")
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(F32) / F32(head_dim)
    kind = rope["rope_type"]
    # Extreme (float32-representable) settings can overflow an intermediate (a llama3
    # wavelength of 2*pi/1e-39 is inf, which the masks below compare correctly); what matters
    # is the result, checked after the block.
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        # base ** exponent rounded once to float32 (as torch's float32 pow), then 1/x in
        # float32: bit-identical to transformers' inv_freq (numpy's float32 power is off by
        # 1 ulp at times)
        power = (np.float64(base) ** exponent.astype(np.float64)).astype(F32)
        inv = (F32(1.0) / power).astype(F32)
        if kind == "linear":
            inv = (inv / f32_setting(rope["factor"], "rope_scaling.factor")).astype(F32)
        elif kind == "llama3":
            factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
            old_len = rope["original_max_position_embeddings"]
            low_wavelen = old_len / low
            high_wavelen = old_len / high
            wavelen = (F32(2 * math.pi) / inv).astype(F32)
            inv_l = np.where(wavelen > low_wavelen, inv / F32(factor), inv).astype(F32)
            smooth = ((F32(old_len) / wavelen - F32(low)) / F32(high - low)).astype(F32)
            smoothed = ((F32(1) - smooth) * inv_l / F32(factor) + smooth * inv_l).astype(F32)
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            inv = np.where(medium, smoothed, inv_l).astype(F32)
    if not np.isfinite(inv).all():
        raise ModelError(f"config.json: the RoPE settings {rope} give inverse frequencies "
                         "that float32 cannot hold (inf or NaN)")
    return inv


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [heads, seq, head_dim]; cos/sin [seq, head_dim] (HF's cat(freqs, freqs) layout)."""
    return (x * cos[None] + _rotate_half(x) * sin[None]).astype(F32)


# --------------------------------------------------------------------------- Llama family


def llama_forward(ops: Ops, config: dict, ids: np.ndarray) -> np.ndarray:
    """Logits [seq, vocab] of LlamaForCausalLM (also Mistral, Qwen2) for one sequence.

    ``config`` has passed ``arch.check_numerics``; absent keys take transformers' defaults.
    Biases as transformers builds them: llama from attention_bias / mlp_bias, qwen2 on q, k
    and v always, mistral none.
    """
    where = "config.json"
    model_type = arch.model_type_of(config, "llama")
    hidden = int(_cfg(config, "hidden_size", where))
    n_heads = int(_cfg(config, "num_attention_heads", where))
    n_kv = int(config.get("num_key_value_heads") or n_heads)
    head_dim = int(config.get("head_dim") or hidden // n_heads)
    n_layers = int(_cfg(config, "num_hidden_layers", where))
    eps = f32_setting(config.get("rms_norm_eps") or 1e-6, "rms_norm_eps")
    if n_heads % n_kv:
        raise ModelError(f"{where}: num_attention_heads {n_heads} must be a multiple of "
                         f"num_key_value_heads {n_kv}")
    llama = model_type == "llama"
    qkv_bias = (llama and bool(config.get("attention_bias"))) or model_type == "qwen2"
    o_bias = llama and bool(config.get("attention_bias"))
    mlp_bias = llama and bool(config.get("mlp_bias"))
    tied = bool(config.get("tie_word_embeddings", False))
    names = set(ops.names())
    p = "model." if "model.embed_tokens.weight" in names else ""
    for norm in ("q_norm", "k_norm"):
        if f"{p}layers.0.self_attn.{norm}.weight" in names:
            raise ModelError(f"{where}: model_type {model_type!r} has no query/key norm, but "
                             f"the checkpoint has '{p}layers.0.self_attn.{norm}.weight' "
                             "(a Qwen3/OLMo2-style model is not implemented)")

    seq = len(ids)
    allowed = np.tril(np.ones((seq, seq), dtype=bool))
    windows = arch.attention_windows(config, n_layers, where)
    inv = rope_inv_freq(config, head_dim)
    angles = np.arange(seq, dtype=np.int64).astype(F32)[:, None] * inv[None, :]
    cos, sin = ops.cos_sin(np.concatenate([angles, angles], axis=-1).astype(F32))
    group = n_heads // n_kv
    scale = head_dim ** -0.5
    pos = np.arange(seq)

    x = ops.embed(p + "embed_tokens.weight", ids)
    for i in range(n_layers):
        lp = f"{p}layers.{i}."
        h = ops.rmsnorm(x, ops.vector(lp + "input_layernorm.weight"), eps)

        def proj(name: str, bias: bool, x_in: np.ndarray = h) -> np.ndarray:
            return ops.linear(x_in, lp + name + ".weight", lp + name + ".bias" if bias else None)

        q = proj("self_attn.q_proj", qkv_bias).reshape(seq, n_heads, head_dim).transpose(1, 0, 2)
        k = proj("self_attn.k_proj", qkv_bias).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
        v = proj("self_attn.v_proj", qkv_bias).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)  # GQA: kv head h//group
        mask = allowed
        if windows[i] is not None:
            mask = allowed & ((pos[:, None] - pos[None, :]) < windows[i])
        ctx = ops.attention(q, k, v, mask, scale)
        ctx = ctx.transpose(1, 0, 2).reshape(seq, n_heads * head_dim)
        x = (x + proj("self_attn.o_proj", o_bias, ctx)).astype(F32)
        h = ops.rmsnorm(x, ops.vector(lp + "post_attention_layernorm.weight"), eps)
        gate = proj("mlp.gate_proj", mlp_bias, h)
        up = proj("mlp.up_proj", mlp_bias, h)
        x = (x + proj("mlp.down_proj", mlp_bias, (ops.silu(gate) * up).astype(F32))).astype(F32)
    x = ops.rmsnorm(x, ops.vector(p + "norm.weight"), eps)
    head = p + "embed_tokens.weight" if tied else "lm_head.weight"
    return ops.linear(x, head, None)


# --------------------------------------------------------------------------- BERT family


def bert_forward(ops: Ops, config: dict, ids: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(last hidden state [seq, hidden], pooled [hidden] or None without a pooler).

    token_type_ids are all 0 and the attention mask is all ones (one unpadded sequence).
    ``config`` has passed ``arch.check_numerics`` (exact GELU, absolute positions).
    """
    where = "config.json"
    hidden = int(_cfg(config, "hidden_size", where))
    n_heads = int(_cfg(config, "num_attention_heads", where))
    n_layers = int(_cfg(config, "num_hidden_layers", where))
    head_dim = hidden // n_heads
    eps = f32_setting(config.get("layer_norm_eps") or 1e-12, "layer_norm_eps")
    max_pos = int(_cfg(config, "max_position_embeddings", where))
    names = set(ops.names())
    p = next((pre for pre in ("bert.", "roberta.", "")
              if pre + "embeddings.word_embeddings.weight" in names), "")

    seq = len(ids)
    if config.get("model_type") == "roberta":  # create_position_ids_from_input_ids
        pad = config.get("pad_token_id")
        pad = 1 if pad is None else int(pad)
        keep = (ids != pad).astype(np.int64)
        positions = np.cumsum(keep) * keep + pad
    else:
        positions = np.arange(seq, dtype=np.int64)
    if positions.max() >= max_pos:
        raise ModelError(f"{where}: the sequence needs position {int(positions.max())} but "
                         f"max_position_embeddings is {max_pos}")
    x = ops.embed(p + "embeddings.word_embeddings.weight", ids)
    x = (x + ops.embed(p + "embeddings.token_type_embeddings.weight",
                       np.zeros(seq, dtype=np.int64))).astype(F32)
    x = (x + ops.embed(p + "embeddings.position_embeddings.weight", positions)).astype(F32)
    x = ops.layernorm(x, ops.vector(p + "embeddings.LayerNorm.weight"),
                      ops.vector(p + "embeddings.LayerNorm.bias"), eps)
    allowed = np.ones((seq, seq), dtype=bool)
    for i in range(n_layers):
        lp = f"{p}encoder.layer.{i}."

        def dense(name: str, x_in: np.ndarray) -> np.ndarray:
            return ops.linear(x_in, lp + name + ".weight", lp + name + ".bias")

        def norm(name: str, x_in: np.ndarray) -> np.ndarray:
            return ops.layernorm(x_in, ops.vector(lp + name + ".weight"),
                                 ops.vector(lp + name + ".bias"), eps)

        heads = [dense(f"attention.self.{m}", x).reshape(seq, n_heads, head_dim)
                 .transpose(1, 0, 2) for m in ("query", "key", "value")]
        ctx = ops.attention(*heads, allowed, head_dim ** -0.5)
        ctx = ctx.transpose(1, 0, 2).reshape(seq, hidden)
        x = norm("attention.output.LayerNorm",
                 (dense("attention.output.dense", ctx) + x).astype(F32))
        inter = ops.gelu(dense("intermediate.dense", x))
        x = norm("output.LayerNorm", (dense("output.dense", inter) + x).astype(F32))
    if p + "pooler.dense.weight" not in names:  # BertModel(add_pooling_layer=False)
        return x, None
    pooled = ops.tanh(ops.linear(x[:1], p + "pooler.dense.weight", p + "pooler.dense.bias"))[0]
    return x, pooled


def vocab_size(config: dict | None, architecture: str, where: str) -> int:
    if not config:
        raise ModelError(f"{where}: simulation needs the model's config.json (none was found)")
    if architecture not in ("llama", "bert"):
        raise ModelError(f"{where}: architecture must be llama or bert to simulate, "
                         f"not {architecture!r}")
    return int(_cfg(config, "vocab_size", "config.json"))


def run_graph(ops: Ops, config: dict | None, architecture: str,
              tokens: Sequence[int]) -> SimResult:
    """Run the ``architecture`` graph on ``ops``; checks the config and the token ids."""
    vocab = vocab_size(config, architecture, "simulate")
    arch.check_numerics(config, architecture, "config.json")
    ids = check_tokens(tokens, vocab, "simulate")
    result = SimResult(architecture=architecture, tokens=tuple(int(t) for t in ids))
    # One BLAS thread: the graph's matmuls are many and small (the chip's are per block of
    # 32 inputs), and OpenBLAS threads on them cost more in hand-offs than they gain; measured
    # on SmolLM2 (128 tokens, 2 loaded cores) 6.4 s with one thread against 61 s with two.
    # Parallel work comes from worker processes (-j), as everywhere in taalasc.
    # Float32 arithmetic on extreme (but accepted) weights overflows to inf, and inf - inf
    # gives NaN, in the float reference as in PyTorch and in the chip's float stages as in
    # hardware. That is the result being simulated, and the quality metrics report it
    # (NaN logits, cosine, KL); numpy's RuntimeWarnings would only add noise on stderr.
    with threadpool_limits(limits=1, user_api="blas"), \
            np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        if architecture == "llama":
            result.logits = llama_forward(ops, config, ids)
        else:
            result.hidden, result.pooled = bert_forward(ops, config, ids)
    return result
