"""Streaming writer of big synthetic Llama checkpoints (BF16, sharded) for the scale bench.

taalasc.model.synth builds every tensor in memory first, which is fine for test models but
not for 1 B parameters. This writer computes the header from the shapes alone, then writes
each tensor in row blocks of ~16 M values: memory stays at one block whatever the model size.
Values: normal(0, 0.02) from a generator seeded by the tensor name (norm weights near 1), so
the same arguments give the same bytes.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np

from taalasc.model.synth import llama_config, llama_shapes

# name -> llama_config arguments; parameter counts are printed by `python bench/bigmodel.py`.
SIZES = {
    "10M": dict(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=704, vocab=12288),
    "50M": dict(hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1408, vocab=16384),
    "200M": dict(hidden=1024, layers=12, heads=16, kv_heads=4, intermediate=2816, vocab=32000),
    "1B": dict(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab=32000),
    # Llama-3.1-8B's shapes (its config.json: hidden 4096, 32 layers, 32 heads, 8 KV heads,
    # intermediate 14336, vocab 128256): 8,030,261,248 parameters, 16 GB in BF16.
    "8B": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256),
}
SHARD_BYTES = 1 << 30
BLOCK_VALUES = 1 << 24


def config_for(size: str) -> dict:
    return llama_config(**SIZES[size], max_position=2048)


def param_count(size: str) -> int:
    return sum(int(np.prod(s)) for s in llama_shapes(config_for(size)).values())


def _values(name: str, shape: tuple[int, ...]):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    rows = shape[0]
    width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, BLOCK_VALUES // width)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0) * width
        block = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        if name.endswith("norm.weight"):
            block += np.float32(1.0)
        yield block.astype(ml_dtypes.bfloat16).tobytes()


def write_big_llama(out_dir: Path, size: str) -> Path:
    """Write config.json, BF16 shards and model.safetensors.index.json; return the folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = config_for(size)
    shapes = dict(sorted(llama_shapes(config).items()))
    shards: list[list[str]] = [[]]
    used = 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * 2
        if shards[-1] and used + nbytes > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in names:
            n = int(np.prod(shapes[name])) * 2
            header[name] = {"dtype": "BF16", "shape": list(shapes[name]),
                            "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = file
        raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(out_dir / file, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            for name in names:
                for block in _values(name, shapes[name]):
                    fh.write(block)
    total = sum(int(np.prod(s)) * 2 for s in shapes.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out_dir


if __name__ == "__main__":
    for size in SIZES:
        print(f"{size:>5}: {param_count(size):,} parameters")
