"""The command line: a thin click layer over the library.

Commands are registered by module path and imported only when run, so ``taalasc --help``
stays fast and a broken optional command cannot break the others.

Exit codes: 0 ok, 1 bad input or internal error, 2 a check failed. Errors are printed as
one line (``error: ...``) without a traceback; set TAALASC_DEBUG=1 to see one.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from taalasc import __version__
from taalasc.errors import EXIT_ERROR, TaalascError

# name -> (module, attribute, one-line help shown in `taalasc --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "quantize": ("taalasc.commands.quantize", "quantize", "Quantize a model in memory; print bits, group size and SQNR per tensor."),
    "estimate": ("taalasc.commands.estimate", "estimate_cmd", "Area, timing, power, SRAM and cost of printing a model, without reading weights."),
    "report": ("taalasc.commands.report", "report_cmd", "Print the report a compile wrote (OUTDIR/report.json)."),
    "compile": ("taalasc.commands.compile", "compile_cmd", "Quantize, place and draw the two custom mask layers (GDSII/OASIS)."),
    "demo": ("taalasc.commands.demo", "demo", "Write the embedded demo model and compile it (the README's first command)."),
    "configs": ("taalasc.commands.configs", "configs", "List, show and check PDK and base-array YAML files."),
    "simulate": ("taalasc.commands.simulate", "simulate", "Run the float reference and the bit-accurate chip model on token ids; print predictions and quality."),
    "verify": ("taalasc.commands.verify", "verify_cmd", "Extract the weights from the masks and prove the chip computes the model."),
    "diff": ("taalasc.commands.diff", "diff_cmd", "Compare two mask sets: shapes, tiles, tensors, masks to re-make, re-spin cost; exit 0/2/1 for CI."),
    "faults": ("taalasc.commands.faults", "faults_cmd", "Inject via opens, shorts and flips at given rates and measure the quality they cost."),
    "quality": ("taalasc.commands.quality", "quality_cmd", "Does my model still work on this chip? Perplexity or embedding cosine of chip vs float on text, per bit policy."),
    "inspect": ("taalasc.commands.inspect", "inspect_cmd", "Show a checkpoint's tensors, parameter count and config (headers only)."),
    "base": ("taalasc.commands.base", "base_group", "Draw the base die of a base array (standard cells, power grid, landings) as GDSII."),
    "merge": ("taalasc.commands.base", "merge_cmd", "Merge the base die with a compile's custom layers: one GDSII file per die."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


EPILOG = """\b
Exit codes: 0 ok, 1 bad input or internal error, 2 a check failed.
Set TAALASC_DEBUG=1 to see a traceback for an unexpected error."""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taalasc")
def cli() -> None:
    """taalasc prints a neural network onto a structured ASIC: it quantizes the weights, places
    them on a fixed base array, and draws only the two custom masks (top via and top metal)."""


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI, turn every failure into one line and an exit code."""
    debug = bool(os.environ.get("TAALASC_DEBUG"))
    try:
        code = cli.main(args=argv, prog_name="taalasc", standalone_mode=False)
    except click.exceptions.Abort:
        return _fail("interrupted", 130)
    except click.ClickException as exc:  # usage errors are bad input: 1, not click's 2
        exc.show()
        return EXIT_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except TaalascError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted; outputs left as they were", 130)
    except MemoryError:
        return _fail("out of memory", EXIT_ERROR)
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if debug:
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} "
                     "(please report it; TAALASC_DEBUG=1 shows the traceback)", EXIT_ERROR)
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())


