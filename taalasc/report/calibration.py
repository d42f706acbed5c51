"""Calibration against published silicon, and the encodings compared on one model.

Generates the tables of docs/calibration-hc1.md (Llama 3.1 8B on hc1-n6 and hc1-n6-select
beside Taalas HC1; gpt-oss-120b on hc1-n6-select beside HNLPU; the paper tier's densities)
and of docs/estimate.md (the four weight-tile encodings on Llama 3.1 8B):
    python -m taalasc.report.calibration           # print every table
    python -m taalasc.report.calibration --write    # rewrite them between the docs' markers
tests/test_report_calibration.py and tests/test_report_published.py check that the documents
show the tables the current code and YAML produce. No input here is chosen to land on a
published figure: the bases and the bit policies are the ones the documents describe.
"""

from __future__ import annotations

import sys
from pathlib import Path

from taalasc.report.estimate import estimate
from taalasc.report.metrics import Report, format_value
from taalasc.report.published import (HC1, HNLPU, PAPERS, attach_published, compare,
                                      published_markdown, ratio_text)
from taalasc.report.shape import shape_from_preset

BASE = "hc1-n6"
SELECT_BASE = "hc1-n6-select"
CONTEXT = 2048  # HC1's 17k tokens/s figure is quoted at 1k input / 1k output tokens
# gpt-oss-120b ships as MXFP4: 4-bit codes with one scale per 32 weights.
HNLPU_BITS, HNLPU_GROUP = 4, 32
MANY_USERS = 10_000  # more than any KV SRAM here holds: served = the users whose KV fits
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _hc1_text(metric: str) -> str:
    texts = [c.text + (f" ({c.label.rsplit(', ', 1)[1]})" if ", " in c.label else "")
             for c in HC1.claims if c.metric == metric]
    return "; ".join(texts) or "—"


ROWS = (
    ("design__die__count", "dies"),
    ("design__die__area", "die area (mm²)"),
    ("design__die__total_area", "silicon per model (mm²)"),
    ("design__transistors__count", "transistors per die"),
    ("design__weights__bits_per_weight", "bits per weight (mean)"),
    ("design__tiles__used", "weight tiles used"),
    ("design__tiles__utilization", "tile utilisation"),
    ("design__via__per_weight", "vias per weight"),
    ("design__tile__full_adders", "full adders per tile"),
    ("design__tile__bits_per_um2", "bit/µm² of the tile's sites"),
    ("design__die__bits_per_um2", "bit/µm² of the whole die"),
    ("timing__clock__fmax_mhz", "Fmax (MHz)"),
    ("timing__clock__period_ps", "clock period used (ps)"),
    ("timing__pipeline__depth_cycles", "cycles per token"),
    ("throughput__single_stream__tokens_per_s", "tokens/s per user"),
    ("throughput__aggregate__tokens_per_s", "aggregate tokens/s"),
    ("throughput__pipeline__max_streams", "streams in flight (max)"),
    ("throughput__users__served", f"users whose KV fits at {CONTEXT} tokens"),
    ("power__mac__energy_fj", "energy per MAC (fJ)"),
    ("power__token__dynamic_joules", "dynamic J per token"),
    ("power__attention__energy_per_token", "  of which attention and softmax (J)"),
    ("power__kv_cache__energy_per_token", "  of which KV-cache reads and writes (J)"),
    ("power__broadcast__energy_per_token", "  of which activation broadcast (J)"),
    ("power__dynamic__watts", "dynamic W (with the clock tree)"),
    ("power__clock_tree__watts", "  of which clock-tree wires (W)"),
    ("power__clock__watts", "clock W (flip-flops)"),
    ("power__leakage_25c__watts", "leakage W at 25 °C"),
    ("power__leakage__watts", "leakage W at 85 °C"),
    ("power__die__watts", "W per die"),
    ("power__token__joules", "J per token"),
    ("power__tokens__per_joule", "tokens/J (against the dies' power)"),
    ("sram__kv_cache__bytes_per_token", "KV bytes per token"),
    ("cost__wafer__dies_gross", "gross dies per wafer"),
    ("cost__yield__negative_binomial", "yield (neg. binomial)"),
    ("cost__die__usd", "cost per good die (USD)"),
    ("cost__nre__custom_masks_usd", "custom-mask NRE (USD)"),
)
HC1_EXTRA = {"cost__nre__custom_masks_usd": "2 masks per model",
             "design__weights__bits_per_weight": "3 with some 6",
             "power__die__watts": "~200–250 W per card"}


def calibration_reports(base_name: str = BASE) -> dict[str, Report]:
    """Llama 3.1 8B on ``base_name`` at uniform 3 bits and at the 3/6 heuristic within 3.5
    b/w, and on the select-encoded HC1-class base at the same heuristic."""
    from taalasc.config import load_base_array

    base = load_base_array(base_name)
    model = shape_from_preset("llama-3.1-8b")
    auto = (3, 6, 3.5)
    return {
        "3 bits": estimate(model, base, default_bits=3, context=CONTEXT),
        "3/6 auto, 3.5 b/w": estimate(model, base, auto=auto, context=CONTEXT),
        f"{SELECT_BASE}, 3/6 auto": attach_published(
            estimate(model, load_base_array(SELECT_BASE), auto=auto, context=CONTEXT),
            "llama-3.1-8b"),
    }


def calibration_table(reports: dict[str, Report]) -> str:
    labels = list(reports)
    lines = ["| figure | " + " | ".join(f"taalasc, {k}" for k in labels) + " | HC1 |",
             "|---|" + "---:|" * len(labels) + "---|"]
    for name, label in ROWS:
        hc1 = HC1_EXTRA.get(name) or _hc1_text(name)
        values = [format_value(r.value(name)) if name in r.names() else "—"
                  for r in reports.values()]
        lines.append(f"| {label} (`{name}`) | " + " | ".join(values) + f" | {hc1} |")
    return "\n".join(lines) + "\n"


def hc1_within_table(reports: dict[str, Report]) -> str:
    """HC1's published figures beside hc1-n6-select's estimate."""
    return published_markdown(reports[f"{SELECT_BASE}, 3/6 auto"].published)


def hnlpu_reports() -> dict[str, Report]:
    """gpt-oss-120b (MXFP4: 4 bits, group 32) on hc1-n6-select, one user and as many users
    as the KV SRAM of the dies holds at CONTEXT."""
    from taalasc.config import load_base_array

    base = load_base_array(SELECT_BASE)
    model = shape_from_preset("gpt-oss-120b")
    out = {}
    for label, users in (("1 user", 1), ("users whose KV fits", MANY_USERS)):
        out[label] = attach_published(estimate(model, base, default_bits=HNLPU_BITS,
                                               group_size=HNLPU_GROUP, context=CONTEXT,
                                               users=users), "gpt-oss-120b")
    return out


def hnlpu_table(reports: dict[str, Report]) -> str:
    labels = list(reports)
    rows = {k: compare(r, HNLPU) for k, r in reports.items()}
    lines = ["| figure | " + " | ".join(f"taalasc, {k}" for k in labels) + " | HNLPU | "
             + " | ".join(f"ours / HNLPU, {k}" for k in labels) + " | source; measured against |",
             "|---|" + "---:|" * len(labels) + "---|" + "---|" * len(labels) + "---|"]
    extra = ("throughput__users__served", "power__die__watts", "design__weights__active_count",
             "design__tiles__active", "power__clock__watts", "power__leakage__watts")
    for i, claim in enumerate(HNLPU.claims):
        ours = [rows[k][i]["taalasc"] for k in labels]
        cells = ["—" if v is None else format_value(v) for v in ours]
        metric = f" (`{claim.metric}`)" if claim.metric else ""
        src = claim.source + (f"; {claim.basis}" if claim.basis else "")
        lines.append(f"| {claim.label}{metric} | " + " | ".join(cells) + f" | {claim.text} | "
                     + " | ".join(ratio_text(rows[k][i]) for k in labels) + f" | {src} |")
    for name in extra:
        cells = [format_value(r.value(name)) for r in reports.values()]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " | — | "
                     + " | ".join("—" for _ in labels) + " | — |")
    return "\n".join(lines) + "\n"


def papers_table() -> str:
    lines = ["| paper | source | node | weights | density as published | bit/µm² | notes |",
             "|---|---|---|---|---|---:|---|"]
    for p in PAPERS:
        density = "—" if p.bits_per_um2 is None else f"{p.bits_per_um2:.1f}"
        lines.append(f"| {p.name} | {p.source} | {p.node or 'not in the sources at hand'} | "
                     f"{p.weights} | {p.density_text} | "
                     f"{density} | {p.notes} |")
    return "\n".join(lines) + "\n"


ENCODING_BASES = (("tie-high-low", "hc1-n6"), ("select", SELECT_BASE),
                  ("zero-skip", "hc1-n6-zero-skip"), ("ternary", "hc1-n6-ternary"))
ENCODING_COLUMNS = (
    ("design__weights__bits_per_weight", "bits/weight"),
    ("design__via__count", "vias"),
    ("design__via__per_weight", "vias/weight"),
    ("design__tile__bits_per_um2", "bit/µm² tile"),
    ("design__die__bits_per_um2", "bit/µm² die"),
    ("design__tile__full_adders", "adders/tile (FA)"),
    ("design__die__count", "dies"),
    ("timing__pipeline__depth_cycles", "cycles/token"),
    ("throughput__single_stream__tokens_per_s", "tokens/s per user"),
    ("power__total__watts", "W (all dies)"),
    ("power__token__joules", "J/token"),
)


def encoding_reports() -> dict[str, Report]:
    """Llama 3.1 8B on the four HC1-class bases: the 3/6 heuristic within 3.5 b/w, and 2-bit
    (ternary) weights on the ternary base, group 128, context CONTEXT."""
    from taalasc.config import load_base_array

    model = shape_from_preset("llama-3.1-8b")
    out = {}
    for encoding, name in ENCODING_BASES:
        base = load_base_array(name)
        if encoding == "ternary":
            out[f"{encoding} ({name}, 2 bits)"] = estimate(model, base, default_bits=2,
                                                           context=CONTEXT)
        else:
            out[f"{encoding} ({name}, 3/6 auto)"] = estimate(model, base, auto=(3, 6, 3.5),
                                                             context=CONTEXT)
    return out


def encoding_table(reports: dict[str, Report]) -> str:
    lines = ["| encoding (base, bits) | " + " | ".join(label for _, label in ENCODING_COLUMNS)
             + " |", "|---|" + "---:|" * len(ENCODING_COLUMNS)]
    for label, r in reports.items():
        lines.append(f"| {label} | " + " | ".join(format_value(r.value(name))
                                                 for name, _ in ENCODING_COLUMNS) + " |")
    for p in PAPERS:
        density = "—" if p.bits_per_um2 is None else f"{p.bits_per_um2:.1f}"
        cells = ["—"] * len(ENCODING_COLUMNS)
        cells[3] = density
        node = f", {p.node}" if p.node else ""
        lines.append(f"| {p.name} ({p.source}{node}; paper) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables() -> dict[tuple[str, str], str]:
    """(document, marker) -> the table generated for it."""
    hc1 = calibration_reports()
    return {("calibration-hc1.md", "CALIBRATION-TABLE"): calibration_table(hc1),
            ("calibration-hc1.md", "HC1-WITHIN-TABLE"): hc1_within_table(hc1),
            ("calibration-hc1.md", "HNLPU-TABLE"): hnlpu_table(hnlpu_reports()),
            ("calibration-hc1.md", "PAPERS-TABLE"): papers_table(),
            ("estimate.md", "ENCODING-TABLE"): encoding_table(encoding_reports())}


def marked(text: str, marker: str) -> tuple[int, int]:
    """(start, end) of what lies between <!-- MARKER:BEGIN --> and <!-- MARKER:END -->."""
    begin, end = f"<!-- {marker}:BEGIN -->\n", f"<!-- {marker}:END -->"
    start = text.index(begin) + len(begin)
    return start, text.index(end, start)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    generated = tables()
    if "--write" not in argv:
        for (doc, marker), table in generated.items():
            print(f"<!-- {doc}: {marker} -->\n{table}")
        return
    for doc in sorted({d for d, _ in generated}):
        path = DOCS / doc
        text = path.read_text(encoding="utf-8")
        for (d, marker), table in generated.items():
            if d == doc:
                start, end = marked(text, marker)
                text = text[:start] + table + text[end:]
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
