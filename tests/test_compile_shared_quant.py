"""A tensor that several dies hold is quantized once (compile._quantize_shared), and the
mask set is byte-identical to every die quantizing it itself (issue 17: an 8 B model's
embedding and lm_head span ~80 dies each)."""

from __future__ import annotations

import importlib
from collections import Counter

import pytest

from taalasc.compile import CompileOptions, compile_model
from taalasc.model.synth import llama_config, write_llama
from taalasc.quant.method import TensorQuantizer

compile_mod = importlib.import_module("taalasc.compile")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # 3 sky130-demo dies at 4 bits; the MLP and embedding matrices span two dies each
    return write_llama(tmp_path_factory.mktemp("shared") / "model",
                       llama_config(hidden=96, layers=2, heads=4, kv_heads=2, intermediate=256,
                                    vocab=512), dtype="BF16")


def _compile(model, out, monkeypatch, share: bool):
    calls = Counter()
    original = TensorQuantizer.__call__

    def counted(self, name, spec):
        calls[name] += 1
        return original(self, name, spec)

    monkeypatch.setattr(TensorQuantizer, "__call__", counted)
    if not share:
        monkeypatch.setattr(compile_mod, "_quantize_shared", lambda *a, **k: ({}, None))
    result = compile_model(model, out, CompileOptions())
    monkeypatch.undo()
    return result, calls


def test_shared_tensors_are_quantized_once_and_the_bytes_do_not_change(model, tmp_path,
                                                                       monkeypatch):
    shared, once = _compile(model, tmp_path / "shared", monkeypatch, share=True)
    alone, each = _compile(model, tmp_path / "alone", monkeypatch, share=False)
    assert len(shared.manifest["dies"]) == 3
    spanning = {n for n, k in each.items() if k > 1}
    assert spanning and set(once.values()) == {1}   # without sharing some run twice or more
    assert (tmp_path / "shared" / "manifest.json").read_bytes() \
        == (tmp_path / "alone" / "manifest.json").read_bytes()
    for path in shared.mask_files:
        assert path.read_bytes() == (tmp_path / "alone" / path.name).read_bytes()
    assert not any(p.name == compile_mod.SHARED_DIR for p in (tmp_path / "shared").iterdir())
