"""Calibration against Taalas HC1: our estimate for Llama 3.1 8B on hc1-n6 beside HC1's figures.

Regenerate the table in docs/calibration-hc1.md with
    python -m taalasc.report.calibration
and paste it between the CALIBRATION-TABLE markers (tests/test_report_calibration.py checks
that the document shows the table the current code and YAML produce).
"""

from __future__ import annotations

from taalasc.report.estimate import estimate
from taalasc.report.metrics import Report, format_value
from taalasc.report.shape import shape_from_preset

BASE = "hc1-n6"
CONTEXT = 2048  # HC1's 17k tokens/s figure is quoted at 1k input / 1k output tokens

# (label, HC1's published figure, source)
HC1 = {
    "process": ("TSMC N6", "Taalas launch material, via EE Times / press coverage, Feb 2026"),
    "design__die__count": ("1", "one HC1 chip runs Llama 3.1 8B"),
    "design__die__area": ("815 mm²", "Taalas launch material"),
    "design__transistors__count": ("53 B", "Taalas launch material"),
    "design__weights__bits_per_weight": ("3 with some 6", "Taalas: custom 3-bit base + 6-bit "
                                         "parameters"),
    "throughput__single_stream__tokens_per_s": ("17,000", "Taalas: ~17k tokens/s per user, "
                                                "Llama 3.1 8B, 1k/1k context"),
    "power__die__watts": ("~200–250 W per card", "Taalas: 10 cards in a ~2.5 kW air-cooled "
                          "server; press quotes ~200 W per card"),
    "cost__nre__custom_masks_usd": ("2 masks per model", "EE Times: 'Taalas changes only two "
                                    "masks to customize a chip'"),
}
ROWS = (
    ("design__die__count", "dies"),
    ("design__die__area", "die area (mm²)"),
    ("design__die__total_area", "silicon per model (mm²)"),
    ("design__transistors__count", "transistors per die"),
    ("design__weights__bits_per_weight", "bits per weight (mean)"),
    ("design__tiles__used", "weight tiles used"),
    ("design__tiles__utilization", "tile utilisation"),
    ("timing__clock__fmax_mhz", "Fmax (MHz)"),
    ("timing__clock__period_ps", "clock period used (ps)"),
    ("timing__pipeline__depth_cycles", "cycles per token"),
    ("throughput__single_stream__tokens_per_s", "tokens/s per user"),
    ("throughput__pipeline__max_streams", "streams in flight (max)"),
    ("throughput__users__served", f"users whose KV fits at {CONTEXT} tokens"),
    ("power__mac__energy_fj", "energy per MAC (fJ)"),
    ("power__dynamic__watts", "dynamic W"),
    ("power__clock__watts", "clock W"),
    ("power__leakage__watts", "leakage W"),
    ("power__die__watts", "W per die"),
    ("power__token__joules", "J per token"),
    ("sram__kv_cache__bytes_per_token", "KV bytes per token"),
    ("cost__wafer__dies_gross", "gross dies per wafer"),
    ("cost__yield__negative_binomial", "yield (neg. binomial)"),
    ("cost__die__usd", "cost per good die (USD)"),
    ("cost__nre__custom_masks_usd", "custom-mask NRE (USD)"),
)


def calibration_reports(base_name: str = BASE) -> dict[str, Report]:
    """The two bit policies compared: uniform 3 bits, and the 3/6 heuristic at 3.5 b/w."""
    from taalasc.config import load_base_array

    base = load_base_array(base_name)
    model = shape_from_preset("llama-3.1-8b")
    return {
        "3 bits": estimate(model, base, default_bits=3, context=CONTEXT),
        "3/6 auto, 3.5 b/w": estimate(model, base, auto=(3, 6, 3.5), context=CONTEXT),
    }


def calibration_table(reports: dict[str, Report]) -> str:
    labels = list(reports)
    lines = ["| figure | " + " | ".join(f"taalasc, {k}" for k in labels) + " | HC1 |",
             "|---|" + "---:|" * len(labels) + "---|"]
    for name, label in ROWS:
        hc1 = HC1.get(name, ("—", ""))[0]
        values = [format_value(r.value(name)) for r in reports.values()]
        lines.append(f"| {label} (`{name}`) | " + " | ".join(values) + f" | {hc1} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    print(calibration_table(calibration_reports()), end="")


if __name__ == "__main__":
    main()
