"""`taalasc verify`: prove that a compiled mask set computes the model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from taalasc.commands.common import FiniteFloat


@click.command("verify")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["gds", "oas"]), default=None,
              help="Which mask files to extract the weights from (default: GDSII when the "
                   "compile wrote it, else OASIS).")
@click.option("--tokens", default=None, help="Token ids, e.g. \"1 2 3\" (default: 16 seeded ids).")
@click.option("--lora", "lora_dir", type=click.Path(path_type=Path), default=None,
              help="A PEFT LoRA adapter folder, applied at run time as the chip's SRAM holds it.")
@click.option("--min-top1", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Decoders: least top-1 agreement of chip and float reference.")
@click.option("--min-cosine", type=FiniteFloat(-1, 1), default=0.97, show_default=True,
              help="Least mean cosine of logits (decoders) or hidden states (encoders).")
@click.option("--max-kl", type=FiniteFloat(0), default=0.1, show_default=True,
              help="Decoders: largest mean KL divergence, nats.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Mask files read at once (one reader process each).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the result as JSON to this file.")
def verify_cmd(out_dir, model, fmt, tokens, lora_dir, min_top1, min_cosine, max_kl, jobs,
               json_path):
    """Extract every weight of the compile in OUT_DIR from its via geometry, compare it bit for
    bit with the quantizer's codes for MODEL, run the bit-accurate chip model on both, and
    check quality against the float reference. Exit 0 pass, 2 fail, 1 bad input.

    The scratch folder (in TMPDIR, removed on every exit) holds about two bytes per weight:
    the rebuild's codes and the codes read back (~16.6 GB for an 8 B model at 4 bits)."""
    from rich.console import Console
    from rich.table import Table

    import taalasc
    from taalasc.errors import ModelError, safe_markup
    from taalasc.outdir import atomic_file, check_output_file

    check_output_file(json_path, (out_dir, model, lora_dir), "--json")

    token_ids = None
    if tokens is not None:
        try:
            token_ids = [int(t) for t in tokens.replace(",", " ").split()]
        except ValueError:
            raise ModelError(f"--tokens must be integers separated by spaces, not {tokens!r}") from None
        if not token_ids:
            raise ModelError("--tokens is empty")
    result = taalasc.verify(out_dir, model, format=fmt, tokens=token_ids, lora=lora_dir,
                            min_top1=min_top1, min_cosine=min_cosine, max_kl_nats=max_kl,
                            jobs=jobs)
    table = Table(title=safe_markup(f"taalasc verify {out_dir}"))
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in result.checks:
        table.add_row(safe_markup(check.name), "[green]pass[/]" if check.passed else "[red]FAIL[/]",
                      safe_markup(check.detail))  # details name tensors from the files
    console = Console()
    console.print(table)
    for line in result.differences[:20]:
        console.print(f"  not as compiled: {line}", highlight=False, markup=False)
    for line in result.mismatches[:20]:
        console.print(f"  differs: {safe_markup(line)}", highlight=False)
    for line in result.defects[:20]:
        console.print(f"  defect: {safe_markup(line)}", highlight=False)
    if json_path is not None:
        with atomic_file(json_path) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
    result.raise_if_failed()  # exit 2, after the table and the JSON
