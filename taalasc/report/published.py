"""Published silicon beside the estimate: Taalas HC1, HNLPU, and a paper tier of ROM densities.

Each published chip runs one model preset; ``taalasc estimate --preset`` of that model shows
its published figures beside ours (``attach_published``), one row per figure, with the ratio
ours / published and whether it lies within 2×. Per-user tokens/s, aggregate tokens/s and
tokens/J are separate figures, and each says what it is measured against: our tokens/J is
against the power of every die the model takes (power__tokens__per_joule); a published one
is against whatever its source measured (a card, a system). A figure that was not published
says so instead of a number. Only the sources named here are used; what they leave out is
marked, never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

from taalasc.report.metrics import Report, format_value

WITHIN = 2.0   # the calibration's tolerance: ours within 2× of the published figure


@dataclass(frozen=True)
class Claim:
    """One published figure; ``low``/``high`` bound it (equal for a point), None when the
    figure is not published or not comparable; ``metric`` is ours to compare it with."""

    label: str
    metric: str | None
    text: str
    low: float | None = None
    high: float | None = None
    source: str = ""
    basis: str = ""   # what the published figure is measured against, when it differs


@dataclass(frozen=True)
class Silicon:
    key: str
    name: str
    process: str
    preset: str
    claims: tuple[Claim, ...]


TAALAS = "Taalas launch material, Feb 2026 (EE Times and the technical press)"
HC1 = Silicon("hc1", "Taalas HC1", "TSMC N6, one 815 mm² die, 3-bit weights with some 6-bit",
              "llama-3.1-8b", (
                  Claim("tokens/s per user, claimed", "throughput__single_stream__tokens_per_s",
                        "17,000", 17_000, 17_000, TAALAS + "; 1k input / 1k output tokens"),
                  Claim("tokens/s per user, observed", "throughput__single_stream__tokens_per_s",
                        "14,400–15,600", 14_400, 15_600, "the public demo, as observed (issue "
                        "16); the press reports 15,000–16,000 sustained"),
                  Claim("aggregate tokens/s", "throughput__aggregate__tokens_per_s",
                        "not published", source="Taalas quotes per-user figures only"),
                  Claim("tokens/J", "power__tokens__per_joule", "68–85 (derived)", 68, 85,
                        "17,000 tokens/s ÷ 200–250 W", "a card at one user: derived, not "
                        "published; ours is against the die alone"),
                  Claim("power", "power__die__watts", "~200–250 W per card", 200, 250,
                        TAALAS + "; ten cards in a ~2.5 kW air-cooled server",
                        "a card (die, board, memory, power conversion); ours is the die"),
                  Claim("transistors per die", "design__transistors__count", "~53 B",
                        53e9, 53e9, TAALAS),
                  Claim("die area (mm²)", "design__die__area", "815", 815, 815, TAALAS),
                  Claim("dies", "design__die__count", "1", 1, 1, TAALAS),
                  Claim("custom masks per model", None, "2", source="EE Times: 'Taalas "
                        "changes only two masks to customize a chip'"),
              ))
HNLPU_SOURCE = "arXiv 2508.16151 (v2 abstract)"
HNLPU = Silicon("hnlpu", "HNLPU", "5 nm, 16 chips, weights in the metal wiring ('Metal-"
                "Embedding'), 60 of 70 masks shared", "gpt-oss-120b", (
                    Claim("tokens/s per user", "throughput__single_stream__tokens_per_s",
                          "not in the abstract", source=HNLPU_SOURCE),
                    Claim("aggregate tokens/s", "throughput__aggregate__tokens_per_s",
                          "249,960", 249_960, 249_960, HNLPU_SOURCE, "the 16-chip system; "
                          "its concurrency is not in the abstract"),
                    Claim("tokens/J", "power__tokens__per_joule", "36", 36, 36, HNLPU_SOURCE,
                          "the paper's system power (not broken down in the abstract)"),
                    Claim("power (W, implied)", "power__total__watts", "~6,900", 6_943, 6_943,
                          "249,960 tokens/s ÷ 36 tokens/J", "derived from the two figures"),
                    Claim("dies", "design__die__count", "16", 16, 16, HNLPU_SOURCE),
                    Claim("total die area (mm²)", "design__die__total_area", "13,232",
                          13_232, 13_232, HNLPU_SOURCE),
                    Claim("NRE", None, "$59.46–123.5 M", source=HNLPU_SOURCE + "; v1 gave "
                          "$184 M"),
                ))
SILICON = (HC1, HNLPU)


@dataclass(frozen=True)
class PaperDensity:
    """A ROM-LLM paper: its weight density where published, and what it runs."""

    name: str
    source: str
    node: str | None   # None: not in the sources at hand
    weights: str
    density_text: str
    bits_per_um2: float | None
    notes: str


PAPERS = (
    PaperDensity("ROMA", "arXiv 2503.12988", None,
                 "LLaMA 3B at 4 bits or 8B at 2 bits", "not in the sources at hand", None,
                 "1.86 GB of B-ROM and 304 MB of SRAM on chip; > 20,000 tokens/s, ~1 mJ/token"),
    PaperDensity("TOM", "arXiv 2602.20662", None,
                 "ternary BitNet-2B", "15.0 MB/mm² at a 65 % zero-bit ratio",
                 15.0 * 8 * 2 ** 20 / 1e6, "zero bits cost no area (ROM as logic); "
                 "3,306 tokens/s"),
    PaperDensity("BitROM", "arXiv 2509.08542", "65 nm", "ternary BitNet b1.58",
                 "4,967 kB/mm²", 4967 * 8 * 1024 / 1e6,
                 "two ternary weights per transistor, three lines (0, +1, −1) per cell; "
                 "20.8 TOPS/W"),
)


def silicon_for(preset: str | None) -> Silicon | None:
    key = (preset or "").lower()
    return next((s for s in SILICON if s.preset == key), None)


def compare(report: Report, silicon: Silicon) -> list[dict]:
    """One row per published figure: ours, theirs, the ratio and whether it is within 2×."""
    names = set(report.names())
    rows = []
    for c in silicon.claims:
        ours = report.value(c.metric) if c.metric in names else None
        row = {"chip": silicon.name, "figure": c.label, "metric": c.metric or "",
               "published": c.text, "source": c.source, "basis": c.basis,
               "taalasc": ours, "ratio": None, "within_2x": None}
        if isinstance(ours, (int, float)) and c.low and c.high:
            row["ratio"] = [ours / c.high, ours / c.low]
            row["within_2x"] = c.low / WITHIN <= ours <= c.high * WITHIN
        rows.append(row)
    return rows


def attach_published(report: Report, preset: str | None) -> Report:
    """``report`` with the published figures of the chip that runs ``preset``, if any."""
    silicon = silicon_for(preset)
    if silicon is not None:
        report.published = compare(report, silicon)
        report.meta["published"] = f"{silicon.name} ({silicon.process})"
    return report


def ratio_text(row: dict) -> str:
    if row["ratio"] is None:
        return "—"
    low, high = (f"{x:.2g}" if x < 10 else f"{x:,.0f}" for x in row["ratio"])
    text = f"{low}×" if low == high else f"{low}–{high}×"
    return text + ("" if row["within_2x"] else " (outside 2×)")


def published_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (report.py's Markdown and the calibration docs)."""
    lines = ["| figure | taalasc | published | ours / published | source; measured against |",
             "|---|---:|---|---|---|"]
    for r in rows:
        ours = "—" if r["taalasc"] is None else format_value(r["taalasc"])
        metric = f" (`{r['metric']}`)" if r["metric"] else ""
        lines.append(f"| {r['figure']}{metric} | {ours} | {r['published']} | {ratio_text(r)} "
                     f"| {source_text(r)} |")
    return "\n".join(lines) + "\n"


def source_text(row: dict) -> str:
    return row["source"] + (f"; {row['basis']}" if row["basis"] else "")
