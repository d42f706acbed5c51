"""Report records: typed metrics first, formatting second.

A Metric has a METRICS2.1-style name (``category__object__quantity``, e.g.
``design__die__area``), a value with its unit, the formula that produced it, and the inputs
of that formula, each with where it came from: a PDK or base-array field with its public
source, another metric, the model config, or a labelled assumption. Formatting (JSON,
Markdown, a rich table) reads these records and adds nothing.

File format (``report.json``, written by compile beside the masks)::

    {"format": "taalasc-report", "version": 1, "meta": {...},
     "notes": [...], "metrics": [{"name", "value", "unit", "formula", "inputs":
     {input: {"value", "source"}}, "higher_is_better", "description"}, ...]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taalasc.errors import OutputError

FORMAT = "taalasc-report"
VERSION = 1

Value = int | float | bool | str


@dataclass(frozen=True)
class Metric:
    """One reported figure, with the formula and sourced inputs that produced it."""

    name: str
    value: Value
    unit: str
    formula: str
    inputs: dict[str, tuple[Value, str]] = field(default_factory=dict)
    higher_is_better: bool | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _plain(self.value), "unit": self.unit,
                "formula": self.formula,
                "inputs": {k: {"value": _plain(v), "source": s}
                           for k, (v, s) in sorted(self.inputs.items())},
                "higher_is_better": self.higher_is_better, "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Metric":
        inputs = {k: (v["value"], v["source"]) for k, v in data.get("inputs", {}).items()}
        return cls(name=data["name"], value=data["value"], unit=data["unit"],
                   formula=data["formula"], inputs=inputs,
                   higher_is_better=data.get("higher_is_better"),
                   description=data.get("description", ""))


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to strings."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# --- input helpers: every input names its origin -------------------------------------------

def from_pdk(pdk, dotted: str) -> tuple[Value, str]:
    """A PDK number with its public source, e.g. ``from_pdk(pdk, "cells.full_adder_delay_ps")``."""
    section, _, key = dotted.partition(".")
    value = getattr(getattr(pdk, section), key)
    return value, f"pdk {pdk.name}: {dotted} — {pdk.source(dotted) or 'no source given'}"


def from_base(base, dotted: str) -> tuple[Value, str]:
    """A base-array field, e.g. ``from_base(base, "weight_tile.input_lanes")``."""
    holder: Any = base
    for part in dotted.split("."):
        holder = getattr(holder, part)
    return holder, f"base array {base.name}: {dotted}"


def from_metric(metric: Metric) -> tuple[Value, str]:
    return metric.value, f"metric {metric.name}"


def from_model(value: Value, what: str) -> tuple[Value, str]:
    return value, f"model: {what}"


def assumed(value: Value, why: str) -> tuple[Value, str]:
    return value, f"assumption: {why}"


# --- the report ------------------------------------------------------------------------------

@dataclass
class Report:
    """An ordered list of metrics plus context (model, base array, bit policy) and notes."""

    metrics: list[Metric]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # published silicon's figures beside ours (taalasc/report/published.py), estimate only
    published: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [m.name for m in self.metrics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"report: metric names must be unique, not repeated {dup}")

    def __getitem__(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def value(self, name: str) -> Value:
        return self[name].value

    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    # JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, "version": VERSION,
                "meta": {k: _plain(v) for k, v in sorted(self.meta.items())},
                "notes": list(self.notes), "metrics": [m.to_dict() for m in self.metrics]}
        if self.published:
            data["published"] = [dict(row) for row in self.published]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "report.json") -> "Report":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise OutputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise OutputError(f"{where}: format must be {FORMAT!r}, not "
                              f"{data.get('format') if isinstance(data, dict) else data!r}")
        if data.get("version") != VERSION:
            raise OutputError(f"{where}: version must be {VERSION}, not {data.get('version')!r}")
        try:
            metrics = [Metric.from_dict(m) for m in data["metrics"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise OutputError(f"{where}: metrics entry is malformed (missing {exc})") from None
        published = data.get("published", [])
        if not isinstance(published, list) or not all(isinstance(r, dict) for r in published):
            raise OutputError(f"{where}: published must be a list of objects")
        return cls(metrics, dict(data.get("meta", {})), list(data.get("notes", [])),
                   [dict(r) for r in published])

    def write(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "Report":
        path = Path(path)
        if not path.is_file():
            raise OutputError(f"{path}: no report here (compile writes report.json)")
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))

    # Markdown ----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        lines = ["# taalasc report", ""]
        for k, v in sorted(self.meta.items()):
            lines.append(f"- **{k}**: {v}")
        lines += ["", "| metric | value | unit | formula |", "|---|---:|---|---|"]
        for m in self.metrics:
            lines.append(f"| `{m.name}` | {format_value(m.value)} | {m.unit} | "
                         f"{_md(m.formula)} |")
        lines += ["", "## Inputs", ""]
        for m in self.metrics:
            if not m.inputs:
                continue
            lines.append(f"- `{m.name}`: " + "; ".join(
                f"{k} = {format_value(v)} ({_md(s)})" for k, (v, s) in sorted(m.inputs.items())))
        if self.published:
            from taalasc.report.published import published_markdown

            lines += ["", f"## Published: {_md(self.meta.get('published', ''))}", "",
                      published_markdown(self.published).rstrip("\n")]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {_md(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"

    # rich ----------------------------------------------------------------------------------
    def rich_table(self, title: str | None = None, width: int | None = None):
        """A table of every metric. From WIDE_COLUMNS on (or without ``width``) the formula
        has a column of its own; narrower, it goes under the metric's name, so that a
        terminal of 80 columns or a pipe shows every figure and formula whole."""
        from rich.console import Group
        from rich.padding import Padding
        from rich.text import Text

        from taalasc.console import new_table
        from taalasc.errors import safe_markup, safe_text

        # a report.json is a file like any other: names and formulas are escaped on the way out
        title = safe_markup(title or _title(self.meta))
        wide = width is None or width >= WIDE_COLUMNS
        header = ["metric", "value", "unit", "formula"] if wide else \
            ["metric (formula below)", "value", "unit"]
        table = new_table(title, header, right=[1])
        for m in self.metrics:
            name = Text(safe_text(m.name), style="cyan")
            value, unit = Text(format_value(m.value)), Text(safe_text(m.unit))
            formula = Text(safe_text(m.formula), style="dim" if not wide else "")
            if wide:
                table.add_row(name, value, unit, formula)
            else:
                table.add_row(Group(name, Padding(formula, (0, 0, 0, 2))), value, unit)
        return table

    def print(self, console=None) -> None:
        """The table and the notes on ``console`` (default: taalasc.console.console())."""
        from taalasc.console import console as terminal, print_text

        out = console or terminal()
        out.print(self.rich_table(width=out.width))
        if self.published:
            out.print(self.published_table())
        for note in self.notes:
            print_text(out, f"note: {note}")

    def published_table(self):
        """The published figures beside ours (taalasc/report/published.py) as a rich table."""
        from rich.text import Text

        from taalasc.console import new_table
        from taalasc.errors import safe_markup, safe_text
        from taalasc.report.published import ratio_text, source_text

        table = new_table(safe_markup(f"published: {self.meta.get('published', '')}"),
                          ["figure", "taalasc", "published", "ours / published",
                           "source; measured against"], right=[1])
        for r in self.published:
            ours = "—" if r.get("taalasc") is None else format_value(r["taalasc"])
            table.add_row(Text(safe_text(r.get("figure", ""))), Text(ours),
                          Text(safe_text(r.get("published", ""))), Text(ratio_text(r)),
                          Text(safe_text(source_text(r)), style="dim"))
        return table


WIDE_COLUMNS = 140   # a report's formulas get their own column from this terminal width


def _title(meta: dict[str, Any]) -> str:
    parts = [str(meta[k]) for k in ("model", "base_array", "bits") if k in meta]
    return "taalasc report — " + " · ".join(parts) if parts else "taalasc report"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_value(value: Any) -> str:
    """Human formatting: integers with thousands separators, floats with 4 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e6 or abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def format_percent(fraction: float) -> str:
    """A fraction as a percentage to 3 significant digits: "167 %", "0.5 %", "0.0027 %";
    "0 %" for zero and "<0.001 %" for a nonzero fraction too small to show."""
    percent = 100 * fraction
    if not math.isfinite(percent):
        return f"{percent} %"
    if percent == 0:
        return "0 %"
    if abs(percent) < 0.001:
        return "<0.001 %"
    if abs(percent) >= 999.5:   # 3 significant digits would need an exponent
        return f"{percent:,.0f} %"
    return f"{percent:.3g} %"
