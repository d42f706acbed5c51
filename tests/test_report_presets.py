"""Preset configs reproduce the published parameter counts; estimate needs no weights."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from taalasc.config import load_base_array
from taalasc.errors import ModelError
from taalasc.model.presets import (PUBLISHED_PARAMS, param_count, preset_config, preset_names,
                                   tensor_shapes)
from taalasc.report import estimate, shape_from_checkpoint, shape_from_preset


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_is_exact(name):
    assert param_count(tensor_shapes(preset_config(name))) == PUBLISHED_PARAMS[name]


def test_llama_3_1_8b_count_and_shapes():
    shapes = tensor_shapes(preset_config("llama-3.1-8b"))
    assert param_count(shapes) == 8_030_261_248
    assert shapes["model.layers.31.self_attn.k_proj.weight"] == (1024, 4096)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (4096, 14336)
    assert shapes["lm_head.weight"] == (128256, 4096)


def test_tied_and_biased_variants():
    assert "lm_head.weight" not in tensor_shapes(preset_config("llama-3.2-1b"))
    qwen = tensor_shapes(preset_config("qwen2.5-7b"))
    assert qwen["model.layers.0.self_attn.k_proj.bias"] == (512,)
    assert "model.layers.0.self_attn.o_proj.bias" not in qwen


def test_unknown_preset_suggests_a_name():
    with pytest.raises(ModelError, match=r"^--preset: unknown model 'llama-3.1-8'.*did you mean"):
        preset_config("llama-3.1-8")


def test_presets_are_copies():
    preset_config("llama-3.1-8b")["hidden_size"] = 1
    assert preset_config("llama-3.1-8b")["hidden_size"] == 4096


def test_bad_config_names_the_key():
    with pytest.raises(ModelError, match=r"^config.json: hidden_size must be a positive integer"):
        tensor_shapes({"model_type": "llama", "hidden_size": "4096"})
    with pytest.raises(ModelError, match=r"^config.json: model_type must be one of"):
        tensor_shapes({"model_type": "gpt2"})


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_estimates(name):
    report = estimate(shape_from_preset(name), load_base_array("sky130-demo"), auto=(3, 6, 3.5))
    assert report.value("design__weights__count") == param_count(
        tensor_shapes(preset_config(name)))


def test_405b_estimate_reads_no_weights():
    # no checkpoint exists at all: the preset's shapes are enough
    report = estimate(shape_from_preset("llama-3.1-405b"), load_base_array("sky130-demo"))
    assert report.value("design__weights__count") == 405_853_388_800
    assert report.value("design__die__count") > 1


def test_estimate_from_a_checkpoint_header(tmp_path):
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 100}
    shapes = tensor_shapes(config)
    save_file({n: np.zeros(s, np.float16) for n, s in shapes.items()},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = shape_from_checkpoint(tmp_path)
    assert shape.tensors == dict(sorted(shapes.items()))
    report = estimate(shape, load_base_array("sky130-demo"))
    assert report.value("sram__kv_cache__bytes_per_token") == 2 * 2 * 16 * 1
