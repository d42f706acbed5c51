"""`taalasc faults`: inject via opens, shorts and flips and measure the quality they cost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from taalasc.commands.common import jsonable
from taalasc.commands.simulate import parse_tokens

DEFAULT_RATES = (1e-6, 1e-5, 1e-4, 1e-3)


@click.command("faults")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--rate", "rates", type=float, multiple=True, default=DEFAULT_RATES,
              show_default=True, help="Fault rate per used bit site, per fault kind (repeatable).")
@click.option("--kind", "kinds", type=click.Choice(["flip", "open", "short"]), multiple=True,
              default=("flip", "open", "short"), show_default=True,
              help="Fault kinds to inject, each at --rate (repeatable).")
@click.option("--trials", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Seeded trials per rate; the table shows the mean and the worst.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of every draw.")
@click.option("--tokens", default=None, metavar="'ID ID ...'",
              help="Input token ids (default: 16 seeded ids, as `taalasc verify`).")
@click.option("--fragile", type=click.IntRange(0, 10_000), default=10, show_default=True,
              help="List the N most fragile tensors (0: skip the fragility sweep).")
@click.option("--fragile-rate", type=float, default=1e-4, show_default=True,
              help="Rate of the fragility sweep (at least --min-faults faults per array).")
@click.option("--min-faults", type=click.IntRange(1, 10_000), default=32, show_default=True,
              help="Least faults injected per array in the fragility sweep.")
@click.option("--open-model", type=click.Choice(["zero", "random"]), default="zero",
              show_default=True, help="What an open (missing via) reads: 0 (pull-down keeper) "
                                      "or a seeded random bit.")
@click.option("--short-model", type=click.Choice(["row", "site"]), default="row",
              show_default=True, help="A short (two vias) pulls its whole site row's straps "
                                      "low (row) or only its own site (site).")
@click.option("--format", "fmt", type=click.Choice(["gds", "oas"]), default=None,
              help="Which mask files to extract the weights from (default: GDSII when the "
                   "compile wrote it, else OASIS).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the result as JSON to this file (an infinite KL is null).")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path), default=None,
              help="Also write the tables as Markdown to this file.")
def faults_cmd(out_dir, model, rates, kinds, trials, seed, tokens, fragile, fragile_rate,
               min_faults, open_model, short_model, fmt, json_path, md_path):
    """Extract the weights of the compile in OUT_DIR, inject random via faults (flips,
    opens, shorts) at each --rate per bit site in memory (the mask files are not touched),
    run the chip model for MODEL and print the quality curve against the float reference and
    against the fault-free chip, then the most fragile tensors. A measurement: exit 0, or 1
    on bad input."""
    from taalasc.console import console, print_tables
    from taalasc.errors import safe_markup
    from taalasc.faults import FaultBench, fault_curve, fragility
    from taalasc.outdir import atomic_file, check_output_file

    check_output_file(json_path, (out_dir, model), "--json")
    check_output_file(md_path, (out_dir, model), "--markdown")
    ids = parse_tokens(tokens) if tokens is not None else None
    options = {"open_model": open_model, "short_model": short_model}
    bench = FaultBench(out_dir, model, ids, fmt)
    kinds = tuple(sorted(set(kinds)))
    curve = fault_curve(out_dir, model, list(rates), kinds, trials, seed, bench=bench, **options)
    result = {"out_dir": str(out_dir), "model": str(model), "tokens": bench.tokens,
              "seed": seed, "fault_model": options, "sites": bench.placement.sites_used,
              "mask_defects": bench.extraction.defect_count, "clean": bench.clean_figures,
              "curve": curve, "fragility": None}
    if fragile:
        result["fragility"] = fragility(out_dir, model, fragile_rate, seed, kinds=kinds,
                                        trials=trials, min_faults=min_faults, bench=bench,
                                        **options)
    out = console()
    for title, header, rows in tables(result, fragile):
        print_tables(out, safe_markup(title), header, rows, right=range(1, len(header)))
    if json_path is not None:
        with atomic_file(json_path) as tmp:
            tmp.write_text(json.dumps(jsonable(result), indent=1, sort_keys=True,
                                      allow_nan=False) + "\n")
    if md_path is not None:
        with atomic_file(md_path) as tmp:
            tmp.write_text(markdown(result, fragile))


def _fmt(value: float) -> str:
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.1e}"


def _unit(figure: str) -> str:
    """A figure's name with its unit: KL divergences are in nats; top-1 agreement and cosine
    are fractions (1 = same as the reference)."""
    return f"{figure} (nats)" if figure.startswith("kl_") else figure


def tables(result: dict, fragile: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the curve, the fragile tensors, and by kind / by bit."""
    decoder = "top1_vs_float" in result["clean"]
    figs = (["top1_vs_float", "kl_vs_float", "top1_vs_chip", "kl_vs_chip"] if decoder
            else ["cosine_vs_float", "cosine_vs_chip"])
    header = ["rate/site", "faults"] + [f"{_unit(f)} mean (worst)" for f in figs] + ["lost pos."]
    clean = result["clean"]
    rows = [["0 (fault-free)", "0"] + [_fmt(clean[f]) for f in figs] + ["0"]]
    for r in result["curve"]:
        rows.append([_fmt(r["rate"]), _fmt(r["faults_mean"])]
                    + [f"{_fmt(r[f + '_mean'])} ({_fmt(r[f + '_worst'])})" for f in figs]
                    + [_fmt(r["nonfinite_positions_worst"])])
    kinds = ", ".join(result["curve"][0]["kinds"]) if result["curve"] else ""
    out = [(f"fault curve: {kinds} at each rate, {result['sites']:,} sites, "
            f"{result['curve'][0]['trials'] if result['curve'] else 0} trials", header, rows)]
    frag = result.get("fragility")
    if frag:
        damage = frag["damage"]
        out.append((f"{fragile} most fragile arrays ({damage} per fault, rate "
                    f"{_fmt(frag['rate'])}, at least the given faults each)",
                    ["tensor", "stream", "sites", "faults", _unit(damage), "per fault"],
                    [[r["tensor"], r["stream"], f"{r['sites']:,}", _fmt(r["faults"]),
                      _fmt(r["damage"]), _fmt(r["damage_per_fault"])]
                     for r in frag["streams"][:fragile]]))
        out.append(("fragility by stream kind", ["stream", "arrays", "sites", "per fault"],
                    [[r["stream"], str(r["arrays"]), f"{r['sites']:,}",
                      _fmt(r["damage_per_fault"])] for r in frag["by_kind"]]))
        out.append(("flips at one bit position (code lsb/sign; fp16: 15 sign, 10-14 exponent, "
                    "0-9 mantissa)", ["stream", "bit", "faults", _unit(damage), "per fault"],
                    [[r["stream"], str(r["bit"]), _fmt(r["faults"]), _fmt(r["damage"]),
                      _fmt(r["damage_per_fault"])] for r in frag["by_bit"]]))
    return out


def markdown(result: dict, fragile: int) -> str:
    """The same tables as GitHub Markdown."""
    parts = []
    for title, header, rows in tables(result, fragile):
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
