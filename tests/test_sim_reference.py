"""The float reference against straightforward loop-based numpy written here, in float64."""

import math

import numpy as np
import pytest

from taalasc.errors import ModelError
from taalasc.model import open_checkpoint
from taalasc.model.synth import bert_config, bert_shapes, llama_config, llama_shapes, write_llama
from taalasc.sim import ArraySource, CheckpointSource, erf, gelu_exact, rope_inv_freq, run_float


def random_weights(shapes, seed, std=0.2):
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        w = rng.standard_normal(shapes[name]) * std
        if "norm" in name.lower() and name.endswith("weight"):
            w = 1.0 + w
        out[name] = w.astype(np.float32)
    return out


# ----------------------------------------------------------------------------- reference


def ref_inv_freq(cfg, hd):
    theta = cfg.get("rope_theta", 10000.0)
    inv = [1.0 / theta ** (2 * i / hd) for i in range(hd // 2)]
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    if rs["rope_type"] == "linear":
        return [f / rs["factor"] for f in inv]
    old = rs["original_max_position_embeddings"]
    lo_wl, hi_wl = old / rs["low_freq_factor"], old / rs["high_freq_factor"]
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(f)
        elif wl > lo_wl:
            out.append(f / rs["factor"])
        else:
            lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / rs["factor"] + s * f)
    return out


def ref_llama(W, cfg, tokens, qkv_bias=False, window=None):
    W = {k: v.astype(np.float64) for k, v in W.items()}
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    eps = cfg["rms_norm_eps"]
    inv = ref_inv_freq(cfg, hd)
    seq = len(tokens)

    def rms(x, w):
        return np.stack([r / math.sqrt(np.mean(r * r) + eps) * w for r in x])

    def rope(vec, t):
        out = vec.copy()
        half = hd // 2
        for i in range(half):
            c, s = math.cos(t * inv[i]), math.sin(t * inv[i])
            out[i] = vec[i] * c - vec[i + half] * s
            out[i + half] = vec[i + half] * c + vec[i] * s
        return out

    x = W["model.embed_tokens.weight"][tokens]
    for li in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{li}."
        h = rms(x, W[p + "input_layernorm.weight"])
        proj = {}
        for m in "qkv":
            proj[m] = h @ W[p + f"self_attn.{m}_proj.weight"].T
            if qkv_bias:
                proj[m] = proj[m] + W[p + f"self_attn.{m}_proj.bias"]
        ctx = np.zeros((seq, nh * hd))
        for head in range(nh):
            kvh = head // (nh // nkv)
            qs = [rope(proj["q"][t, head * hd:(head + 1) * hd], t) for t in range(seq)]
            ks = [rope(proj["k"][t, kvh * hd:(kvh + 1) * hd], t) for t in range(seq)]
            vs = [proj["v"][t, kvh * hd:(kvh + 1) * hd] for t in range(seq)]
            for i in range(seq):
                keys = range(0 if window is None else max(0, i - window + 1), i + 1)
                scores = [float(qs[i] @ ks[j]) / math.sqrt(hd) for j in keys]
                m = max(scores)
                e = [math.exp(s - m) for s in scores]
                ctx[i, head * hd:(head + 1) * hd] = sum(ej / sum(e) * vs[j]
                                                        for ej, j in zip(e, keys))
        x = x + ctx @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"])
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T


def ref_bert(W, cfg, tokens, first_position=0):
    W = {k: v.astype(np.float64) for k, v in W.items()}
    nh, H = cfg["num_attention_heads"], cfg["hidden_size"]
    hd, eps, seq = H // nh, cfg["layer_norm_eps"], len(tokens)

    def ln(x, name):
        out = []
        for r in x:
            mu = r.mean()
            var = ((r - mu) ** 2).mean()
            out.append((r - mu) / math.sqrt(var + eps) * W[name + ".weight"] + W[name + ".bias"])
        return np.stack(out)

    def dense(x, name):
        return x @ W[name + ".weight"].T + W[name + ".bias"]

    x = (W["embeddings.word_embeddings.weight"][tokens]
         + W["embeddings.token_type_embeddings.weight"][0]
         + W["embeddings.position_embeddings.weight"][first_position:first_position + seq])
    x = ln(x, "embeddings.LayerNorm")
    for li in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{li}."
        q, k, v = (dense(x, p + f"attention.self.{m}") for m in ("query", "key", "value"))
        ctx = np.zeros((seq, H))
        for head in range(nh):
            sl = slice(head * hd, (head + 1) * hd)
            for i in range(seq):
                s = [float(q[i, sl] @ k[j, sl]) / math.sqrt(hd) for j in range(seq)]
                e = [math.exp(t - max(s)) for t in s]
                ctx[i, sl] = sum(e[j] / sum(e) * v[j, sl] for j in range(seq))
        x = ln(dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        inter = dense(x, p + "intermediate.dense")
        inter = np.vectorize(lambda t: 0.5 * t * (1 + math.erf(t / math.sqrt(2))))(inter)
        x = ln(dense(inter, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = np.tanh(dense(x[:1], "pooler.dense"))[0]
    return x, pooled


def assert_close(got, want):
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ----------------------------------------------------------------------------- tests

TOKENS = [3, 17, 0, 42, 9, 33, 5, 11]
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


@pytest.mark.parametrize("kw", [
    dict(heads=4, kv_heads=2),                       # GQA
    dict(heads=4, kv_heads=4),                       # plain multi-head
    dict(heads=4, kv_heads=1, tie_embeddings=True),  # MQA, tied lm_head
    dict(heads=2, kv_heads=1, rope_scaling=LLAMA3),  # head_dim 16: all three llama3 bands
    dict(heads=2, kv_heads=2, rope_theta=500000.0,
         rope_scaling={"rope_type": "linear", "factor": 4.0}),
], ids=["gqa", "mha", "mqa-tied", "llama3", "linear"])
def test_llama_matches_loop_reference(kw):
    cfg = llama_config(hidden=32, layers=2, intermediate=64, vocab=50, **kw)
    W = random_weights(llama_shapes(cfg), seed=1)
    got = run_float(ArraySource(W), cfg, "llama", TOKENS).logits
    assert got.shape == (len(TOKENS), 50) and got.dtype == np.float32
    assert_close(got, ref_llama(W, cfg, TOKENS))


def test_qwen2_uses_qkv_biases():
    cfg = dict(llama_config(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64, vocab=50),
               model_type="qwen2")
    shapes = llama_shapes(cfg)
    for m, n in (("q", 32), ("k", 16), ("v", 16)):
        shapes[f"model.layers.0.self_attn.{m}_proj.bias"] = (n,)
    W = random_weights(shapes, seed=2)
    got = run_float(ArraySource(W), cfg, "llama", TOKENS).logits
    assert_close(got, ref_llama(W, cfg, TOKENS, qkv_bias=True))
    plain = run_float(ArraySource(W), dict(cfg, model_type="llama"), "llama", TOKENS).logits
    assert not np.allclose(got, plain, rtol=1e-3)


def test_mistral_sliding_window():
    cfg = dict(llama_config(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, vocab=50),
               model_type="mistral", sliding_window=3)
    W = random_weights(llama_shapes(cfg), seed=8)
    got = run_float(ArraySource(W), cfg, "llama", TOKENS).logits
    assert_close(got, ref_llama(W, cfg, TOKENS, window=3))
    full = run_float(ArraySource(W), dict(cfg, sliding_window=None), "llama", TOKENS).logits
    np.testing.assert_array_equal(got[:3], full[:3])   # the window only cuts from position 3
    assert not np.allclose(got[3:], full[3:], rtol=1e-3)


def test_llama3_inv_freq_bands():
    cfg = llama_config(hidden=32, heads=2, kv_heads=1, rope_scaling=LLAMA3)
    got = rope_inv_freq(cfg, 16)
    np.testing.assert_allclose(got, ref_inv_freq(cfg, 16), rtol=1e-6)
    plain = rope_inv_freq(dict(cfg, rope_scaling=None), 16)
    assert got[0] == plain[0]                         # high-frequency band untouched
    assert got[-1] == pytest.approx(plain[-1] / 8, rel=1e-6)  # low band divided by factor
    assert plain[2] / 8 < got[2] < plain[2]           # medium band interpolated


def test_unknown_rope_type_is_an_error():
    cfg = llama_config(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ModelError, match=r"^config\.json: rope_scaling\.rope_type must be one of default, linear, "
                                         r"llama3, not 'yarn'$"):
        rope_inv_freq(cfg, 16)


def test_bert_matches_loop_reference():
    cfg = bert_config(hidden=32, layers=2, heads=4, intermediate=64, vocab=50, max_position=16)
    W = random_weights(bert_shapes(cfg), seed=3)
    res = run_float(ArraySource(W), cfg, "bert", TOKENS)
    hidden, pooled = ref_bert(W, cfg, TOKENS)
    assert res.logits is None and res.hidden.shape == (len(TOKENS), 32)
    assert_close(res.hidden, hidden)
    assert_close(res.pooled, pooled)


def test_roberta_positions_start_after_padding_index():
    cfg = dict(bert_config(hidden=32, layers=1, heads=4, intermediate=64, vocab=50,
                           max_position=16), model_type="roberta", pad_token_id=1)
    W = random_weights(bert_shapes(cfg), seed=9)
    tokens = [t for t in TOKENS if t != 1]
    res = run_float(ArraySource(W), cfg, "bert", tokens)
    hidden, pooled = ref_bert(W, cfg, tokens, first_position=2)
    assert_close(res.hidden, hidden)
    assert_close(res.pooled, pooled)


def test_bert_sequence_longer_than_positions_is_an_error():
    cfg = bert_config(hidden=32, layers=1, heads=4, intermediate=64, vocab=50, max_position=4)
    W = random_weights(bert_shapes(cfg), seed=3)
    with pytest.raises(ModelError, match=r"max_position_embeddings is 4$"):
        run_float(ArraySource(W), cfg, "bert", TOKENS)


def test_checkpoint_source_runs_the_synthetic_model(tmp_path):
    cfg = llama_config(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64, vocab=50)
    ckpt = open_checkpoint(write_llama(tmp_path / "m", cfg, dtype="F32", seed=4))
    W = {n: ckpt.read(n) for n in ckpt.tensors}
    got = run_float(CheckpointSource(ckpt), ckpt.config, ckpt.architecture, TOKENS).logits
    assert_close(got, ref_llama(W, cfg, TOKENS))


@pytest.mark.parametrize("bad", [50, -1, 2.0, True])
def test_token_out_of_range_is_an_error(bad):
    cfg = llama_config(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64, vocab=50)
    W = random_weights(llama_shapes(cfg), seed=1)
    with pytest.raises(ModelError, match=r"token 1 must be an integer id from 0 to 49 "
                                         r"\(vocab_size 50\), not "):
        run_float(ArraySource(W), cfg, "llama", [1, bad, 2])


def test_erf_and_gelu_match_math_erf():
    z = np.concatenate([np.linspace(-9, 9, 4001), [0.0, -0.0, 2.9999999, 3.0, 1e-9, np.inf,
                                                   -np.inf]])
    want = np.array([math.erf(t) for t in z])
    np.testing.assert_allclose(erf(z), want, rtol=0, atol=1e-13)
    x = np.linspace(-10, 10, 1001).astype(np.float32)
    want = np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in x.astype(np.float64)])
    np.testing.assert_allclose(gelu_exact(x), want.astype(np.float32), rtol=1e-6, atol=1e-30)
    assert np.isnan(erf(np.array([np.nan]))).all()
