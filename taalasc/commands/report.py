"""`taalasc report OUTDIR`: print the report compile wrote beside the masks."""

from __future__ import annotations

from pathlib import Path

import click

from taalasc.commands.common import emit_report, write_html


@click.command("report")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--markdown", "as_md", is_flag=True, help="Print the report as Markdown.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="Also write the report as one self-contained HTML page (pictures, "
                   "placement, every figure with its formula), as the compile's report.html.")
def report_cmd(out_dir, as_json, as_md, html_path):
    """Print OUT_DIR/report.json (written by `taalasc compile`): area, timing, power, SRAM and
    cost, each with its formula and sourced inputs."""
    import taalasc
    from taalasc.outdir import check_output_file
    from taalasc.report import REPORT_FILE
    from taalasc.report.html import folder_page

    if as_json and as_md:
        raise click.UsageError("--json and --markdown are exclusive")
    check_output_file(html_path, (out_dir,), "--html")
    report = taalasc.read_report(out_dir)
    if html_path is not None:
        path = out_dir / REPORT_FILE if out_dir.is_dir() or not out_dir.suffix else out_dir
        write_html(html_path, folder_page(path.parent, report))
    emit_report(report, as_json, as_md)
