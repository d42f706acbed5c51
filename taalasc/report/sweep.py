"""Sweeps: the same model over several bit widths and base arrays; a table and a bar chart.

The chart is rasterised with numpy (no plotting library): one panel per metric, one bar per
sweep point, labelled with a built-in 3×5 pixel font.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taalasc.png import draw_text
from taalasc.report.estimate import estimate
from taalasc.report.metrics import Report, format_value

COLUMNS = (("design__die__count", "dies"), ("design__die__total_area", "area mm²"),
           ("design__tiles__utilization", "util"), ("timing__clock__fmax_mhz", "Fmax MHz"),
           ("throughput__single_stream__tokens_per_s", "tok/s/user"),
           ("throughput__aggregate__tokens_per_s", "tok/s"), ("power__total__watts", "W"),
           ("power__token__joules", "J/token"), ("cost__silicon__usd", "silicon $"),
           ("cost__tokens__usd_per_million", "$/Mtok"))
PLOTTED = (("design__die__total_area", "AREA MM2"),
           ("throughput__aggregate__tokens_per_s", "TOKENS/S"),
           ("power__total__watts", "WATTS"), ("cost__tokens__usd_per_million", "USD/MTOK"))


def sweep(model, bases, bits_list, *, auto=None, **options) -> list[tuple[str, Report]]:
    """(label, report) for every base × bits. With ``auto``, bits_list is ignored for weights
    but kept as the label; a sweep of --auto budgets is --budget's job."""
    points = []
    for base in bases:
        for bits in bits_list:
            report = estimate(model, base, default_bits=bits, auto=auto, **options)
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


def sweep_table(points: list[tuple[str, Report]], markdown: bool):
    """A Markdown string, or a rich Table."""
    heads = ["point"] + [h for _, h in COLUMNS]
    rows = [[label] + [_cell(r, n) for n, _ in COLUMNS] for label, r in points]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    from rich.table import Table

    from taalasc.errors import safe_markup

    table = Table(title=safe_markup(f"taalasc estimate sweep — {points[0][1].meta['model']}"))
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:  # the model's name and base names come from files: escaped
        table.add_row(*(safe_markup(cell) for cell in row))
    return table


# --- a tiny raster font and bar chart ----------------------------------------------------------

def _short(v: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def render_sweep(points: list[tuple[str, Report]]) -> np.ndarray:
    """An RGB uint8 image: one panel per PLOTTED metric, one bar per sweep point."""
    n = len(points)
    bar_w, gap, panel_h, pad = 28, 12, 170, 30
    panel_w = max(220, n * (bar_w + gap) + 2 * pad)
    width, height = panel_w * 2, panel_h * 2 + 40 + 14 * n
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127)]
    for p, (metric, title) in enumerate(PLOTTED):
        ox, oy = (p % 2) * panel_w, (p // 2) * panel_h
        draw_text(img, ox + pad, oy + 8, title)
        values = [float(_value(r, metric) or 0.0) for _, r in points]
        top = max(values) or 1.0
        base_y, plot_h = oy + panel_h - 22, panel_h - 60
        img[base_y, ox + pad - 4: ox + panel_w - pad + 4] = (0, 0, 0)
        for i, v in enumerate(values):
            h = int(round(plot_h * v / top)) if np.isfinite(v) else plot_h
            x0 = ox + pad + i * (bar_w + gap)
            img[base_y - h:base_y, x0:x0 + bar_w] = palette[i % len(palette)]
            draw_text(img, x0, base_y - h - 12, _short(v), scale=1)
            draw_text(img, x0 + bar_w // 2 - 3, base_y + 5, str(i + 1), scale=2)
    legend_y = panel_h * 2 + 12
    for i, (label, _) in enumerate(points):
        y = legend_y + 14 * i
        img[y:y + 10, 10:20] = palette[i % len(palette)]
        draw_text(img, 26, y, f"{i + 1} {label}", scale=2)
    return img


def sweep_plot(points: list[tuple[str, Report]], path: Path) -> None:
    try:
        from taalasc.png import write_png
    except ImportError:  # the shared writer is not there yet: use the local one
        write_png = _write_png
    write_png(Path(path), render_sweep(points))


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Minimal deterministic PNG writer (RGB, 8 bit, no ancillary chunks)."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)
