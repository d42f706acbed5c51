"""`taalasc signoff OUT -o DIR`: the PDK's own DRC decks and an LVS-style extraction."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("signoff")
@click.argument("out_dir", metavar="OUT", type=click.Path(path_type=Path))
@click.option("-o", "--out", "signoff_dir", type=click.Path(path_type=Path), required=True,
              help="New folder for the reports and marker databases (not inside OUT).")
@click.option("--merged", type=click.Path(path_type=Path), default=None,
              help="Folder of merged dies (die0.gds, ...; `taalasc merge OUT -o DIR`). "
                   "Without it the custom layers are checked alone.")
@click.option("--deck", "decks", multiple=True, type=click.Path(path_type=Path),
              help="A DRC deck file, or a folder holding the PDK's decks (repeatable). "
                   "Default: $TAALASC_PDK_DECKS/<pdk>/, else the PDK under $PDK_ROOT.")
@click.option("--klayout", default="klayout", show_default=True,
              help="The KLayout application that runs the decks.")
@click.option("--drc/--no-drc", default=True, show_default=True, help="Run the DRC decks.")
@click.option("--lvs/--no-lvs", default=True, show_default=True,
              help="Run the LVS-style extraction.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="Threads per deck run (0: every core).")
@click.option("--force", is_flag=True, help="Replace a sign-off folder of other inputs.")
def signoff_cmd(out_dir, signoff_dir, merged, decks, klayout, drc, lvs, threads, force):
    """Sign off the compile in OUT: the PDK's own KLayout DRC decks (batch mode) and an
    extraction with KLayout's netlist extractor proving that every bit site's gate input
    reaches exactly its rail (VPWR for 1, VGND for 0), compared with the via-position
    decoder. Writes per-die .lyrdb marker databases, signoff.json (metrics under OpenLane 2
    names) and signoff.md.

    \b
    Exit codes: 0 clean, 2 violations, 1 KLayout, a deck or an input missing."""
    import taalasc
    from taalasc.commands.common import echo_safe, print_table
    from taalasc.signoff.report import NO_CELLS, NOT_CHECKABLE, TOOL_FALSE
    from taalasc.signoff.run import REPORT_MD

    if not drc and not lvs:
        raise click.UsageError("--no-drc and --no-lvs leave nothing to check")
    report = taalasc.sign_off(out_dir, signoff_dir, merged=merged, decks=decks,
                              klayout=klayout, drc=drc, lvs=lvs, threads=threads, force=force)
    mode = "merged dies" if report.merged else "custom layers only"
    rows = [("checked", f"{report.pdk}, {mode}")]
    if report.klayout is not None:
        rows.append(("KLayout", report.klayout))
        for d in report.decks:
            if d["skipped"]:
                rows.append((d["name"], f"skipped: {d['skipped']}"))
        for r in report.runs:
            rows.append((f"die {r['die']} {r['deck']}",
                         f"{r['markers']:,} markers, {r['seconds']:.1f} s"
                         + (f", FAILED ({r['error']})" if r["error"] else "")))
        violations = sorted((r for r in report.rules if r.section == "violation"),
                            key=lambda r: -r.count)
        for r in violations[:10]:
            rows.append((r.rule, f"{r.count:,} markers"))
        if len(violations) > 10:
            rows.append(("", f"… {len(violations) - 10} more rules in the report"))
        for section in (NOT_CHECKABLE, NO_CELLS, TOOL_FALSE):
            apart = [r for r in report.rules if r.section == section]
            if apart:
                rows.append((section, ", ".join(f"{r.rule} {r.count:,}" for r in apart)))
    for die, d in sorted(report.lvs.items()):
        rows.append((f"die {die} extraction", f"{d['sites']:,} sites, {d['errors']:,} errors, "
                                              f"{d['seconds']:.1f} s"))
    metrics = report.metrics()
    for name in ("klayout__drc_error__count", "design__lvs_error__count"):
        if name in metrics:
            rows.append((name, f"{metrics[name]:,}"))
    rows.append(("report", str(Path(signoff_dir) / REPORT_MD)))
    print_table(f"taalasc signoff {out_dir}", rows)
    for finding in report.findings[:10]:
        echo_safe(f"  {finding.describe()}")   # tensor names come from the files
    report.raise_if_failed(signoff_dir)  # exit 1 or 2, after the table
