"""`taalasc inspect MODEL`: what a checkpoint holds, from its headers alone."""

from __future__ import annotations

import os
from pathlib import Path

import click


def inspect_data(model: str) -> dict:
    """The inspect report as plain data (what --json prints)."""
    from taalasc.inputfile import display
    from taalasc.model import open_checkpoint

    ckpt = open_checkpoint(model, numerics=False)  # inspect shows what it cannot simulate too
    root = Path(os.path.commonpath([f.parent for f in ckpt.files]))
    block_types = getattr(ckpt, "block_types", None)  # GGUF files only
    data = {
        "path": display(ckpt.path),  # printable even when a folder name is not UTF-8
        "format": "gguf" if block_types is not None else "safetensors",
        "architecture": ckpt.architecture,
        "files": [display(f.relative_to(root)) for f in ckpt.files],
        "param_count": ckpt.param_count,
        "nbytes": ckpt.nbytes,
        "config": ckpt.summary(),
        "has_config_json": ckpt.config is not None,
        "skipped": dict(sorted(getattr(ckpt, "skipped", {}).items())),
        "tensors": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "params": t.numel,
             "file": display(Path(t.file).relative_to(root)),
             "layer": ckpt.layer_of(t.name)}
            for t in ckpt.tensors.values()
        ],
    }
    if block_types is not None:
        from taalasc.model.gguf_io import NATIVE_TYPES

        data["block_types"] = block_types
        data["native_types"] = [k for k in block_types if k in NATIVE_TYPES]
        data["gguf_names"] = {t.name: t.gguf_name for t in ckpt.tensors.values()}
    return data


def _human(n: int) -> str:
    for unit, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


@click.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.option("--json", "as_json", is_flag=True, default=False, show_default=True,
              help="Print machine-readable JSON instead of a table.")
def inspect_cmd(model: str, as_json: bool) -> None:
    """Show the tensors, parameter count, architecture and config of MODEL.

    MODEL is a .safetensors file, a model.safetensors.index.json, a folder holding
    either (with config.json next to it when available), or a llama.cpp .gguf file
    (Llama family). Only the headers are read.
    """
    import json

    data = inspect_data(model)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    from taalasc.errors import safe_markup

    # names, paths and config values come from the file: escaped (safe_markup) on the way out
    many_files = len(data["files"]) > 1
    table = Table(title=safe_markup(f"{data['path']} ({data['architecture']})"))
    names = [safe_markup(t["name"]) for t in data["tensors"]]
    longest = max(len(n) for n in names)
    table.add_column("tensor", no_wrap=True, min_width=longest)
    table.add_column("dtype")
    table.add_column("shape", justify="right")
    table.add_column("params", justify="right")
    if many_files:
        table.add_column("shard")
    for name, t in zip(names, data["tensors"]):
        row = [name, safe_markup(t["dtype"]), " x ".join(map(str, t["shape"])) or "scalar",
               f"{t['params']:,}"]
        if many_files:
            row.append(safe_markup(t["file"]))
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # piped or captured: never fold tensor names
        console = Console(width=max(console.width, longest + 80))
    console.print(table)
    cfg = data["config"]
    if data["format"] == "gguf":
        source = "GGUF metadata"
    elif data["has_config_json"]:
        source = "config.json"
    else:
        source = "tensor shapes (no config.json)"
    console.print(f"parameters: {data['param_count']:,} ({_human(data['param_count'])}), "
                  f"{data['nbytes']:,} bytes in {len(data['files'])} file(s)")
    console.print(f"architecture: {safe_markup(data['architecture'])}; from {source}: "
                  + ", ".join(safe_markup(f"{k} {v}") for k, v in cfg.items()))
    for name, reason in data["skipped"].items():
        console.print(safe_markup(f"note: {name} left off the chip ({reason})"))
    if data["format"] == "gguf":
        types = data["block_types"]
        native = data["native_types"]
        console.print(safe_markup("GGUF block types: "
                                  + ", ".join(f"{k} {v}" for k, v in types.items())
                                  + "; blocks whose codes map exactly onto the chip: "
                                  + (", ".join(native) or "none")))
