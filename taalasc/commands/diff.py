"""`taalasc diff A B`: what changed between two mask sets, with exit codes a CI job can gate on."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--max-changed", default="0", show_default=True, metavar="N|F%",
              help="Exit 2 when more shapes than this changed: a count (120) or a percentage "
                   "of A's shapes (0.5%). Changes within the limit are reported and exit 0.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the full diff as JSON (schema taalasc-diff/1).")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path), default=None,
              help="Write a Markdown summary ready for a pull-request comment.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="Write one self-contained HTML page: the heat map, shapes per layer, the "
                   "re-spin cost, the changed tiles and tensors.")
@click.option("--heatmap", "png_path", type=click.Path(path_type=Path), default=None,
              help="Write a PNG heat map of where the dies changed.")
@click.option("--xor", "xor_path", type=click.Path(path_type=Path), default=None,
              help="Write the XOR region (FILE.gds or FILE.oas) to open in KLayout.")
@click.option("--format", "fmt", type=click.Choice(["gds", "oas"]), default=None,
              help="Which die files of compile folders to read [default: the format A's "
                   "compile wrote, gds when it wrote both].")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Dies of compile folders compared at once (one process each).")
@click.option("--flat", is_flag=True,
              help="Compare fully flattened geometry instead of skipping cells whose "
                   "content hash is the same in A and B (slower; same counts).")
@click.option("--quiet", "-q", is_flag=True, help="No terminal summary.")
def diff_cmd(a, b, max_changed, json_path, md_path, html_path, png_path, xor_path, fmt, jobs,
             flat, quiet):
    """Compare mask sets A and B: compile output folders, or two GDS/OASIS files.

    Reports shapes added and removed per layer, per tile and (with manifests) per model
    tensor and element, whether a re-spin needs the via mask only or both masks, and its
    cost. Counts equal KLayout's (Region(A) ^ Region(B)).merged().count().

    \b
    Exit codes: 0 identical or within --max-changed, 2 more changed than --max-changed,
    1 error (unreadable file, a die file changed since its compile or named outside its
    folder, different base array or PDK).
    """
    import taalasc
    from taalasc.diff.report import (print_summary, write_heatmap, write_html, write_json,
                                     write_markdown, write_xor)
    from taalasc.outdir import atomic_file, check_output_file

    for option, path in (("--json", json_path), ("--markdown", md_path), ("--html", html_path),
                         ("--heatmap", png_path), ("--xor", xor_path)):
        check_output_file(path, (a, b), option)
    if xor_path is not None and xor_path.suffix.lower() not in (".gds", ".oas"):
        raise click.BadParameter(f"must end in .gds or .oas, not {xor_path.name!r}",
                                 param_hint="--xor")
    # The changed rectangles are kept only for the XOR file: a new checkpoint changes every
    # die, and holding each die's shapes until the end would grow with the model.
    result = taalasc.diff_masks(a, b, max_changed=max_changed, format=fmt, flat=flat, jobs=jobs,
                                keep_shapes=xor_path is not None)
    diff, threshold = result.diff, result.threshold
    if json_path:
        with atomic_file(json_path) as tmp:
            write_json(diff, tmp, threshold)
    if md_path:
        with atomic_file(md_path) as tmp:
            write_markdown(diff, tmp, threshold)
    if html_path:
        with atomic_file(html_path) as tmp:
            write_html(diff, tmp, threshold)
    if png_path:
        with atomic_file(png_path) as tmp:
            write_heatmap(diff, tmp)
    if xor_path:
        with atomic_file(xor_path) as tmp:
            write_xor(diff, tmp)
    if not quiet:
        print_summary(diff, threshold)
    result.raise_if_failed()  # exit 2, after the reports
