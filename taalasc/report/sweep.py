"""Sweeps: the same model over several bit widths and base arrays; a table and a bar chart.

The chart is rasterised with numpy (taalasc/draw.py: why no plotting library): one panel
per metric with its unit, a group of bars per bit width, a colour per base array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taalasc.report.estimate import estimate
from taalasc.report.metrics import Report, format_value

COLUMNS = (("design__die__count", "dies"), ("design__die__total_area", "area mm²"),
           ("design__tiles__utilization", "util"), ("timing__clock__fmax_mhz", "Fmax MHz"),
           ("throughput__single_stream__tokens_per_s", "tok/s/user"),
           ("throughput__aggregate__tokens_per_s", "tok/s"), ("power__total__watts", "W"),
           ("power__token__joules", "J/token"), ("cost__silicon__usd", "silicon $"),
           ("cost__tokens__usd_per_million", "$/Mtok"))


def sweep(model, bases, bits_list, *, auto=None, zero_bit_ratio=None,
          **options) -> list[tuple[str, Report]]:
    """(label, report) for every base × bits. With ``auto``, bits_list is ignored for weights
    but kept as the label; a sweep of --auto budgets is --budget's job. ``zero_bit_ratio``
    goes to the zero-skip bases (one of them at least)."""
    skip = [b.weight_tile.encoding == "zero-skip" for b in bases]
    if zero_bit_ratio is not None and not any(skip):
        from taalasc.errors import ModelError

        raise ModelError("--zero-bit-ratio applies to weight_tile.encoding 'zero-skip' only; "
                         "no base of the sweep encodes it")
    points = []
    for base, zero_skip in zip(bases, skip):
        for bits in bits_list:
            report = estimate(model, base, default_bits=bits, auto=auto,
                              zero_bit_ratio=zero_bit_ratio if zero_skip else None, **options)
            label = f"{base.name} {report.meta['bits'].split(',')[0]}"
            points.append((label, report))
    return points


# Encoders have no decode loop: their tokens/s is a full-sequence forward (report/timing.py).
_ENCODER_FALLBACK = {"throughput__aggregate__tokens_per_s": "throughput__encoder__tokens_per_s"}


def _value(report: Report, name: str):
    """A metric's value; an encoder's tokens/s for the aggregate; None when not reported."""
    for candidate in (name, _ENCODER_FALLBACK.get(name)):
        if candidate and candidate in report.names():
            return report.value(candidate)
    return None


def _cell(report: Report, name: str) -> str:
    value = _value(report, name)
    return "—" if value is None else format_value(value)


def sweep_rows(points: list[tuple[str, Report]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the comparison: a row per point, a column per key figure."""
    heads = ["point"] + [h for _, h in COLUMNS]
    return heads, [[label] + [_cell(r, n) for n, _ in COLUMNS] for label, r in points]


def sweep_markdown(points: list[tuple[str, Report]]) -> str:
    """The comparison as a Markdown table (the terminal's: taalasc.console.print_tables)."""
    heads, rows = sweep_rows(points)
    lines = ["| " + " | ".join(heads) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_sweep(points: list[tuple[str, Report]]) -> None:
    """The comparison on the terminal, fitted to its width, with the notes beside it."""
    from taalasc.console import console, print_tables, print_text
    from taalasc.errors import safe_markup

    out, (heads, rows) = console(), sweep_rows(points)
    print_tables(out, safe_markup(f"taalasc estimate sweep — {points[0][1].meta['model']}"),
                 heads, rows, right=range(1, len(heads)))
    for note in sweep_notes(points):  # beside the figure that surprises
        print_text(out, f"note: {note}")


# --- what a sweep shows that surprises ----------------------------------------------------------

def _bits(report: Report) -> int | None:
    """The default bits of an estimate ("4 bits, group 32" -> 4); None for --auto."""
    head = str(report.meta.get("bits", "")).split(" ")[0]
    return int(head) if head.isdigit() else None


def sweep_notes(points: list[tuple[str, Report]]) -> list[str]:
    """Explanations for figures that look wrong: fewer bits giving fewer tokens/s.

    That is the model's arithmetic, not a slip: a weight tile streams its output rows one per
    cycle and holds capacity / (lanes × bits) of them (report/area.py, report/timing.py), so
    at fewer bits each tile holds more rows, fewer tiles share a matrix, and every matrix
    stage takes more cycles.
    """
    notes = []
    by_base: dict[str, list[tuple[int, float, Report]]] = {}
    for _, report in points:
        bits, tokens = _bits(report), _value(report, "throughput__aggregate__tokens_per_s")
        if bits is not None and tokens is not None:
            by_base.setdefault(report.meta.get("base_array", ""), []).append((bits, tokens, report))
    for base, rows in by_base.items():
        rows.sort(key=lambda r: r[0])
        slower = [(a, b) for a, b in zip(rows, rows[1:]) if a[1] < b[1]]
        if not slower:
            continue
        (lo, lo_tok, lo_rep), (hi, hi_tok, hi_rep) = slower[0]
        cycles = "timing__pipeline__depth_cycles"
        per_token = (f" tokens/s ({format_value(lo_rep.value(cycles))} vs "
                     f"{format_value(hi_rep.value(cycles))} cycles per token)"
                     if cycles in lo_rep.names() and cycles in hi_rep.names() else "")
        notes.append(
            f"{base}: fewer bits give fewer tokens/s here, e.g. {lo} bits "
            f"{format_value(lo_tok)} vs {hi} bits {format_value(hi_tok)}{per_token}. "
            "A weight tile streams its output rows one per "
            f"cycle and holds capacity / (lanes × bits) of them: at {lo} bits a tile holds "
            f"{hi}/{lo} as many rows as at {hi}, so fewer tiles share each matrix and every "
            "matrix stage takes longer. Fewer bits buy area, power and cost, not speed.")
    return notes


# --- the chart ---------------------------------------------------------------------------------

PANELS = (("design__die__total_area", "Silicon area"),
          ("throughput__aggregate__tokens_per_s", "Throughput (all users)"),
          ("power__total__watts", "Power"),
          ("cost__tokens__usd_per_million", "Cost per token"))
SERIES = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127))
_PANEL_H, _AXIS_W, _GROUP_GAP = 250, 58, 18


def _unit(points: list[tuple[str, Report]], name: str) -> str:
    for _, report in points:
        for candidate in (name, _ENCODER_FALLBACK.get(name)):
            if candidate and candidate in report.names():
                return report[candidate].unit
    return ""


def render_sweep(points: list[tuple[str, Report]]) -> np.ndarray:
    """An RGB uint8 image: one bar chart per PANELS metric with its unit on the y axis; a
    group of bars per bit width (or per base array when only bases are swept), one colour
    per base array; the surprising figures explained below (sweep_notes)."""
    from taalasc import draw

    bases = list(dict.fromkeys(r.meta.get("base_array", label) for label, r in points))
    widths = list(dict.fromkeys(str(r.meta.get("bits", "")).split(",")[0] for _, r in points))
    by_width = len(widths) > 1 or len(bases) == 1
    groups = widths if by_width else bases
    series = bases if by_width else [widths[0]]
    x_title = "weights (default bits per weight)" if by_width else "base array"
    # bars as wide as their value labels, so that neighbours' labels do not overlap
    labels = [draw.number(float(v)) for metric, _ in PANELS for _, r in points
              if (v := _value(r, metric)) is not None]
    bar_w = max([26] + [draw.text_width(t) + 5 for t in labels])
    group_w = len(series) * bar_w + _GROUP_GAP
    label_w = max(draw.text_width(g) for g in groups) + 8
    panel_w = max(330, _AXIS_W + len(groups) * max(group_w, label_w) + 16)
    step = max(group_w, label_w)
    model = points[0][1].meta.get("model", "")
    title = f"taalasc estimate sweep: {model}"
    meta = points[0][1].meta
    context = f"{meta.get('users', 1)} user(s), context {meta.get('context', '?')} tokens"
    inner = 2 * panel_w
    notes = sweep_notes(points)
    note_lines = [line for note in notes for line in draw.wrap("Note: " + note, inner)]
    legend = [(SERIES[i % len(SERIES)], name) for i, name in enumerate(series)] \
        if len(series) > 1 else []
    top = 12
    height = (top + 2 * draw.LINE_H + 8 + 2 * _PANEL_H + draw.legend_height(legend, inner)
              + len(note_lines) * draw.LINE_H + 24)
    img = np.full((height, inner + 24, 3), 255, dtype=np.uint8)
    draw.draw_text(img, 12, top, title, bold=True)
    draw.draw_text(img, 12, top + draw.LINE_H + 2, context, draw.MUTED)
    y0 = top + 2 * draw.LINE_H + 8
    for p, (metric, name) in enumerate(PANELS):
        ox, oy = 12 + (p % 2) * panel_w, y0 + (p // 2) * _PANEL_H
        unit = _unit(points, metric)
        draw.draw_text(img, ox, oy, name, bold=True)
        draw.draw_text(img, ox + draw.text_width(name) + 8, oy, f"({unit})" if unit else "",
                       draw.MUTED)
        values = {(str(r.meta.get("bits", "")).split(",")[0], r.meta.get("base_array", label)):
                  _value(r, metric) for label, r in points}
        finite = [float(v) for v in values.values() if v is not None and np.isfinite(float(v))]
        ticks = draw.nice_ticks(0.0, max(finite, default=1.0) or 1.0, 4)
        plot_top, plot_bottom = oy + 2 * draw.LINE_H, oy + _PANEL_H - 3 * draw.LINE_H
        left, right = ox + _AXIS_W, ox + panel_w - 16

        def to_y(v: float) -> int:
            return plot_bottom - int(round((plot_bottom - plot_top) * v / ticks[-1]))

        for t in ticks:
            ty = to_y(t)
            draw.fill(img, left, ty, right, ty + 1, draw.RULE)
            text = draw.number(t)
            draw.draw_text(img, left - 6 - draw.text_width(text), ty - draw.CHAR_H // 2, text,
                           draw.MUTED)
        draw.fill(img, left, plot_top, left + 1, plot_bottom + 1, draw.INK)
        draw.fill(img, left, plot_bottom, right, plot_bottom + 1, draw.INK)
        for g, group in enumerate(groups):
            gx = left + 8 + g * step
            for k, member in enumerate(series):
                key = (group, member) if by_width else (member, group)
                v = values.get(key)
                if v is None:
                    continue
                v = float(v)
                bx = gx + k * bar_w
                by = to_y(min(v, ticks[-1])) if np.isfinite(v) else plot_top
                draw.fill(img, bx, by, bx + bar_w - 3, plot_bottom, SERIES[k % len(SERIES)])
                text = draw.number(v)
                draw.draw_text(img, bx + (bar_w - 3 - draw.text_width(text)) // 2,
                               by - draw.LINE_H, text)
            cx = gx + (len(series) * bar_w - 3) // 2
            draw.draw_text(img, cx - draw.text_width(group) // 2, plot_bottom + 4, group)
        draw.draw_text(img, left + (right - left - draw.text_width(x_title)) // 2,
                       plot_bottom + 4 + draw.LINE_H, x_title, draw.MUTED)
    y = y0 + 2 * _PANEL_H
    y = draw.draw_legend(img, 12, y, legend, inner) + 6
    for line in note_lines:
        draw.draw_text(img, 12, y, line)
        y += draw.LINE_H
    return img


def sweep_plot(points: list[tuple[str, Report]], path: Path) -> None:
    from taalasc.png import write_png

    write_png(Path(path), render_sweep(points))
