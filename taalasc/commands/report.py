"""`taalasc report OUTDIR`: print the report compile wrote beside the masks."""

from __future__ import annotations

from pathlib import Path

import click

from taalasc.commands.common import emit_report


@click.command("report")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--markdown", "as_md", is_flag=True, help="Print the report as Markdown.")
def report_cmd(out_dir, as_json, as_md):
    """Print OUT_DIR/report.json (written by `taalasc compile`): area, timing, power, SRAM and
    cost, each with its formula and sourced inputs."""
    import taalasc

    if as_json and as_md:
        raise click.UsageError("--json and --markdown are exclusive")
    emit_report(taalasc.read_report(out_dir), as_json, as_md)
