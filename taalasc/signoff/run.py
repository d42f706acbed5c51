"""`taalasc signoff`: the PDK's DRC decks and the LVS-style extraction over every die of a
compile, into a new folder (never into the compile folder: verify requires it to hold
exactly the compile's files).

With merged dies (``taalasc merge OUT -o DIR``: base die + custom layers, ``die{n}.gds``)
both checks run on them. Without, they run on the custom layers alone and the report says
what cannot be checked then. Prerequisites (KLayout, decks, the klayout Python package) are
checked before any work, so a missing one costs nothing and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from taalasc.base.recipe import recipe_for
from taalasc.errors import MaskError, OutputError, ToolError
from taalasc.extract.extract import base_of, mask_path, read_manifest
from taalasc.outdir import MANIFEST, check_output_folder, sha256_file, staged_output
from taalasc.signoff import decks as decks_mod
from taalasc.signoff.report import SignoffReport, rule_rows

KLAYOUT_MODULE = (0, 30)   # LayoutToNetlist.evaluate_nets and properties on shapes
REPORT_JSON, REPORT_MD = "signoff.json", "signoff.md"


@dataclass(frozen=True)
class SignoffOptions:
    decks: tuple[Path, ...] = ()       # --deck: deck files or folders
    merged: Path | None = None         # folder of merged dies (die{n}.gds)
    klayout: str = "klayout"           # the KLayout application
    drc: bool = True
    lvs: bool = True
    threads: int = 0                   # for the decks; 0: every core
    force: bool = False


def signoff(out_dir: Path, signoff_dir: Path,
            options: SignoffOptions = SignoffOptions()) -> SignoffReport:
    """Run the checks on the compile in ``out_dir``; write the report folder ``signoff_dir``."""
    from taalasc.place.store import read_placement

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    base = base_of(manifest, out_dir)
    placement = read_placement(out_dir, manifest)
    dies = [d for d in range(placement.dies) if manifest["dies"][d].get("present", True)]
    custom = {d: mask_path(out_dir, manifest, d, "gds") for d in dies}
    merged = _merged_dies(Path(options.merged), manifest, dies) if options.merged else None
    _check_target(Path(signoff_dir), out_dir, options.merged)

    report = SignoffReport(str(out_dir), base.pdk.name, merged is not None, None)
    report.notes += [f"die {d} was not written (a --die compile): not checked"
                     for d in range(placement.dies) if d not in dies]
    runnable: list = []
    if options.drc:
        version = decks_mod.klayout_version(options.klayout)
        report.klayout = decks_mod.version_text(version)
        found, notes = decks_mod.find_decks(base.pdk.name, tuple(options.decks))
        for f in found:
            entry = {"name": f.deck.name, "path": str(f.path), "found": f.where, "skipped": None}
            if version < f.deck.min_version:
                entry["skipped"] = (f"KLayout {report.klayout} is older than the "
                                    f"{decks_mod.version_text(f.deck.min_version)} it needs")
            else:
                runnable.append(f)
            report.decks.append(entry)
        report.notes += notes
        if not runnable:
            need = decks_mod.version_text(max(f.deck.min_version for f in found))
            raise ToolError(f"KLayout {report.klayout} is too old for the {base.pdk.name} "
                            f"decks (they need {need} or newer); install a newer KLayout "
                            "(https://www.klayout.de/build.html) and pass --klayout PATH, "
                            "or run the extraction alone with --no-drc")
    if options.lvs:
        if base.weight_tile.encoding != "tie-high-low":
            raise ToolError(f"the extraction judges tie-high-low sites (each landing on VPWR or "
                            f"VGND); {base.name} stores {base.weight_tile.encoding!r} sites: run "
                            "the decks alone with --no-lvs (`taalasc verify` reads the sites "
                            "back from the vias)")
        _check_klayout_module()
    digest = _digest(manifest, merged, runnable, report.klayout, options)
    threads = options.threads or os.cpu_count() or 1
    with staged_output(Path(signoff_dir), inputs_digest=digest, force=options.force,
                       inputs=[out_dir, options.merged, *options.decks]) as stage:
        counts: dict[str, Counter] = {}
        descriptions: dict[str, dict[str, str]] = {}
        false_positives: dict[str, Counter] = {}
        for die in dies:
            layout = merged[die] if merged else custom[die]
            for found in runnable:
                _drc(report, stage, die, layout, found, options.klayout, threads, counts,
                     descriptions, false_positives)
            if options.lvs:
                _lvs(report, stage, die, base, placement, custom[die], merged)
        # A merged die whose base is drawn without standard cells (IHP, GF180).
        no_cells = merged is not None and recipe_for(base.pdk).cells is None
        needs_cells = decks_mod.NEEDS_CELLS.get(base.pdk.name, frozenset()) if no_cells \
            else frozenset()
        for deck, per_rule in counts.items():
            report.rules += rule_rows(deck, descriptions[deck], per_rule,
                                      decks_mod.NEEDS_BASE.get(base.pdk.name, frozenset()),
                                      merged is not None, needs_cells,
                                      false_positives.get(deck))
        report.rules_checked = sum(len(d) for d in descriptions.values())
        report.notes += _limits(report, merged is not None, no_cells)
        (stage / REPORT_JSON).write_text(report.to_json())
        (stage / REPORT_MD).write_text(report.to_markdown())
        _write_manifest(stage, digest, out_dir, options)
    return report


def _drc(report, stage: Path, die: int, layout: Path, found, klayout: str, threads: int,
         counts: dict, descriptions: dict, false_positives: dict) -> None:
    from taalasc.signoff.rdb import axis_parallel_angle_markers, read_markers

    name = f"die{die}.{found.deck.name}"
    run = decks_mod.run_deck(klayout, found, layout, stage / f"{name}.lyrdb",
                             stage / f"{name}.log", threads)
    markers = 0
    if run.error is None:
        db = read_markers(run.report)
        counts.setdefault(found.deck.name, Counter()).update(db.counts)
        descriptions.setdefault(found.deck.name, {}).update(db.descriptions)
        false_positives.setdefault(found.deck.name, Counter()).update(
            axis_parallel_angle_markers(run.report, {r for r, n in db.counts.items() if n}))
        markers = sum(db.counts.values())
    report.runs.append({"die": die, "deck": found.deck.name, "input": layout.name,
                        "seconds": round(run.seconds, 3), "markers": markers,
                        "error": run.error, "log": run.log.name})


def _lvs(report, stage: Path, die: int, base, placement, custom_gds: Path,
         merged: dict | None) -> None:
    from taalasc.signoff.lvs import RAILS, connect_die
    from taalasc.signoff.rdb import write_markers
    from taalasc.signoff.sites import (KINDS, Finding, compare, rail_findings, via_counts,
                                       via_findings)

    start = time.perf_counter()
    assignments = placement.on_die(die)
    tiles = [(s.column, s.row) for s, _ in assignments]
    layout = merged[die] if merged else custom_gds
    rails = merged is not None and base.pdk.name in RAILS
    conn = connect_die(layout, base, tiles, merged=merged is not None, rails=rails)
    findings: list[Finding] = []
    try:
        counts = via_counts(custom_gds, base, assignments)
    except MaskError as exc:
        counts = None
        findings.append(Finding("decoder", die, str(exc), 1, None))
    passes = 1
    rail = rail_findings(die, conn, assignments, base) if rails else []
    local = conn
    if any(f.kind == "rails-shorted" for f in rail):
        # One supply net: every site shows both rails. The straps' own nets (the rail via
        # left out) say which strap or site joins them.
        passes = 2
        local = connect_die(layout, base, tiles, merged=True, rails=False)
    findings += compare(die, local, counts, assignments, base) + rail + via_findings(die, conn)
    report.findings += findings
    for f in findings:
        report.finding_counts[f.kind] += f.count
    categories = {kind: (text, [f.box for f in findings if f.kind == kind and f.box])
                  for kind, text in KINDS.items()}
    categories["via-on-nothing"] = (
        "every custom via touching no metal below", [tuple(b) for b in
                                                     conn.vias_on_nothing.tolist()])
    write_markers(stage / f"die{die}.lvs.lyrdb", conn.top_cell,
                  f"taalasc signoff: LVS-style extraction of {layout.name}",
                  {k: v for k, v in categories.items() if v[1]})
    report.lvs[die] = {
        "input": layout.name, "sites": int(sum(seg.used_sites for _, seg in assignments)),
        "seconds": round(time.perf_counter() - start, 3), "passes": passes,
        "steps": {k: round(v, 3) for k, v in conn.seconds.items()}, "shapes": conn.shapes,
        "rails_connected": rails, "labels": conn.labels,
        "vias_on_nothing": len(conn.vias_on_nothing), "vias_not_checked": conn.vias_not_checked,
        "fill_touching": conn.fill_touching, "errors": sum(f.count for f in findings)}


def _merged_dies(folder: Path, manifest: dict, dies: list[int]) -> dict[int, Path]:
    """die -> merged GDS in ``folder``; MaskError when one is missing or the folder's merge
    manifest names another compile."""
    if not folder.is_dir():
        raise MaskError(f"--merged {folder}: not a folder (write one with `taalasc merge OUT "
                        "-o DIR`)")
    info = folder / MANIFEST
    if info.is_file():
        try:
            digest = json.loads(info.read_text()).get("inputs", {}).get("compile_inputs_digest")
        except (ValueError, OSError, AttributeError):
            raise MaskError(f"{info}: not a readable merge manifest") from None
        if digest is not None and digest != manifest.get("inputs_digest"):
            raise MaskError(f"--merged {folder}: merged from another compile (its manifest "
                            "names other compile inputs); merge this compile again")
    out = {}
    for die in dies:
        path = folder / f"die{die}.gds"
        if not path.is_file():
            raise MaskError(f"--merged {folder}: no die{die}.gds (merged dies are written by "
                            "`taalasc merge OUT -o DIR`)")
        out[die] = path
    return out


def _check_target(target: Path, out_dir: Path, merged: Path | None) -> None:
    """The report folder must not lie in an input folder (staged_output refuses the other
    way round: an input inside it)."""
    folder = check_output_folder(target)
    for given, what in ((out_dir, "compile"), (merged, "merged-die")):
        if given is not None and (folder == Path(given).resolve()
                                  or Path(given).resolve() in folder.parents):
            raise OutputError(f"{target}: lies inside the {what} folder {given}; write the "
                              "sign-off elsewhere (verify needs the compile folder to hold "
                              "exactly the compile's files)")


def _check_klayout_module() -> None:
    try:
        import klayout.db as kdb
    except ImportError:
        raise ToolError("the extraction needs the klayout Python package: pip install "
                        "'taalasc[signoff]' (or run the DRC alone with --no-lvs)") from None
    version = tuple(int(p) for p in kdb.__version__.split(".")[:2] if p.isdigit())
    if version < KLAYOUT_MODULE:
        raise ToolError(f"the klayout Python package {kdb.__version__} is too old for the "
                        f"extraction (it needs {'.'.join(map(str, KLAYOUT_MODULE))}); pip "
                        "install -U klayout")


def _digest(manifest: dict, merged: dict | None, runnable: list, klayout: str | None,
            options: SignoffOptions) -> str:
    """What the sign-off depends on: the compile, the merged dies, the decks and KLayout."""
    inputs = {"compile": manifest.get("inputs_digest"), "outputs": manifest.get("outputs"),
              "merged": {str(d): sha256_file(p) for d, p in (merged or {}).items()},
              "decks": [[f.deck.name, sha256_file(f.path)] for f in runnable],
              "klayout": klayout, "drc": options.drc, "lvs": options.lvs}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _limits(report: SignoffReport, merged: bool, no_cells: bool = False) -> list[str]:
    """What this run could not check, in words."""
    if merged and no_cells:
        return ["The base die of this PDK is drawn without standard cells (no Python package "
                "ships them): frame, power grid, landings and tie pads only. The extraction "
                "proves every landing (a gate input's place) reaches its rail through the "
                "custom layers; the density of the front end and the metals under the rails "
                "is the full base die's, listed as not checkable."]
    if merged:
        return []
    notes = ["No merged die was given: the checks ran on the custom layers alone. Merge the "
             "base die (`taalasc merge OUT -o DIR`) and pass --merged DIR to check the chip."]
    if report.klayout is not None:
        notes.append("DRC: rules that fire only because the layers under the custom via are "
                     "absent are listed as not checkable; they are not counted as violations "
                     "here (on a merged die they are). Density decks measure the top metal "
                     "only.")
    if report.lvs:
        notes.append("Extraction: landings and tie pads were drawn from the base array's "
                     "geometry (taalasc.custom.geometry), not taken from a base die: it proves "
                     "the vias, straps and tie vias of the custom layers, not the base's "
                     "landings, via stacks or supply rails. Route vias land on the base's port "
                     "pads and are not checked.")
    return notes


def _write_manifest(stage: Path, digest: str, out_dir: Path, options: SignoffOptions) -> None:
    """The folder's manifest: what it was made from and every file it holds, so a later run
    of the same inputs may replace it (taalasc.outdir)."""
    outputs = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
               for p in sorted(stage.iterdir()) if p.is_file()}
    manifest = {"format": "taalasc-signoff-folder/1", "inputs_digest": digest,
                "inputs": {"compile": str(out_dir), "merged": str(options.merged or ""),
                           "decks": [str(d) for d in options.decks]},
                "outputs": outputs}
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
