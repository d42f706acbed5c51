"""LoRA adapters: loading PEFT folders, the merged float reference, the run-time SRAM path."""

from __future__ import annotations

import json
import math
import re
import struct

import ml_dtypes
import numpy as np
import pytest

from taalasc.errors import ModelError
from taalasc.lora import (adapter_sram_bytes, apply_lora, load_lora, merged_weights,
                          read_adapter_files, write_peft_adapter)
from taalasc.model import open_checkpoint, synth

Q0 = "model.layers.0.self_attn.q_proj.weight"
V1 = "model.layers.1.self_attn.v_proj.weight"
KEY_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = synth.write_llama(tmp_path_factory.mktemp("llama"), synth.llama_config(),
                               dtype="F32", seed=3)
    return open_checkpoint(folder)


def _raw(folder):
    """The adapter's tensors as float32 by full key, read with plain numpy (independent)."""
    data = (folder / "adapter_model.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    np_dtype = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
    out = {}
    for key, e in header.items():
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[8 + n + b:8 + n + end], dtype=np_dtype[e["dtype"]])
        out[key] = arr.reshape(e["shape"]).astype(np.float32)
    return out


def test_load_finds_pairs_and_scaling(ckpt, tmp_path):
    adapter = load_lora(write_peft_adapter(tmp_path, ckpt, rank=4, alpha=8), ckpt)
    assert list(adapter.pairs) == [Q0, "model.layers.0.self_attn.v_proj.weight",
                                   "model.layers.1.self_attn.q_proj.weight", V1]
    assert (adapter.rank, adapter.alpha, adapter.scaling, adapter.dtype) == (4, 8.0, 2.0, "F32")
    assert adapter.pairs[Q0].A.shape == (4, 64) and adapter.pairs[Q0].B.shape == (64, 4)
    assert adapter.pairs[V1].B.shape == (32, 4)  # v_proj: kv_heads 2 × head_dim 16


def test_merged_matches_numpy(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt, rank=4, alpha=8, seed=1)
    adapter = load_lora(folder, ckpt)
    raw = _raw(folder)
    merged = merged_weights(ckpt, adapter)
    assert set(merged) == set(adapter.pairs)
    for target in merged:
        module = "base_model.model." + target[: -len(".weight")]
        want = ckpt.read(target) + (8 / 4) * (raw[module + ".lora_B.weight"]
                                              @ raw[module + ".lora_A.weight"])
        np.testing.assert_allclose(merged[target], want, rtol=0, atol=1e-6)
        assert np.abs(merged[target] - ckpt.read(target)).max() > 1e-2  # adapter matters
    assert adapter.delta("model.layers.0.mlp.up_proj.weight") is None


def test_rslora_scaling(ckpt, tmp_path):
    adapter = load_lora(write_peft_adapter(tmp_path, ckpt, rank=16, alpha=8,
                                           use_rslora=True), ckpt)
    assert adapter.scaling == pytest.approx(8 / math.sqrt(16)) == 2.0
    assert all(p.scaling == 2.0 for p in adapter.pairs.values())
    plain = load_lora(write_peft_adapter(tmp_path / "p", ckpt, rank=16, alpha=8), ckpt)
    assert plain.scaling == 0.5


def test_apply_f32_equals_merged(ckpt, tmp_path):
    adapter = load_lora(write_peft_adapter(tmp_path, ckpt, dtype="F32"), ckpt)
    merged = merged_weights(ckpt, adapter)
    x = np.random.default_rng(7).standard_normal((5, 64)).astype(np.float32)
    for target in adapter.pairs:
        w = ckpt.read(target)
        got = apply_lora(x, target, x @ w.T, adapter)
        np.testing.assert_allclose(got, x @ merged[target].T, rtol=0, atol=1e-5)
    w = ckpt.read("model.layers.0.mlp.up_proj.weight")  # not adapted: unchanged
    np.testing.assert_array_equal(apply_lora(x, "model.layers.0.mlp.up_proj.weight",
                                             x @ w.T, adapter), x @ w.T)


@pytest.mark.parametrize("dtype,eps", [("F16", 2.0 ** -11), ("BF16", 2.0 ** -8)])
def test_apply_half_precision_within_bound(ckpt, tmp_path, dtype, eps):
    """x and the rank-r intermediate are rounded to the adapter's dtype (A, B are exact), so
    the error on the correction is at most ~2·eps relative to |s|·(|x||A|ᵀ)|B|ᵀ; we allow
    3·eps
    plus float32 noise. The merged reference is built from the same stored A and B."""
    adapter = load_lora(write_peft_adapter(tmp_path, ckpt, dtype=dtype), ckpt)
    assert adapter.dtype == dtype
    merged = merged_weights(ckpt, adapter)
    x = np.random.default_rng(8).standard_normal((6, 64)).astype(np.float32)
    worst = 0.0
    for target, pair in adapter.pairs.items():
        got = apply_lora(x, target, x @ ckpt.read(target).T, adapter)
        want = x.astype(np.float64) @ merged[target].T.astype(np.float64)
        bound = pair.scaling * (np.abs(x) @ np.abs(pair.A).T) @ np.abs(pair.B).T
        err = np.abs(got - want)
        assert np.all(err <= 3 * eps * bound + 1e-4)
        worst = max(worst, float((err / (bound + 1e-30)).max()))
    assert worst > eps / 64  # really rounded: the half-precision path is not float32


def test_sram_bytes_counts_elements_times_dtype(ckpt, tmp_path):
    for dtype, size in (("F32", 4), ("F16", 2), ("BF16", 2)):
        adapter = load_lora(write_peft_adapter(tmp_path / dtype, ckpt, rank=8, dtype=dtype),
                            ckpt)
        # q_proj 8·(64+64) + v_proj 8·(64+32) per layer, 2 layers
        assert adapter.sram_bytes() == 2 * (8 * 128 + 8 * 96) * size


def test_all_linear_and_regex_targets(ckpt, tmp_path):
    all_lin = load_lora(write_peft_adapter(tmp_path / "a", ckpt, targets="all-linear",
                                           config_overrides={"target_modules": "all-linear"}),
                        ckpt)
    assert len(all_lin.pairs) == 2 * 7 and "lm_head.weight" not in all_lin.pairs
    regex = r".*\.layers\.1\.mlp\.(up|down)_proj"
    rx = load_lora(write_peft_adapter(tmp_path / "r", ckpt, targets=regex), ckpt)
    assert list(rx.pairs) == ["model.layers.1.mlp.up_proj.weight",
                              "model.layers.1.mlp.down_proj.weight"]


def test_llamamodel_naming_resolves(tmp_path):
    """An adapter saved on LlamaForCausalLM ("model.layers…") applies to a checkpoint whose
    names are LlamaModel-style ("layers…"), and the other way round."""
    cfg = synth.llama_config(layers=1)
    tensors = {k[len("model."):] if k.startswith("model.") else k: v
               for k, v in synth._init(synth.llama_shapes(cfg), "llama", 0).items()
               if k != "lm_head.weight"}
    (tmp_path / "m").mkdir()
    synth.write_safetensors(tmp_path / "m" / "model.safetensors", tensors, "F32")
    bare = open_checkpoint(tmp_path / "m")
    adapter = load_lora(write_peft_adapter(tmp_path / "a", cfg), bare)
    assert list(adapter.pairs) == ["layers.0.self_attn.q_proj.weight",
                                   "layers.0.self_attn.v_proj.weight"]
    full = open_checkpoint(synth.write_llama(tmp_path / "f", cfg, dtype="F32"))
    back = load_lora(write_peft_adapter(tmp_path / "b", bare), full)
    assert "model.layers.0.self_attn.q_proj.weight" in back.pairs


def test_rank_pattern_per_module(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt, rank=4)
    # rewrite v_proj's pair at rank 2 and say so with rank_pattern + alpha_pattern
    raw = _raw(folder)
    for key in list(raw):
        if "v_proj" in key:
            raw[key] = raw[key][:2] if "lora_A" in key else raw[key][:, :2]
    synth.write_safetensors(folder / "adapter_model.safetensors", raw, "F32")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 1})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    adapter = load_lora(folder, ckpt)
    assert adapter.pairs[V1].rank == 2 and adapter.pairs[V1].scaling == 0.5
    assert adapter.pairs[Q0].rank == 4 and adapter.pairs[Q0].scaling == 2.0


def test_header_only_read(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt, dtype="BF16")
    cfg, header = read_adapter_files(folder)
    assert cfg["r"] == 4 and len(header.tensors) == 8
    assert {t.dtype for t in header.tensors.values()} == {"BF16"}
    assert adapter_sram_bytes(folder) == (2 * (4 * 128 + 4 * 96) * 2, "BF16")
    assert adapter_sram_bytes(folder)[0] == load_lora(folder, ckpt).sram_bytes()


def test_deterministic_bytes(ckpt, tmp_path):
    a = write_peft_adapter(tmp_path / "a", ckpt, seed=5)
    b = write_peft_adapter(tmp_path / "b", ckpt, seed=5)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


# ---- errors: one line, naming the file and the key or tensor -------------------------------

def _edit_config(folder, **changes):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def test_missing_config(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(ModelError, match=r"^.*adapter_config\.json: missing: a PEFT adapter "
                                         r"folder needs adapter_config\.json$"):
        load_lora(folder, ckpt)


def test_missing_weights_hints_bin(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt)
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(ModelError, match=r"^.*adapter_model\.safetensors: missing: .*"
                                         r"safe_serialization=True\)$"):
        load_lora(folder, ckpt)


@pytest.mark.parametrize("change,pattern", [
    ({"peft_type": "IA3"}, r"peft_type must be 'LORA', not 'IA3'"),
    ({"fan_in_fan_out": True}, r"fan_in_fan_out must be false .*, not True"),
    ({"bias": "all"}, r"bias must be 'none' .*, not 'all'"),
    ({"use_dora": True}, r"use_dora must be empty or false \(DoRA .*\), not True"),
    ({"modules_to_save": ["lm_head"]}, r"modules_to_save must be empty or false .*"),
    ({"r": 0}, r"r must be a positive integer, not 0"),
    ({"target_modules": 3}, r"target_modules must be a list of names or a regex string, not 3"),
    ({"target_modules": "q_proj("}, r"target_modules 'q_proj\(' is not a valid regex \(.*\)"),
    ({"rank_pattern": {"q_proj": 2.5}}, r"rank_pattern must map module patterns to positive "
                                        r"integers, not \{'q_proj': 2\.5\}"),
])
def test_bad_config(ckpt, tmp_path, change, pattern):
    folder = _edit_config(write_peft_adapter(tmp_path, ckpt), **change)
    with pytest.raises(ModelError, match=r"^" + re.escape(str(folder / "adapter_config.json"))
                       + r": " + pattern + r"$"):
        load_lora(folder, ckpt)


def test_target_not_in_model(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt)
    raw = _raw(folder)
    raw["base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight"] = raw[KEY_A]
    raw["base_model.model.model.layers.5.self_attn.q_proj.lora_B.weight"] = raw[
        KEY_A.replace("lora_A", "lora_B")]
    synth.write_safetensors(folder / "adapter_model.safetensors", raw, "F32")
    with pytest.raises(ModelError, match=r"^.*adapter_model\.safetensors: tensor "
                       r"'base_model\.model\.model\.layers\.5\.self_attn\.q_proj\.lora_A\.weight'"
                       r": target 'model\.layers\.5\.self_attn\.q_proj\.weight' is not in the "
                       r"model \(.*\)$"):
        load_lora(folder, ckpt)


def test_target_modules_match_nothing(ckpt, tmp_path):
    folder = _edit_config(write_peft_adapter(tmp_path, ckpt), target_modules=["c_attn"])
    with pytest.raises(ModelError, match=r"^.*adapter_config\.json: target_modules \['c_attn'\]"
                                         r" match no Linear layer of the model .*$"):
        load_lora(folder, ckpt)


def test_untargeted_pair_and_missing_pair(ckpt, tmp_path):
    folder = _edit_config(write_peft_adapter(tmp_path / "u", ckpt), target_modules=["q_proj"])
    with pytest.raises(ModelError, match=r"^.*: tensor '.*v_proj\.lora_A\.weight' adapts "
                                         r"'model\.layers\.0\.self_attn\.v_proj\.weight', "
                                         r"which target_modules \['q_proj'\] does not select$"):
        load_lora(folder, ckpt)
    folder = _edit_config(write_peft_adapter(tmp_path / "m", ckpt),
                          target_modules=["q_proj", "v_proj", "k_proj"])
    with pytest.raises(ModelError, match=r"^.*: target_modules .* select "
                                         r"'model\.layers\.0\.self_attn\.k_proj\.weight' but "
                                         r"the adapter has no lora_A/lora_B for it "
                                         r"\(2 missing\)$"):
        load_lora(folder, ckpt)


def test_shape_mismatch_names_tensor(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt)
    raw = _raw(folder)
    raw[KEY_A] = raw[KEY_A][:, :32]
    synth.write_safetensors(folder / "adapter_model.safetensors", raw, "F32")
    with pytest.raises(ModelError, match=r"^.*: tensor " + re.escape(repr(KEY_A)) +
                       r" shape must be \[r, in_features=64\] for "
                       r"model\.layers\.0\.self_attn\.q_proj\.weight, not \[4, 32\]$"):
        load_lora(folder, ckpt)


def test_rank_disagrees_with_config(ckpt, tmp_path):
    folder = _edit_config(write_peft_adapter(tmp_path, ckpt, rank=4), r=8)
    with pytest.raises(ModelError, match=r"^.*adapter_model\.safetensors: tensor "
                                         r"'base_model\.model\.model\.layers\.0\.self_attn\."
                                         r"q_proj\.lora_A\.weight' has rank 4, but "
                                         r"adapter_config\.json r says 8$"):
        load_lora(folder, ckpt)


def test_unpaired_and_foreign_tensors(ckpt, tmp_path):
    folder = write_peft_adapter(tmp_path, ckpt)
    raw = _raw(folder)
    del raw[KEY_A]
    synth.write_safetensors(folder / "adapter_model.safetensors", raw, "F32")
    with pytest.raises(ModelError, match=r"^.*: tensor .*q_proj\.lora_B\.weight has no "
                                         r"matching lora_A\.weight$"):
        load_lora(folder, ckpt)
    raw = _raw(write_peft_adapter(tmp_path / "f", ckpt))
    raw["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = \
        np.ones(64, np.float32)
    synth.write_safetensors(tmp_path / "f" / "adapter_model.safetensors", raw, "F32")
    with pytest.raises(ModelError, match=r"^.*: tensor '.*lora_magnitude_vector' is not a "
                                         r"LoRA weight \(expected .*\)$"):
        load_lora(tmp_path / "f", ckpt)


def test_apply_shape_error(ckpt, tmp_path):
    adapter = load_lora(write_peft_adapter(tmp_path, ckpt), ckpt)
    with pytest.raises(ModelError, match=r"^apply_lora model\.layers\.1\.self_attn\.v_proj"
                                         r"\.weight: x must be \[\.\.\., 64\] .*$"):
        apply_lora(np.zeros((2, 32), np.float32), V1, np.zeros((2, 32), np.float32), adapter)


def test_apply_bf16_rounds_input_and_intermediate(ckpt, tmp_path):
    """The documented chip path, bit for bit: x and x·Aᵀ rounded to bfloat16, float32 sums."""
    adapter = load_lora(write_peft_adapter(tmp_path, ckpt, dtype="BF16"), ckpt)
    pair = adapter.pairs[Q0]
    x = np.random.default_rng(9).standard_normal((3, 64)).astype(np.float32)
    base = np.zeros((3, 64), np.float32)

    def bf16(v):
        return v.astype(ml_dtypes.bfloat16).astype(np.float32)

    want = np.float32(pair.scaling) * (bf16(bf16(x) @ pair.A.T) @ pair.B.T)
    np.testing.assert_array_equal(apply_lora(x, Q0, base, adapter), want)
    assert np.array_equal(pair.A, bf16(pair.A))  # the stored values are bfloat16-exact


def test_bert_default_targets(tmp_path):
    ckpt = open_checkpoint(synth.write_bert(tmp_path / "b", synth.bert_config(), dtype="F32"))
    folder = write_peft_adapter(tmp_path / "a", ckpt, targets=("query", "value"),
                                config_overrides={"target_modules": None})
    adapter = load_lora(folder, ckpt)
    assert list(adapter.pairs) == [f"encoder.layer.{i}.attention.self.{m}.weight"
                                   for i in range(2) for m in ("query", "value")]
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    merged = merged_weights(ckpt, adapter)
    t = "encoder.layer.1.attention.self.value.weight"
    np.testing.assert_allclose(apply_lora(x, t, x @ ckpt.read(t).T, adapter),
                               x @ merged[t].T, rtol=0, atol=1e-5)
