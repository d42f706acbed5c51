"""The PDKs' own KLayout DRC decks: where they are installed, and running one in batch mode.

A deck is found, in this order:

1. ``--deck PATH``: a deck file (run as given), or a folder holding the PDK's deck files by
   their names (e.g. ``$PDK_ROOT/sky130A/libs.tech/klayout/drc``);
2. ``$TAALASC_PDK_DECKS/<pdk>/``: a folder of deck copies per PDK (the tests' layout);
3. ``$PDK_ROOT/<install folder>/``: where open_pdks / the IHP PDK install them.

Each deck runs in the KLayout application, ``klayout -b -r DECK -rd input=… -rd report=…``,
with the switches its PDK's own runner passes (all checks on, deep mode). Rules named in
``NEEDS_BASE`` are the ones that fire on the custom layers alone only because the layers
below the custom via are absent; ``taalasc signoff`` reports them apart when it has no
merged die (see docs/signoff.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from taalasc.errors import ToolError

INSTALL_KLAYOUT = ("install the KLayout application (Debian/Ubuntu: apt-get install klayout; "
                   "others: https://www.klayout.de/build.html) or pass --klayout PATH")
DECKS_ENV = "TAALASC_PDK_DECKS"


@dataclass(frozen=True)
class Deck:
    """One deck of a PDK: its file (relative to the PDK's deck folder) and how to call it."""
    pdk: str                     # taalasc PDK name (pdk_configs/*.yaml ``name``)
    name: str                    # short name in reports and file names
    file: str                    # path inside the deck folder
    install_dir: str             # the deck folder under $PDK_ROOT
    thread_variable: str | None  # the -rd name of the thread count
    switches: tuple[tuple[str, str], ...] = ()
    min_version: tuple[int, int, int] = (0, 0, 0)
    required: bool = True        # the PDK's main deck; the others run when present


_SKY130 = "sky130A/libs.tech/klayout/drc"
_IHP = "ihp-sg13g2/libs.tech/klayout/tech/drc"
_IHP_SWITCHES = (("run_mode", "deep"), ("tables", "main"))  # as IHP's run_drc.py passes them
_IHP_VERSION = (0, 29, 11)  # run_drc.py refuses older (uses without_touching_edges)

DECKS: dict[str, tuple[Deck, ...]] = {
    "sky130": (
        # efabless mpw_precheck's deck; open_pdks installs it as sky130A_mr.drc.
        Deck("sky130", "sky130A_mr", "sky130A_mr.drc", _SKY130, "thr",
             (("feol", "true"), ("beol", "true"), ("offgrid", "true"))),
        Deck("sky130", "met_min_ca_density", "met_min_ca_density.lydrc", _SKY130, None,
             required=False),
    ),
    "ihp-sg13g2": (
        Deck("ihp-sg13g2", "ihp-sg13g2", "ihp-sg13g2.drc", _IHP, "threads",
             _IHP_SWITCHES, _IHP_VERSION),
        Deck("ihp-sg13g2", "density", "rule_decks/density.drc", _IHP, "threads",
             _IHP_SWITCHES, _IHP_VERSION, required=False),
        Deck("ihp-sg13g2", "sg13g2_maximal", "rule_decks/sg13g2_maximal.drc", _IHP, "threads",
             _IHP_SWITCHES, _IHP_VERSION, required=False),
    ),
    "gf180mcu": (
        Deck("gf180mcu", "gf180mcuD_mr", "gf180mcuD_mr.drc", "gf180mcuD/libs.tech/klayout/drc",
             "thr", (("feol", "true"), ("beol", "true"), ("run_mode", "deep"))),
    ),
}

# Rules that fire on the custom layers alone because nothing below the custom via is drawn
# (measured on the demo masks, docs/signoff.md): "not checkable without the base die".
NEEDS_BASE: dict[str, frozenset[str]] = {
    "sky130": frozenset({"via4.4_a"}),    # "m4 must enclose all via4": there is no met4
    "ihp-sg13g2": frozenset({             # density of layers that are not there
        "AFil.g", "AFil.g2", "GFil.g", "M1Fil.h", "M2Fil.h", "M3Fil.h", "M4Fil.h", "M5Fil.h",
        "M1.j", "M2.j", "M3.j", "M4.j", "M5.j", "TM1.c"}),
    "gf180mcu": frozenset({"V4.3b"}),     # Metal4 overlap of Via4: there is no Metal4
}


# Rules that fire on a merged die because its base die is drawn without standard cells or
# the layers' own fill (IHP, GF180MCU: no cell package, taalasc.base.recipe): the front end
# and the metals under the rails are empty. They judge the base die a foundry flow
# completes, not the custom layers: "not checkable: the base die has no standard cells".
NEEDS_CELLS: dict[str, frozenset[str]] = {
    "ihp-sg13g2": frozenset({
        "AFil.g", "AFil.g2", "GFil.g", "M1Fil.h", "M2Fil.h", "M3Fil.h", "M4Fil.h", "M5Fil.h",
        "M1.j", "M2.j", "M3.j", "M4.j", "M5.j"}),
    "gf180mcu": frozenset(),
}


@dataclass(frozen=True)
class FoundDeck:
    deck: Deck
    path: Path
    where: str                   # how it was found: "--deck", "$TAALASC_PDK_DECKS", "$PDK_ROOT"

    def switches(self) -> list[tuple[str, str]]:
        """The deck's fixed switches, plus the files IHP's decks read beside themselves."""
        out = list(self.deck.switches)
        if self.deck.pdk == "ihp-sg13g2":
            folder = _deck_folder(self)
            default = folder / "rule_decks" / "sg13g2_tech_default.json"
            # the PDK keeps its technology values in the pycell library; a copy may sit beside
            for tech in (folder / "../../python/sg13g2_pycell_lib/sg13g2_tech_mod.json",
                         folder / "sg13g2_tech_mod.json", default):
                if tech.is_file():
                    out += [("drc_json_default", str(default)), ("drc_json", str(tech.resolve()))]
                    break
        return out


def _deck_folder(found: FoundDeck) -> Path:
    """The folder the deck's relative ``file`` is relative to (the PDK's deck folder)."""
    path, depth = found.path, len(Path(found.deck.file).parts)
    if path.parts[-depth:] == Path(found.deck.file).parts:
        return path.parents[depth - 1]
    return path.parent


def find_decks(pdk: str, given: tuple[Path, ...] = ()) -> tuple[list[FoundDeck], list[str]]:
    """The decks to run for ``pdk`` and notes on optional decks not found; ToolError when the
    PDK's main deck is nowhere (the line says where it looked and what to pass)."""
    specs = DECKS.get(pdk, ())
    if given:
        found: list[FoundDeck] = []
        for path in given:
            path = Path(path)
            if path.is_file():
                found.append(FoundDeck(_spec_for(pdk, path), path, "--deck"))
            elif path.is_dir():
                found += [FoundDeck(d, path / d.file, "--deck") for d in specs
                          if (path / d.file).is_file()]
            else:
                raise ToolError(f"--deck {path}: no such file or folder")
        if not found:
            raise ToolError(f"--deck {', '.join(map(str, given))}: holds none of the {pdk} "
                            f"decks ({', '.join(d.file for d in specs) or 'none known'})")
        return found, []
    if not specs:
        raise ToolError(f"no DRC deck is known for PDK {pdk!r}; pass --deck PATH")
    copies, root = os.environ.get(DECKS_ENV), os.environ.get("PDK_ROOT")
    if copies:
        folder, where = Path(copies) / pdk, f"${DECKS_ENV}"
    elif root:
        folder, where = Path(root), "$PDK_ROOT"
    else:
        raise ToolError(f"no {pdk} DRC deck: set PDK_ROOT to your PDK installation (it holds "
                        f"{specs[0].install_dir}/{specs[0].file}) or pass --deck PATH")
    found, notes = [], []
    for d in specs:
        path = folder / d.file if copies else folder / d.install_dir / d.file
        if path.is_file():
            found.append(FoundDeck(d, path, where))
        elif d.required:
            raise ToolError(f"no {pdk} DRC deck at {path} ({where}); install the PDK there "
                            "or pass --deck PATH")
        else:
            notes.append(f"{d.name}: not found at {path}, not run")
    return found, notes


def _spec_for(pdk: str, path: Path) -> Deck:
    """The known deck with this file name, or a generic one (input and report only)."""
    for d in DECKS.get(pdk, ()):
        if Path(d.file).name == path.name:
            return d
    return Deck(pdk, path.stem, path.name, "", None)


def klayout_version(klayout: str) -> tuple[int, int, int]:
    """``klayout -b -v`` as (major, minor, patch); ToolError when it cannot be run."""
    try:
        done = subprocess.run([klayout, "-b", "-v"], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolError(f"KLayout not found ({klayout!r}); {INSTALL_KLAYOUT}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"cannot run {klayout!r} -b -v ({exc}); {INSTALL_KLAYOUT}") from None
    match = re.search(r"KLayout (\d+)\.(\d+)(?:\.(\d+))?", done.stdout + done.stderr)
    if done.returncode != 0 or not match:
        raise ToolError(f"{klayout!r} -b -v did not print a KLayout version; {INSTALL_KLAYOUT}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class DeckRun:
    found: FoundDeck
    report: Path                 # the .lyrdb written
    log: Path
    seconds: float
    error: str | None            # why the run failed (KLayout's exit, no report), else None


def run_deck(klayout: str, found: FoundDeck, gds: Path, report: Path, log: Path,
             threads: int) -> DeckRun:
    """Run one deck on one die; KLayout's output goes to ``log``. The die file's single top
    cell is checked (every deck takes it when no top cell is named)."""
    deck = found.deck
    # KLayout runs in the log's folder: every path it is given must not depend on our cwd.
    gds, report, log = Path(gds).absolute(), Path(report).absolute(), Path(log).absolute()
    switches = [("input", str(gds)), ("report", str(report))]
    if deck.thread_variable:
        switches.append((deck.thread_variable, str(threads)))
    if deck.pdk == "ihp-sg13g2":
        switches.append(("log", str(log.with_suffix(".deck.log"))))
    switches += found.switches()
    argv = [klayout, "-b", "-r", str(Path(found.path).absolute())]
    for key, value in switches:
        argv += ["-rd", f"{key}={value}"]
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write(" ".join(argv) + "\n")
        out.flush()
        # Ctrl-C: subprocess.run kills KLayout before re-raising, so nothing keeps running.
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, cwd=log.parent)
    seconds = time.perf_counter() - start
    error = None
    if done.returncode != 0 or not report.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip()[:200] if len(lines) > 1 else "no output"
        error = (f"exit {done.returncode}" if done.returncode else "no report written") \
            + f": {last}"
    return DeckRun(found, report, log, seconds, error)
