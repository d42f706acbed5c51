"""Synthetic checkpoints (determinism, independent reader) and `taalasc inspect`."""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors import safe_open

from taalasc.commands.inspect import inspect_cmd
from taalasc.errors import ModelError
from taalasc.model import open_checkpoint
from taalasc.model.synth import (
    bert_config,
    llama_config,
    write_bert,
    write_demo,
    write_llama,
)

# sha256 of the demo model.safetensors. If this changes, the demo changed: every golden file
# downstream changes with it. Regenerate deliberately with:
#   python -c "from taalasc.model.synth import write_demo; write_demo('/tmp/demo')"
#   sha256sum /tmp/demo/model.safetensors
DEMO_SHA256 = "9940a20be4161094c02a85556d1b2807d44116de4c646020414f0d1ae872c107"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_is_byte_identical(tmp_path):
    a, b = write_demo(tmp_path / "a"), write_demo(tmp_path / "b")
    for name in ("model.safetensors", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert _sha(a / "model.safetensors") == DEMO_SHA256
    ckpt = open_checkpoint(a)
    assert ckpt.summary() == {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2,
                              "intermediate": 128, "vocab": 256, "tied": False}
    assert {t.dtype for t in ckpt.tensors.values()} == {"BF16"}
    assert ckpt.config["torch_dtype"] == "bfloat16"


def test_seed_changes_values(tmp_path):
    a = write_llama(tmp_path / "a", llama_config(), seed=0)
    b = write_llama(tmp_path / "b", llama_config(), seed=1)
    assert _sha(a / "model.safetensors") != _sha(b / "model.safetensors")


def test_independent_reader_agrees(tmp_path):
    folder = write_bert(tmp_path, bert_config(), dtype="F32", shards=2)
    ckpt = open_checkpoint(folder)
    seen = 0
    for shard in ckpt.files:
        with safe_open(str(shard), framework="numpy") as f:
            assert f.metadata() == {"format": "pt"}
            for name in f.keys():
                np.testing.assert_array_equal(f.get_tensor(name), ckpt.read(name))
                seen += 1
    assert seen == len(ckpt.tensors)


def test_realistic_init(tmp_path):
    ckpt = open_checkpoint(write_llama(tmp_path, llama_config(), dtype="F32"))
    q = ckpt.read("model.layers.0.self_attn.q_proj.weight")
    assert 0.015 < float(q.std()) < 0.025 and abs(float(q.mean())) < 0.005
    norm = ckpt.read("model.norm.weight")
    assert 0.95 < float(norm.mean()) < 1.05 and float(norm.std()) > 0


def test_bad_arguments():
    with pytest.raises(ModelError, match=r"^llama_config: hidden 64 must be a multiple of "
                                         r"heads 3 and heads a multiple of kv_heads 2$"):
        llama_config(heads=3)
    with pytest.raises(ModelError, match=r"^dtype must be one of F32, F16, BF16, not 'F8'$"):
        write_llama("/nonexistent-never-written", llama_config(), dtype="F8")


# --- inspect -------------------------------------------------------------------------------------

def test_inspect_table(tmp_path):
    folder = write_llama(tmp_path, llama_config(), shards=2)
    result = CliRunner().invoke(inspect_cmd, [str(folder)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "model.layers.1.mlp.down_proj.weight" in result.output
    assert "model-00002-of-00002.safetensors" in result.output
    assert "parameters: 106,816 (106.82k), 213,632 bytes in 2 file(s)" in result.output
    assert ("architecture: llama; from config.json: hidden 64, layers 2, heads 4, kv_heads 2, "
            "intermediate 128, vocab 256, tied False") in result.output


def test_inspect_json(tmp_path):
    folder = write_bert(tmp_path, bert_config())
    result = CliRunner().invoke(inspect_cmd, [str(folder), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["architecture"] == "bert" and data["files"] == ["model.safetensors"]
    assert data["param_count"] == sum(t["params"] for t in data["tensors"])
    first = data["tensors"][0]
    assert first == {"name": "embeddings.word_embeddings.weight", "dtype": "F32",
                     "shape": [256, 64], "params": 16384, "file": "model.safetensors",
                     "layer": None}


def test_inspect_error_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"abc")
    result = CliRunner().invoke(inspect_cmd, [str(bad)])
    assert isinstance(result.exception, ModelError)


def test_inspect_reads_headers_only_on_a_huge_sparse_file(tmp_path):
    """A 4 GiB tensor in a sparse file: inspect must not read or allocate its data."""
    n = 1 << 30  # 2**30 F32 values = 4 GiB
    header = json.dumps({"big.weight": {"dtype": "F32", "shape": [1 << 15, 1 << 15],
                                        "data_offsets": [0, 4 * n]},
                         "__metadata__": {"format": "pt"}}).encode()
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + 4 * n)  # sparse: takes no disk space
    tracemalloc.start()
    try:
        result = CliRunner().invoke(inspect_cmd, [str(path), "--json"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["param_count"] == n and data["architecture"] == "generic"
    assert peak < 20 * 1024 * 1024  # header-sized, nowhere near 4 GiB


@pytest.mark.parametrize("shards", [2, 7, 21])
def test_every_shard_is_used(tmp_path, shards):
    ckpt = open_checkpoint(write_llama(tmp_path, llama_config(), shards=shards))
    assert len(ckpt.files) == shards and len(ckpt.tensors) == 21
    with pytest.raises(ModelError, match=r"^shards must be between 1 and 21, not 22$"):
        write_llama(tmp_path / "x", llama_config(), shards=22)


def test_inspect_through_main(tmp_path, monkeypatch, capsys):
    from taalasc import cli
    monkeypatch.setitem(cli.COMMANDS, "inspect",
                        ("taalasc.commands.inspect", "inspect_cmd", "show a checkpoint"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 4) + b"[1] ")
    assert cli.main(["inspect", str(bad)]) == 1
    assert capsys.readouterr().err == f"error: {bad}: header must be a JSON object, not list\n"
    assert cli.main(["inspect", str(write_demo(tmp_path / "demo")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["param_count"] == 106816
