"""LoRA SRAM fit: bytes for a rank on given targets, against the sky130-demo base array."""

from __future__ import annotations

import pytest

from taalasc.config import load_base_array
from taalasc.errors import ModelError
from taalasc.lora import load_lora, lora_fits, target_shapes, write_peft_adapter
from taalasc.model import open_checkpoint, synth


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return open_checkpoint(synth.write_demo(tmp_path_factory.mktemp("demo")))


def test_hand_computed():
    shapes = {"q": (4096, 4096), "v": (1024, 4096)}
    # rank 16: 16·(4096+4096) + 16·(1024+4096) = 131072 + 81920 = 212992 values
    assert lora_fits(16, shapes, 2, 425_984) == (True, 425_984)
    assert lora_fits(16, shapes, 2, 425_983) == (False, 425_984)
    assert lora_fits(16, shapes, 0.5, 10**9) == (True, 106_496)  # 4-bit adapter
    assert lora_fits(1, {"x": (3, 2)}, 0.375, 2) == (True, 2)  # 5 × 3/8 = 1.875 → 2 bytes


def test_demo_targets_and_sky130_sram(demo):
    shapes = target_shapes(demo)
    assert shapes == {f"model.layers.{i}.self_attn.{p}_proj.weight": s
                      for i in range(2) for p, s in (("q", (64, 64)), ("v", (32, 64)))}
    sram = load_base_array("sky130-demo").sram_bytes("lora")
    assert sram == 16384
    # per layer: r·(64+64) + r·(32+64) = 224·r values; 2 layers → 448·r
    assert lora_fits(4, shapes, 4, sram) == (True, 7168)
    assert lora_fits(16, shapes, 4, sram) == (False, 28672)
    assert lora_fits(16, shapes, 2, sram) == (True, 14336)
    assert lora_fits(19, shapes, 2, sram) == (False, 17024)


def test_loaded_adapter_agrees_with_estimate(demo, tmp_path):
    for dtype, size in (("F32", 4), ("BF16", 2)):
        adapter = load_lora(write_peft_adapter(tmp_path / dtype, demo, rank=8, dtype=dtype),
                            demo)
        assert lora_fits(8, target_shapes(demo), size, 0)[1] == adapter.sram_bytes()


def test_all_linear_shapes(demo):
    shapes = target_shapes(demo, "all-linear")
    assert len(shapes) == 14 and "lm_head.weight" not in shapes
    assert "model.embed_tokens.weight" not in shapes


@pytest.mark.parametrize("rank", [0, -1, 2.5, True])
def test_bad_rank(rank):
    with pytest.raises(ModelError, match=r"^LoRA rank must be a positive integer, not .*$"):
        lora_fits(rank, {"x": (2, 2)}, 2, 100)


def test_no_match(demo):
    with pytest.raises(ModelError, match=r"^.*: LoRA targets \('c_attn',\) match no Linear "
                                         r"layer$"):
        target_shapes(demo, ("c_attn",))
