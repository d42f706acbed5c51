"""Make the example pictures in docs/img/ (run from the repository root):

    python docs/tools/docs_pictures.py

overview-smollm2.png   the overview of SmolLM2-135M's shapes (4-bit, group 32) on sky130-reticle
overview-195-dies.png  the overview of Llama-3.2-1B's shapes on sky130-reticle: 195 dies
die-map.png            one die of the SmolLM2 placement
diff-heatmap.png       taalasc diff of the demo model and a copy with three weights flipped
sweep.png              taalasc estimate --preset llama-3.2-1b --sweep-base … --sweep-bits 3,4,8

Placements are planned from tensor shapes alone (no weights); the heat map compiles the demo.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from taalasc.config import load_base_array
from taalasc.place import TensorSpec, plan_placement
from taalasc.place.overview import die_map_png, overview_png

OUT = Path("docs/img")


def llama(hidden, layers, heads, kv, inter, vocab, bits=4, group=32):
    """TensorSpecs of a Llama-shaped model in dataflow order."""
    hd = hidden // heads
    t = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), bits, group, None)]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [TensorSpec(p + "input_layernorm.weight", (hidden,), None, None, i),
              TensorSpec(p + "self_attn.q_proj.weight", (heads * hd, hidden), bits, group, i),
              TensorSpec(p + "self_attn.k_proj.weight", (kv * hd, hidden), bits, group, i),
              TensorSpec(p + "self_attn.v_proj.weight", (kv * hd, hidden), bits, group, i),
              TensorSpec(p + "self_attn.o_proj.weight", (hidden, heads * hd), bits, group, i),
              TensorSpec(p + "post_attention_layernorm.weight", (hidden,), None, None, i),
              TensorSpec(p + "mlp.gate_proj.weight", (inter, hidden), bits, group, i),
              TensorSpec(p + "mlp.up_proj.weight", (inter, hidden), bits, group, i),
              TensorSpec(p + "mlp.down_proj.weight", (hidden, inter), bits, group, i)]
    t.append(TensorSpec("model.norm.weight", (hidden,), None, None, None))
    t.append(TensorSpec("lm_head.weight", (vocab, hidden), bits, group, None))
    return t


def heatmap(path: Path) -> None:
    from taalasc.compile import CompileOptions, compile_model
    from taalasc.diff import diff_masks, write_heatmap
    from taalasc.model import open_checkpoint
    from taalasc.model.synth import write_demo, write_safetensors

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo(root / "a")
        ckpt = open_checkpoint(root / "a")
        tensors = {name: ckpt.read(name) for name in ckpt.tensors}
        down = tensors["model.layers.1.mlp.down_proj.weight"]
        for r, c in ((3, 5), (40, 100), (63, 17)):
            down[r, c] = -down[r, c]
        (root / "b").mkdir()
        for f in (root / "a").iterdir():
            if f.suffix != ".safetensors":
                (root / "b" / f.name).write_bytes(f.read_bytes())
        write_safetensors(root / "b" / "model.safetensors", tensors, "BF16")
        for name in ("a", "b"):
            compile_model(root / name, root / f"masks_{name}", CompileOptions())
        write_heatmap(diff_masks(root / "masks_a", root / "masks_b"), path)


def sweep(path: Path) -> None:
    from taalasc.report.shape import shape_from_preset
    from taalasc.report.sweep import sweep, sweep_plot

    bases = [load_base_array(b) for b in ("hc1-n6", "sky130-reticle", "ihp-sg13g2-reticle")]
    sweep_plot(sweep(shape_from_preset("llama-3.2-1b"), bases, [3, 4, 8], group_size=32), path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    reticle = load_base_array("sky130-reticle")
    smol = plan_placement(llama(576, 30, 9, 3, 1536, 49152), reticle, max_dies=1000)
    overview_png(smol, reticle, OUT / "overview-smollm2.png", "SmolLM2-135M (shapes, 4-bit)")
    die_map_png(smol, reticle, 5, OUT / "die-map.png", "SmolLM2-135M (shapes, 4-bit)")
    big = plan_placement(llama(2048, 16, 32, 8, 8192, 128256), reticle, max_dies=1000)
    overview_png(big, reticle, OUT / "overview-195-dies.png", "Llama-3.2-1B (shapes, 4-bit)")
    heatmap(OUT / "diff-heatmap.png")
    sweep(OUT / "sweep.png")


if __name__ == "__main__":
    sys.exit(main())
