"""Reports as one self-contained HTML page: a compile, an estimate or a sweep (and, built from
the same pieces in taalasc/diff/report.py, a mask diff) that a team attaches to a review.

Self-contained: the CSS is inline, every picture is a ``data:`` URI (base64 PNG), there is no
script and nothing is fetched. Every text that comes from an input — tensor names from a
checkpoint, model, base-array and file names, formulas, sources, notes — goes through
``html.escape``: a checkpoint can name a tensor ``<script>``.

The page of a compile (``report.html`` beside the masks) is rebuilt byte for byte by
``taalasc verify``: it holds no time and no path, only what the inputs decide. ``taalasc
report OUT --html FILE`` makes the same page again from the folder's files.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable, Sequence

from taalasc.report.metrics import Report, format_value

HTML_FILE = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_DIE_PICTURES = 32   # die maps embedded in one page; the rest are named (die{N}.png)

# Readable at any width from a phone to 1280 px and up: long names and formulas wrap anywhere
# rather than widen the page; pictures shrink to the column.
CSS = """\
*{box-sizing:border-box}
body{margin:0;color:#1d1d1f;background:#fff;font:15px/1.45 system-ui,-apple-system,"Segoe UI",\
Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:12px 20px 40px}
h1{font-size:1.45em;margin:.6em 0 .2em;overflow-wrap:anywhere}
h2{font-size:1.2em;margin:1.6em 0 .4em;padding-bottom:.2em;border-bottom:2px solid #e3e3e8}
h3{font-size:1.02em;margin:1.2em 0 .3em}
p,li,dd,dt,figcaption,summary{overflow-wrap:anywhere}
.muted{color:#5f6068}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:.6em 0}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
table{border-collapse:collapse;width:100%;margin:.4em 0 1em}
th,td{padding:4px 8px;border-bottom:1px solid #e3e3e8;text-align:left;vertical-align:top;\
overflow-wrap:anywhere}
th{background:#f4f4f7;font-weight:600}
table.fixed{table-layout:fixed}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;overflow-wrap:normal}
code{font:.9em/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.desc,.inputs{font-size:.86em;color:#5f6068}
.inputs ul{margin:.2em 0;padding-left:1.2em}
.pictures{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}
figure{margin:.6em 0 1.4em;max-width:100%}
figure img{display:block;max-width:100%;height:auto;border:1px solid #e3e3e8}
figcaption{font-size:.9em;color:#5f6068;margin-top:.25em}
ul.notes li{margin:.25em 0}
.verdict{font-size:1.1em;font-weight:600}
.pass{color:#1a7f37}.fail{color:#c62828}
footer{margin-top:2em;font-size:.85em;color:#5f6068}
"""


class Raw(str):
    """HTML made here (a cell holding markup): not escaped again."""


def esc(value: Any) -> str:
    """Any value as HTML text: escaped, quotes too (values also land in attributes)."""
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def figure(value: Any, unit: str = "") -> str:
    """A value with its unit, as the terminal shows it."""
    text = format_value(value)
    return f"{text} {unit}" if unit and not isinstance(value, bool) else text


# --- building blocks ---------------------------------------------------------------------------

def page(title: str, meta: Sequence[tuple[str, Any]], sections: Iterable[str]) -> str:
    """The whole document: a title, key/value facts under it, then the sections."""
    from taalasc import __version__

    facts = "".join(f"<dt>{esc(k)}</dt><dd>{esc(format_value(v))}</dd>" for k, v in meta)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{esc(title)}</h1>\n"
            + (f"<dl class=\"meta\">{facts}</dl>\n" if facts else "")
            + "".join(sections)
            + f"<footer>Made by taalasc {esc(__version__)}: one file, no network; "
            "every figure lists its formula and its sourced inputs.</footer>\n"
            "</main>\n</body>\n</html>\n")


def section(title: str, body: str, intro: str = "") -> str:
    return (f"<section>\n<h2>{esc(title)}</h2>\n"
            + (f"<p class=\"muted\">{esc(intro)}</p>\n" if intro else "") + body + "</section>\n")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          caption: str = "", widths: Sequence[int] = ()) -> str:
    """A table; cells are escaped unless Raw; columns in ``numeric`` are right-aligned;
    ``widths``: each column's share in percent (the same on every table of that kind)."""
    right = set(numeric)
    cols = ("<colgroup>" + "".join(f"<col style=\"width:{w}%\">" for w in widths)
            + "</colgroup>") if widths else ""
    cls = [" class=\"n\"" if i in right else "" for i in range(len(header))]
    head = "".join(f"<th{cls[i]}>{esc(h)}</th>" for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(f"<td{cls[i]}>{esc(c)}</td>" for i, c in enumerate(row))
                     + "</tr>" for row in rows)
    return ("<table" + (" class=\"fixed\">" if widths else ">")
            + (f"<caption class=\"muted\">{esc(caption)}</caption>" if caption else "") + cols
            + f"\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n")


def picture(png: bytes, caption: str) -> str:
    """A PNG embedded as a data: URI, with its caption (also its alternative text)."""
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{esc(caption)}\">"
            f"<figcaption>{esc(caption)}</figcaption></figure>\n")


def notes_section(notes: Sequence[str], title: str = "Notes") -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>\n" for n in notes)
    return section(title, f"<ul class=\"notes\">\n{items}</ul>\n")


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


# --- a report's metrics --------------------------------------------------------------------------

CATEGORIES = {"design": "Area and design", "timing": "Timing", "throughput": "Throughput",
              "power": "Power", "sram": "SRAM (KV cache, LoRA)", "cost": "Cost",
              "cells": "Standard cells of the drawn base die", "place": "Placement"}


def _metric_row(m) -> list:
    name = f"<code>{esc(m.name)}</code>" + (
        f"<div class=\"desc\">{esc(m.description)}</div>" if m.description else "")
    formula = esc(m.formula)
    if m.inputs:
        items = "".join(f"<li><code>{esc(k)}</code> = {esc(format_value(v))} "
                        f"<span class=\"muted\">({esc(s)})</span></li>"
                        for k, (v, s) in sorted(m.inputs.items()))
        formula += (f"<details class=\"inputs\"><summary>{len(m.inputs)} "
                    f"input{'s' if len(m.inputs) != 1 else ''}</summary><ul>{items}</ul>"
                    "</details>")
    return [Raw(name), format_value(m.value), m.unit, Raw(formula)]


def metrics_sections(report: Report) -> str:
    """The metrics grouped by category (the name's first part: design, timing, power, ...),
    each with its value, unit, formula and the inputs with their sources."""
    groups: dict[str, list] = {}
    for m in report.metrics:
        groups.setdefault(m.name.split("__")[0], []).append(m)
    return "".join(section(CATEGORIES.get(key, key), table(
        ["metric", "value", "unit", "formula and inputs"],
        (_metric_row(m) for m in metrics), numeric=[1], widths=(30, 11, 10, 49)))
        for key, metrics in groups.items())


def key_figures(report: Report) -> str:
    """The figures a reviewer looks at first (those of the estimate sweep), when reported."""
    from taalasc.report.sweep import COLUMNS

    names = set(report.names())
    rows = [[Raw(f"<code>{esc(name)}</code>"), format_value(report.value(name)),
             report[name].unit, report[name].description or report[name].formula]
            for name, _ in COLUMNS if name in names]
    return section("Key figures", table(["metric", "value", "unit", "what it is"], rows,
                                        numeric=[1], widths=(30, 11, 10, 49))) if rows else ""


def report_meta(report: Report) -> list[tuple[str, Any]]:
    return [(k.replace("_", " "), v) for k, v in sorted(report.meta.items())]


def report_title(kind: str, report: Report) -> str:
    parts = [str(report.meta[k]) for k in ("model", "base_array", "bits") if k in report.meta]
    return f"taalasc {kind} — " + " · ".join(parts) if parts else f"taalasc {kind}"


def estimate_page(report: Report, kind: str = "estimate") -> str:
    """A report alone (an estimate, or a report.json without its compile folder)."""
    return page(report_title(kind, report), report_meta(report),
                [key_figures(report), notes_section(report.notes), metrics_sections(report)])


def sweep_page(points: Sequence[tuple[str, Report]]) -> str:
    """An estimate sweep: the comparison table, its notes, the chart, then every point's
    report folded under its label."""
    from taalasc.png import png_bytes
    from taalasc.report.sweep import render_sweep, sweep_notes, sweep_rows

    heads, rows = sweep_rows(list(points))
    first = points[0][1].meta if points else {}
    meta = [(k, first[k]) for k in ("model", "users", "context") if k in first]
    details = "".join(
        f"<details><summary>{esc(label)}</summary>\n{metrics_sections(report)}</details>\n"
        for label, report in points)
    return page(f"taalasc estimate sweep — {first.get('model', '')}",
                meta + [("points", len(points))], [
        section("Sweep", table(heads, rows, numeric=range(1, len(heads)))),
        notes_section(sweep_notes(list(points))),
        section("Chart", picture(png_bytes(render_sweep(list(points))),
                                 "area, tokens/s, power and cost per point")),
        section("Every point", details)])


# --- a compile ----------------------------------------------------------------------------------

def _ranges(values: Iterable[int]) -> str:
    """0, 2-4, 7 from {0, 2, 3, 4, 7}."""
    out: list[str] = []
    run: list[int] = []
    for v in sorted(set(values)):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}")
        run = [v]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}")
    return ", ".join(out)


def tensor_rows(placement, quantization: dict) -> list[list]:
    """Per tensor, in dataflow order: where it sits (tiles per stream, dies) and how it was
    quantized (bits, group size, SQNR of the codes against the float weights)."""
    import numpy as np

    from taalasc.place.plan import KINDS

    r, names = placement.rows, placement.tensors
    tiles: dict[str, dict[str, int]] = {}
    pairs, counts = np.unique(np.stack([r["tensor"], r["kind"]], axis=1), axis=0,
                              return_counts=True)
    for (t, k), n in zip(pairs.tolist(), counts.tolist()):
        tiles.setdefault(names[t], {})[KINDS[k]] = n
    dies: dict[str, list[int]] = {}
    for t, d in np.unique(np.stack([r["tensor"], r["die"]], axis=1), axis=0).tolist():
        dies.setdefault(names[t], []).append(d)
    layer = dict(placement.layers)
    rows = []
    for name in names:
        q = quantization.get(name) if isinstance(quantization, dict) else None
        q = q if isinstance(q, dict) else {}
        kinds = tiles.get(name, {})
        rows.append([Raw(f"<code>{esc(name)}</code>"),
                     "" if layer.get(name) is None else layer[name],
                     q.get("bits", "fp16"),
                     (q.get("group_size") or "per-channel") if "bits" in q else "",
                     "" if q.get("sqnr_db") is None else format_value(q["sqnr_db"]),
                     f"{sum(kinds.values()):,}",
                     ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items())),
                     _ranges(dies.get(name, ()))])
    return rows


def _die_rows(dies: Sequence[dict]) -> list[list]:
    rows = []
    for d in dies:
        if not isinstance(d, dict):
            continue
        if not d.get("present", True):
            rows.append([d.get("die", ""), "not written (--die)", "", "", "", "", ""])
            continue
        count = lambda key: format_value(d.get(key, 0))  # noqa: E731
        rows.append([d.get("die", ""), count("bit_vias"), count("tie_vias"), count("route_vias"),
                     count("top_metal_shapes"), count("fill_shapes"),
                     f"{format_value(d.get('density_min_pct', ''))}–"
                     f"{format_value(d.get('density_max_pct', ''))} %"])
    return rows


def compile_page(report: Report, placement, quantization: dict, dies: Sequence[dict],
                 pictures: Sequence[tuple[str, bytes]]) -> str:
    """The page of a compile: its pictures, metrics, notes, per-tensor placement and
    quantization, per-die mask figures. ``pictures``: (file name, PNG bytes), the overview
    first; only the first MAX_DIE_PICTURES die maps are embedded, the others are named."""
    figures = "<div class=\"pictures\">\n" + "".join(
        picture(png, _caption(name)) for name, png in pictures if is_png(png)) + "</div>\n"
    dropped = [f"die{n}.png" for n in _present(dies)[MAX_DIE_PICTURES:]]
    if dropped:
        figures += (f"<p class=\"muted\">{len(dropped)} more die maps are in the compile folder "
                    f"beside this page: {esc(', '.join(dropped))}.</p>\n")
    sqnr = ("SQNR: signal-to-quantization-noise ratio of a tensor's codes and scales against "
            "its float weights, in dB (higher is better; about 6 dB per bit). fp16 vectors "
            "are stored as they are. `taalasc verify` measures the chip against the float "
            "model on tokens (top-1, logit cosine, KL).")
    return page(report_title("compile", report), report_meta(report), [
        key_figures(report),
        notes_section(report.notes),
        section("Pictures", figures,
                "The overview of every die and a map of each: tiles coloured by the tensor's "
                "role, lighter for its fp16 scales; the legend is under each picture."),
        metrics_sections(report),
        section("Tensors: placement and quantization", table(
            ["tensor", "layer", "bits", "group", "SQNR dB", "tiles", "tiles per stream",
             "dies"], tensor_rows(placement, quantization), numeric=[1, 2, 3, 4, 5]), sqnr),
        section("Dies", table(
            ["die", "bit vias", "tie vias", "route vias", "top-metal shapes", "fill shapes",
             "metal density"], _die_rows(dies), numeric=[0, 1, 2, 3, 4, 5, 6]),
            "Shapes on each die's two custom layers, as the mask files hold them."),
    ])


def _present(dies: Sequence[dict]) -> list[int]:
    """The dies a compile wrote (a --die compile writes some), in order."""
    return [d["die"] for d in dies if isinstance(d, dict) and d.get("present", True)
            and isinstance(d.get("die"), int) and not isinstance(d.get("die"), bool)]


def _caption(name: str) -> str:
    if name == "overview.png":
        return "overview.png: every die of the placement"
    return f"{name}: die {name.removeprefix('die').removesuffix('.png')}"


def compile_pictures(folder: Path, dies: Sequence[dict], read=None) -> list[tuple[str, bytes]]:
    """The overview and the first MAX_DIE_PICTURES die maps of a compile folder, in die
    order: (name, bytes). ``read`` reads one file (default: the whole file); a missing file
    is left out."""
    read = read or (lambda path: path.read_bytes())
    names = ["overview.png"] + [f"die{n}.png" for n in _present(dies)[:MAX_DIE_PICTURES]]
    out = []
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            out.append((name, read(path)))
    return out


MAX_PICTURE_BYTES = 64 << 20   # a die map is well under a megabyte


def folder_page(folder: Path, report: Report) -> str:
    """The page of the compile in ``folder`` made again from its files (report.json, the
    manifest's placement, quantization and dies, the pictures): byte-identical to the
    folder's report.html while the files are as compiled. A report.json without its
    manifest beside it gives the metrics alone."""
    from taalasc.errors import OutputError
    from taalasc.inputfile import MAX_INDEX_BYTES, read_bytes, read_json
    from taalasc.extract.extract import check_format
    from taalasc.outdir import MANIFEST
    from taalasc.place.store import read_placement

    path = Path(folder) / MANIFEST
    if not path.is_file():
        return estimate_page(report, kind="report")
    fail = lambda where: lambda message: OutputError(f"{where}: {message}")  # noqa: E731
    manifest = read_json(path, MAX_INDEX_BYTES, "manifest", fail(path))
    check_format(manifest, path, OutputError)
    placement = read_placement(folder, manifest, OutputError)
    dies = manifest.get("dies")
    dies = dies if isinstance(dies, list) else []
    pictures = compile_pictures(folder, dies, lambda p: read_bytes(
        p, MAX_PICTURE_BYTES, "picture", fail(p)))
    return compile_page(report, placement, manifest.get("quantization") or {}, dies, pictures)
