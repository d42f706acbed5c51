"""open_checkpoint: folders, shards, config.json checks, architecture, dataflow order."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from safetensors.numpy import save_file

from taalasc.errors import ModelError
from taalasc.model import Checkpoint, dataflow_order, open_checkpoint
from taalasc.model.synth import (
    bert_config,
    bert_shapes,
    llama_config,
    llama_shapes,
    write_bert,
    write_llama,
)


def _index(folder, weight_map):
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))


def _save(path, names):
    save_file({n: np.full(2, i, np.float32) for i, n in enumerate(names)}, str(path))


# --- opening ---------------------------------------------------------------------------------

def test_single_file_folder_and_file_path_agree(tmp_path):
    folder = write_llama(tmp_path / "m", llama_config(), dtype="F32")
    by_folder = open_checkpoint(folder)
    by_file = open_checkpoint(folder / "model.safetensors")
    assert isinstance(by_folder, Checkpoint)
    assert by_folder.path == folder and by_file.path == folder / "model.safetensors"
    assert by_folder.tensors == by_file.tensors
    assert by_folder.architecture == "llama" and by_folder.config["hidden_size"] == 64
    assert by_folder.param_count == sum(int(np.prod(s)) for s in llama_shapes(
        llama_config()).values())


def test_sharded_equals_unsharded(tmp_path):
    cfg = llama_config(layers=3)
    one = open_checkpoint(write_llama(tmp_path / "one", cfg, dtype="F16"))
    many = open_checkpoint(write_llama(tmp_path / "many", cfg, dtype="F16", shards=3))
    assert [f.name for f in many.files] == [f"model-0000{i}-of-00003.safetensors"
                                           for i in (1, 2, 3)]
    assert list(one.tensors) == list(many.tensors)
    for name in one.tensors:
        np.testing.assert_array_equal(one.read(name), many.read(name))
    via_index = open_checkpoint(tmp_path / "many" / "model.safetensors.index.json")
    assert via_index.tensors == many.tensors


def test_tied_embeddings_have_no_lm_head(tmp_path):
    ckpt = open_checkpoint(write_llama(tmp_path, llama_config(tie_embeddings=True)))
    assert "lm_head.weight" not in ckpt.tensors
    assert ckpt.summary()["tied"] is True
    assert list(ckpt.tensors)[-1] == "model.norm.weight"


def test_untied_without_lm_head_is_an_error(tmp_path):
    folder = write_llama(tmp_path, llama_config(tie_embeddings=True))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"^.*config\.json: tie_word_embeddings is false but "
                                         r"the checkpoint has no 'lm_head\.weight' tensor$"):
        open_checkpoint(folder)


def test_bert_biases_and_values(tmp_path):
    ckpt = open_checkpoint(write_bert(tmp_path, bert_config(), dtype="F32"))
    assert ckpt.architecture == "bert"
    assert set(ckpt.tensors) == set(bert_shapes(bert_config()))
    bias = ckpt.read("encoder.layer.1.attention.self.query.bias")
    assert bias.shape == (64,) and 0 < np.abs(bias).max() < 0.2
    ln = ckpt.read("embeddings.LayerNorm.weight")
    assert abs(float(ln.mean()) - 1.0) < 0.05
    assert ckpt.layer_of("encoder.layer.1.output.dense.weight") == 1
    assert ckpt.layer_of("pooler.dense.weight") is None


def test_unknown_tensor_name_suggests(tmp_path):
    ckpt = open_checkpoint(write_llama(tmp_path, llama_config()))
    with pytest.raises(ModelError, match=r"no tensor named 'model\.norm\.weights' "
                                         r"\(did you mean 'model\.norm\.weight'\?\)$"):
        ckpt.read("model.norm.weights")


def test_folder_with_several_files_and_no_index(tmp_path):
    _save(tmp_path / "b.safetensors", ["x"])
    _save(tmp_path / "a.safetensors", ["y"])
    with pytest.raises(ModelError, match=r"^.*: folder has 2 \.safetensors files and no "
                                         r"model\.safetensors\.index\.json: a\.safetensors, "
                                         r"b\.safetensors$"):
        open_checkpoint(tmp_path)


def test_folder_with_exactly_one_other_file(tmp_path):
    _save(tmp_path / "weights.safetensors", ["x", "y"])
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.architecture == "generic" and ckpt.config is None
    assert ckpt.files == [tmp_path / "weights.safetensors"]


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(ModelError, match=r"^.*: folder has no model\.safetensors\.index\.json "
                                         r"and no \.safetensors file$"):
        open_checkpoint(tmp_path)
    with pytest.raises(ModelError, match=r"^.*nothing: no such file or folder$"):
        open_checkpoint(tmp_path / "nothing")


# --- sharded index errors ----------------------------------------------------------------------

def test_index_missing_shard(tmp_path):
    _save(tmp_path / "s1.safetensors", ["a"])
    _index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(ModelError, match=r"^.*model\.safetensors\.index\.json: shard file "
                                         r"'s2\.safetensors' is missing \(named for tensor "
                                         r"'b'\)$"):
        open_checkpoint(tmp_path)


def test_index_tensor_not_in_its_shard(tmp_path):
    _save(tmp_path / "s1.safetensors", ["a"])
    _index(tmp_path, {"a": "s1.safetensors", "ghost": "s1.safetensors"})
    with pytest.raises(ModelError, match=r"^.*index\.json: tensor 'ghost' is mapped to "
                                         r"'s1\.safetensors' but that shard does not "
                                         r"contain it$"):
        open_checkpoint(tmp_path)


def test_index_tensor_in_two_shards(tmp_path):
    _save(tmp_path / "s1.safetensors", ["a", "b"])
    _save(tmp_path / "s2.safetensors", ["b"])
    _index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(ModelError, match=r"^.*index\.json: tensor 'b' is (in two shards, "
                                         r"'s1\.safetensors' and 's2\.safetensors'|stored in "
                                         r"shard 's1\.safetensors' but mapped to "
                                         r"'s2\.safetensors')$"):
        open_checkpoint(tmp_path)


def test_index_tensor_not_listed(tmp_path):
    _save(tmp_path / "s1.safetensors", ["a", "extra"])
    _index(tmp_path, {"a": "s1.safetensors"})
    with pytest.raises(ModelError, match=r"^.*index\.json: tensor 'extra' is stored in shard "
                                         r"'s1\.safetensors' but not listed in the "
                                         r"weight_map$"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "sub/../../x.safetensors",
                                 "C:\\x.safetensors", "..\\x.safetensors"])
def test_index_path_traversal_refused(tmp_path, bad):
    outside = tmp_path / "x.safetensors"
    _save(outside, ["a"])
    folder = tmp_path / "m"
    folder.mkdir()
    _index(folder, {"a": bad})
    with pytest.raises(ModelError, match=r"^.*index\.json: weight_map file .* must stay "
                                         r"inside the index's folder$"):
        open_checkpoint(folder)


@pytest.mark.parametrize("doc,pattern", [
    ("[]", r"index must be a JSON object with a 'weight_map' object$"),
    ('{"weight_map": {}}', r"weight_map is empty$"),
    ('{"weight_map": {"a": 3}}', r"weight_map file names must be non-empty strings, not 3$"),
    ('{"weight_map": {"a": "s", "a": "t"}}', r"index is not valid JSON: duplicate key 'a'"),
    ("{", r"index is not valid JSON: "),
])
def test_index_malformed(tmp_path, doc, pattern):
    (tmp_path / "model.safetensors.index.json").write_text(doc)
    with pytest.raises(ModelError, match=r"^.*index\.json: " + pattern):
        open_checkpoint(tmp_path)


# --- config.json ---------------------------------------------------------------------------------

def _with_config(tmp_path, **changes):
    folder = write_llama(tmp_path, llama_config(), dtype="F32")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("changes,pattern", [
    ({"hidden_size": 4096, "head_dim": 16},
     r"hidden_size 4096 disagrees with tensor 'model\.embed_tokens\.weight' of shape "
     r"\[256, 64\] \(axis 1 should be 4096\)$"),
    ({"vocab_size": 32000}, r"vocab_size 32000 disagrees with tensor "
                            r"'model\.embed_tokens\.weight'"),
    ({"num_hidden_layers": 3}, r"num_hidden_layers is 3 but the checkpoint has layers "
                               r"2 \(indices 0\.\.1\)$"),
    ({"num_key_value_heads": 4}, r"num_key_value_heads 4 x head_dim 16 disagrees with tensor "
                                 r"'model\.layers\.0\.self_attn\.k_proj\.weight'"),
    ({"intermediate_size": 256}, r"intermediate_size 256 disagrees with tensor "
                                 r"'model\.layers\.0\.mlp\.gate_proj\.weight'"),
    ({"hidden_size": "64"}, r"hidden_size must be a positive integer, not '64'$"),
    ({"num_attention_heads": 3}, r"num_attention_heads 3 must be a multiple of "
                                 r"num_key_value_heads 2$"),
    ({"model_type": "bert", "architectures": ["BertModel"]},
     r"model_type says bert but the tensor names are llama names \(e\.g\. "
     r"'model\.layers\.0\.self_attn\.k_proj\.weight'\)$"),
])
def test_config_disagreements(tmp_path, changes, pattern):
    folder = _with_config(tmp_path, **changes)
    with pytest.raises(ModelError, match=r"^.*config\.json: " + pattern):
        open_checkpoint(folder)


@pytest.mark.parametrize("text,pattern", [
    ("{oops", r"config\.json is not valid JSON: "),
    ("[1]", r"config\.json must be a JSON object, not list$"),
])
def test_config_malformed(tmp_path, text, pattern):
    folder = write_llama(tmp_path, llama_config())
    (folder / "config.json").write_text(text)
    with pytest.raises(ModelError, match=r"^.*config\.json: " + pattern):
        open_checkpoint(folder)


@pytest.mark.parametrize("model_type", ["mistral", "qwen2"])
def test_llama_family_model_types(tmp_path, model_type):
    folder = _with_config(tmp_path, model_type=model_type, architectures=["X"])
    assert open_checkpoint(folder).architecture == "llama"


def test_architecture_from_names_without_config(tmp_path):
    llama = write_llama(tmp_path / "l", llama_config())
    (llama / "config.json").unlink()
    ckpt = open_checkpoint(llama)
    assert ckpt.architecture == "llama" and ckpt.config is None
    assert ckpt.summary() == {"hidden": 64, "layers": 2, "heads": None, "kv_heads": None,
                              "intermediate": None, "vocab": 256, "tied": False}
    bert = write_bert(tmp_path / "b", bert_config())
    (bert / "config.json").unlink()
    assert open_checkpoint(bert).architecture == "bert"
    prefixed = tmp_path / "p.safetensors"
    _save(prefixed, ["bert.encoder.layer.0.attention.self.query.weight"])
    assert open_checkpoint(prefixed).architecture == "bert"


# --- dataflow order ------------------------------------------------------------------------

def test_llama_dataflow_order_any_input_order():
    names = list(llama_shapes(llama_config(layers=12)))
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    order = dataflow_order(shuffled, "llama")
    assert order == names  # llama_shapes lists them in computation order
    assert order.index("model.layers.10.input_layernorm.weight") > order.index(
        "model.layers.9.mlp.down_proj.weight")
    assert order[-2:] == ["model.norm.weight", "lm_head.weight"]


def test_bert_dataflow_order():
    order = dataflow_order(reversed(list(bert_shapes(bert_config(layers=1)))), "bert")
    layer = [n.removeprefix("encoder.layer.0.") for n in order if n.startswith("encoder")]
    assert layer == [
        "attention.self.query.weight", "attention.self.query.bias",
        "attention.self.key.weight", "attention.self.key.bias",
        "attention.self.value.weight", "attention.self.value.bias",
        "attention.output.dense.weight", "attention.output.dense.bias",
        "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
        "intermediate.dense.weight", "intermediate.dense.bias",
        "output.dense.weight", "output.dense.bias",
        "output.LayerNorm.weight", "output.LayerNorm.bias"]
    assert order[0] == "embeddings.word_embeddings.weight"
    assert order[-2:] == ["pooler.dense.weight", "pooler.dense.bias"]


def test_unknown_tensors_last_naturally_sorted():
    names = ["zz.2", "zz.10", "model.layers.0.self_attn.rotary_emb.inv_freq",
             "model.layers.0.input_layernorm.weight", "model.embed_tokens.weight",
             "lm_head.weight"]
    assert dataflow_order(names, "llama") == [
        "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.rotary_emb.inv_freq", "lm_head.weight", "zz.2", "zz.10"]
    with pytest.raises(ModelError, match=r"^architecture must be one of llama, bert, generic, "
                                         r"not 'gpt'$"):
        dataflow_order(names, "gpt")


def test_checkpoint_tensors_are_in_dataflow_order(tmp_path):
    ckpt = open_checkpoint(write_llama(tmp_path, llama_config(layers=11), shards=4))
    assert list(ckpt.tensors) == dataflow_order(ckpt.tensors, "llama")
    layers = [ckpt.layer_of(n) for n in ckpt.tensors]
    assert [x for x in layers if x is not None] == sorted(x for x in layers if x is not None)


def test_generic_gpt2_style_order():
    names = ["transformer.ln_f.weight", "transformer.h.1.attn.c_attn.weight",
             "transformer.h.0.mlp.c_fc.weight", "transformer.wpe.weight",
             "transformer.wte.weight", "lm_head.weight", "transformer.h.0.attn.c_attn.weight"]
    assert dataflow_order(names, "generic") == [
        "transformer.wte.weight", "transformer.wpe.weight",
        "transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.1.attn.c_attn.weight", "transformer.ln_f.weight", "lm_head.weight"]
