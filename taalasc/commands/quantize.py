"""`taalasc quantize`: quantize a checkpoint in memory and report bits and SQNR per tensor."""

from __future__ import annotations

import click

from taalasc.commands.common import bit_policy, progress_bar, quant_options


@click.command("quantize")
@click.argument("model", type=click.Path())
@quant_options
@click.option("--high-bits", type=click.IntRange(2, 8), default=6, show_default=True,
              help="With --auto: the high bit width (the low one is 3, or --bits when given).")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the report as JSON instead of a table.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on a terminal.")
@click.pass_context
def quantize(ctx: click.Context, model: str, bits: int, rules: tuple[str, ...], group_size: str,
             auto: bool, budget: float, high_bits: int, as_json: bool, progress: bool) -> None:
    """Quantize MODEL (a .safetensors file, index or folder) in memory and print bits, group
    size and SQNR per tensor with the average bits per weight. Writes nothing.

    Rules are fnmatch globs on tensor names; the last matching rule wins and rules override
    --auto. Only 2-D tensors are quantized; 1-D tensors stay fp16 constants."""
    import json

    from taalasc.model import open_checkpoint
    from taalasc.quant import quantize_report

    policy = bit_policy(ctx, bits, rules, group_size, auto, budget, high_bits)
    ckpt = open_checkpoint(model)
    with progress_bar(progress and not as_json) as tick:
        report = quantize_report(ckpt, policy, tick)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_table(report)


def _print_table(report) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    from taalasc.errors import safe_markup

    table = Table(title="quantization", show_lines=False)
    table.add_column("tensor", overflow="fold")  # never cut a tensor name
    for col, justify in (("shape", "right"), ("bits", "right"), ("group", "right"),
                         ("SQNR dB", "right"), ("why", "left")):
        table.add_column(col, justify=justify)
    names = [safe_markup(t.name) for t in report.tensors]  # names and rules: from the user
    for name, t in zip(names, report.tensors):
        sqnr = "exact" if math.isinf(t.sqnr_db) else f"{t.sqnr_db:.2f}"
        table.add_row(name, "x".join(str(d) for d in t.shape), str(t.bits),
                      str(t.group_size), sqnr, safe_markup(t.reason))
    console = Console()
    if not console.is_terminal:  # piped or captured: as wide as the names need
        longest = max((len(n) for n in names), default=0)
        console = Console(width=max(console.width, longest + 60))
    console.print(table)
    m = report.min_sqnr_db
    console.print(
        f"{len(report.tensors)} tensors, {report.total_weights:,} weights: "
        f"{report.bits_per_weight:.4f} bits/weight "
        f"({report.bits_per_weight_with_scales:.4f} with fp16 scales); "
        f"min SQNR {'exact' if math.isinf(m) else f'{m:.2f} dB'}; "
        f"{len(report.constants)} 1-D tensors kept as fp16 constants")
