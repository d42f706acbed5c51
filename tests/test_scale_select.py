"""--layers: a sub-model with the full model's codes; the selection syntax. (--die: see
test_scale_parallel.py, which shares its full compile.)"""

from __future__ import annotations

import numpy as np
import pytest

from taalasc.compile import CompileOptions, compile_model
from taalasc.dieworker import parse_index_set, select_layers
from taalasc.errors import ModelError
from taalasc.model import open_checkpoint
from taalasc.model.synth import llama_config, write_llama

OPTIONS = CompileOptions(base="sky130-demo", formats=("gds",))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sel") / "model"
    write_llama(path, llama_config(hidden=64, layers=2, heads=4, kv_heads=2,
                                   intermediate=192, vocab=512), seed=5)
    return path


def test_parse_index_set():
    assert parse_index_set("0-3,7", "--die") == (0, 1, 2, 3, 7)
    assert parse_index_set("2", "--die") == (2,)
    with pytest.raises(ModelError, match=r"^--die: each item must be N or A-B, not 'x'"):
        parse_index_set("1,x", "--die")
    with pytest.raises(ModelError, match=r"^--die: range '3-1' must run upwards"):
        parse_index_set("3-1", "--die")


def test_select_layers_syntax(model):
    ckpt = open_checkpoint(model)
    block0 = select_layers(ckpt, "0")
    assert block0 and all(ckpt.layer_of(n) == 0 for n in block0)
    assert select_layers(ckpt, "embed") == ["model.embed_tokens.weight"]
    assert set(select_layers(ckpt, "head")) == {"model.norm.weight", "lm_head.weight"}
    assert select_layers(ckpt, "embed,0-1,head") == list(ckpt.tensors)
    with pytest.raises(ModelError, match=r"^--layers: layer 5 must be one of the model's "
                                         r"blocks \(0-1\), not 5$"):
        select_layers(ckpt, "0,5")


def test_layers_compile_is_a_sub_model_with_the_full_models_codes(model, tmp_path):
    from taalasc.extract.extract import extract
    from taalasc.quant import QuantSpec, quantize_tensor

    result = compile_model(model, tmp_path / "l1", CompileOptions(
        base="sky130-demo", formats=("gds",), layers="1"))
    ckpt = open_checkpoint(model)
    chosen = select_layers(ckpt, "1")
    assert sorted(result.manifest["quantization"]) == sorted(
        n for n in chosen if len(ckpt.tensors[n].shape) == 2)
    assert result.manifest["selection"]["layers"] == "1"
    extracted = extract(tmp_path / "l1", "gds")
    assert sorted(extracted.codes) == sorted(result.manifest["quantization"])
    for name, q in result.manifest["quantization"].items():
        want = quantize_tensor(name, ckpt.read(name), QuantSpec(q["bits"], q["group_size"]))
        np.testing.assert_array_equal(extracted.codes[name], want.codes)
    assert extracted.defect_count == 0
