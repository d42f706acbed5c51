"""The sign-off report: per-rule table, findings, metrics (OpenLane 2 names where they exist).

OpenLane 2 / LibreLane names: ``klayout__drc_error__count`` (markers in the KLayout DRC
databases, as its KLayout.DRC step counts them) and ``design__lvs_error__count`` (its
Netgen.LVS total). Figures OpenLane has no name for are ``signoff__*``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from taalasc.signoff.sites import KINDS, Finding

NOT_CHECKABLE = "not checkable without the base die"
NO_CELLS = "not checkable: the base die is drawn without standard cells"
TOOL_FALSE = "false positives of the KLayout version"
SECTIONS = (("violation", "Violations"),
            (NOT_CHECKABLE, "Not checkable without the base die"),
            (NO_CELLS, "Not checkable: the base die is drawn without standard cells or lower-"
                       "layer fill"),
            (TOOL_FALSE, "False positives of this KLayout (axis-parallel edges flagged by an "
                         "angle rule: KLayout 0.30.0 misjudges vertical edges over ~3 mm)"))
FORMAT = "taalasc-signoff/1"


@dataclass(frozen=True)
class RuleRow:
    deck: str
    rule: str
    description: str
    count: int                   # markers, summed over the dies
    section: str                 # "violation", NOT_CHECKABLE, NO_CELLS or TOOL_FALSE


@dataclass
class SignoffReport:
    compile_dir: str
    pdk: str
    merged: bool                 # on merged dies (base + custom), else the custom layers alone
    klayout: str | None          # KLayout application version, None without DRC
    decks: list[dict] = field(default_factory=list)    # name, path, found where, or skipped
    runs: list[dict] = field(default_factory=list)     # per die and deck: seconds, markers
    rules: list[RuleRow] = field(default_factory=list)
    rules_checked: int = 0       # categories in the decks' databases
    findings: list[Finding] = field(default_factory=list)
    finding_counts: Counter = field(default_factory=Counter)   # kind -> affected (exact)
    lvs: dict = field(default_factory=dict)            # sites, seconds, shapes, ... per die
    notes: list[str] = field(default_factory=list)

    @property
    def drc_errors(self) -> int:
        return sum(r.count for r in self.rules if r.section == "violation")

    @property
    def lvs_errors(self) -> int:
        return sum(self.finding_counts.values())

    @property
    def failed_runs(self) -> list[dict]:
        return [r for r in self.runs if r.get("error")]

    @property
    def passed(self) -> bool:
        return not self.drc_errors and not self.lvs_errors and not self.failed_runs

    def raise_if_failed(self, signoff_dir) -> "SignoffReport":
        """What `taalasc signoff` exits with after its table: ToolError (1) naming the log
        of a deck run that failed, CheckFailed (2) with the first violation; else this."""
        from pathlib import Path

        from taalasc.errors import CheckFailed, ToolError

        if self.failed_runs:
            r = self.failed_runs[0]
            raise ToolError(f"the {r['deck']} deck failed on {r['input']} ({r['error']}); its "
                            f"log: {Path(signoff_dir) / r['log']}")
        if not self.passed:
            worst = max((r for r in self.rules if r.section == "violation"),
                        key=lambda r: r.count, default=None)
            first = self.findings[0].describe() if self.findings else \
                f"{worst.rule} ({worst.deck}, {worst.count:,} markers)"
            raise CheckFailed(f"signoff failed: {self.drc_errors:,} DRC markers, "
                              f"{self.lvs_errors:,} LVS errors; first: {first}")
        return self

    def metrics(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        if self.klayout is not None:
            out["klayout__drc_error__count"] = self.drc_errors
            out["signoff__drc_not_checkable__count"] = sum(
                r.count for r in self.rules if r.section in (NOT_CHECKABLE, NO_CELLS))
            out["signoff__drc_tool_false_positive__count"] = sum(
                r.count for r in self.rules if r.section == TOOL_FALSE)
            out["signoff__drc_rules__count"] = self.rules_checked
            out["signoff__drc__seconds"] = round(sum(r["seconds"] for r in self.runs), 3)
        if self.lvs:
            out["design__lvs_error__count"] = self.lvs_errors
            for kind in KINDS:
                out[f"signoff__lvs_{kind.replace('-', '_')}__count"] = self.finding_counts[kind]
            for key in ("sites", "vias_on_nothing", "vias_not_checked", "fill_touching"):
                out[f"signoff__lvs_{key}__count"] = sum(d[key] for d in self.lvs.values())
            out["signoff__lvs_extract__seconds"] = round(
                sum(d["seconds"] for d in self.lvs.values()), 3)
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "compile": self.compile_dir, "pdk": self.pdk,
                "mode": "merged dies" if self.merged else "custom layers only",
                "passed": self.passed, "klayout": self.klayout, "metrics": self.metrics(),
                "decks": self.decks, "runs": self.runs,
                "rules": [asdict(r) for r in self.rules], "lvs": self.lvs,
                "findings": [asdict(f) for f in self.findings], "notes": self.notes}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def to_markdown(self) -> str:
        mode = "merged dies (base die + custom layers)" if self.merged else \
            "the custom layers alone (no merged die given)"
        lines = [f"# Sign-off of `{self.compile_dir}` ({self.pdk})", "",
                 f"Checked: {mode}. Result: **{'clean' if self.passed else 'FAILED'}**.", ""]
        if self.klayout is not None:
            lines += [f"## DRC (KLayout {self.klayout})", "",
                      "| die | deck | seconds | markers | |", "|---|---|---|---|---|"]
            lines += [f"| {r['die']} | {r['deck']} | {r['seconds']:.1f} | {r['markers']} | "
                      f"{r.get('error') or ''} |" for r in self.runs]
            lines.append("")
            for d in self.decks:
                if d.get("skipped"):
                    lines.append(f"- {d['name']}: skipped, {d['skipped']}")
            for section, title in SECTIONS:
                rows = [r for r in self.rules if r.section == section]
                if not rows and section in (NO_CELLS, TOOL_FALSE):
                    continue
                lines += ["", f"### {title}", ""]
                if not rows:
                    lines.append("none" if section == "violation" else
                                 "none (every rule could be judged)")
                    continue
                lines += ["| deck | rule | markers | description |", "|---|---|---|---|"]
                lines += [f"| {r.deck} | {r.rule} | {r.count} | {r.description} |" for r in rows]
            lines += ["", f"{self.rules_checked} rules checked; rules not listed have no "
                      "markers.", ""]
        if self.lvs:
            lines += ["## LVS-style extraction", "",
                      "| die | used sites | seconds | vias on nothing | errors |",
                      "|---|---|---|---|---|"]
            lines += [f"| {die} | {d['sites']} | {d['seconds']:.1f} | {d['vias_on_nothing']} | "
                      f"{d['errors']} |" for die, d in sorted(self.lvs.items())]
            lines += ["", "| finding | count | meaning |", "|---|---|---|"]
            lines += [f"| {kind} | {self.finding_counts[kind]} | {text} |"
                      for kind, text in KINDS.items() if self.finding_counts[kind]]
            if not self.lvs_errors:
                lines.append("| (none) | 0 | every gate input reaches exactly its rail |")
            lines += [""] + [f"- {f.describe()}" for f in self.findings[:50]]
            if len(self.findings) > 50:
                lines.append(f"- … {len(self.findings) - 50} more in signoff.json")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def rule_rows(deck: str, descriptions: dict[str, str], counts: Counter,
              needs_base: frozenset[str], merged: bool, needs_cells: frozenset[str] = frozenset(),
              false_positives: Counter | None = None) -> list[RuleRow]:
    """Rows for the categories with markers. Rules that need the base die go to their own
    section when there is none (on a merged die they are ordinary violations); on a merged
    die whose base has no standard cells, ``needs_cells`` rules go to theirs; markers in
    ``false_positives`` (rule -> count) are listed apart as the tool's."""
    rows = []
    false_positives = false_positives or Counter()
    for rule, count in sorted(counts.items()):
        text = descriptions.get(rule, "")
        wrong = min(false_positives[rule], count)
        if wrong:
            rows.append(RuleRow(deck, rule, text, wrong, TOOL_FALSE))
        if count - wrong:
            section = "violation"
            if rule in needs_base and not merged:
                section = NOT_CHECKABLE
            elif rule in needs_cells and merged:
                section = NO_CELLS
            rows.append(RuleRow(deck, rule, text, count - wrong, section))
    return rows
