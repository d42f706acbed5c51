"""The command line: a thin click layer over the library.

Commands are registered by module path and imported only when run, so ``taalasc --help``
stays fast and a broken optional command cannot break the others.

Exit codes: 0 ok, 1 bad input or internal error, 2 a check failed, 130 interrupted, 141
stdout closed early. Errors, usage errors included, are printed as one line
(``error: ...``) without a traceback; set TAALASC_DEBUG=1 to see one.
"""

from __future__ import annotations

import importlib
import os
import select
import sys
import traceback
import warnings

import click

from taalasc import __version__
from taalasc.errors import (EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, TaalascError,
                            safe_text)

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
    "signoff": ("taalasc.commands.signoff", "signoff_cmd", "Sign-off: the PDK's own KLayout DRC decks and an LVS-style extraction of every bit site; exit 0/2/1."),
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
Exit codes: 0 ok, 1 bad input or internal error, 2 a check failed, 130 interrupted.
Set TAALASC_DEBUG=1 to see a traceback for an unexpected error."""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taalasc")
def cli() -> None:
    """taalasc prints a neural network onto a structured ASIC: it quantizes the weights, places
    them on a fixed base array, and draws only the two custom masks (top via and top metal)."""


def _fail(lines: list[str] | str, code: int, exc: BaseException | None = None) -> int:
    """Print ``error: LINE`` (and any further lines of a ConfigError) on stderr, every line
    escaped by safe_text and cut at MAX_LINE_CHARS, so that a name or an excerpt read from a
    file can neither drive the terminal nor flood it. With TAALASC_DEBUG=1 the traceback of
    ``exc`` comes first."""
    lines = [lines] if isinstance(lines, str) else lines
    text = "".join(f"{'error: ' if i == 0 else ''}{safe_text(line, MAX_LINE_CHARS)}\n"
                   for i, line in enumerate(lines))
    try:
        if exc is not None and os.environ.get("TAALASC_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed too: the exit code is all that is left
        pass
    return code


MAX_LINE_CHARS = 2000


def _escape_unencodable() -> None:
    """On a terminal or pipe whose encoding lacks a character (PYTHONIOENCODING=ascii, a
    Latin-1 locale), print an escape (\\u00e9) instead of failing in mid-output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, OSError, ValueError):  # not a TextIOWrapper: leave it be
            pass


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (``taalasc ... | head``): poll reports
    POLLERR on such a write end. A BrokenPipeError from any other pipe is a real error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout (tests)
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is still buffered at exit does not
    raise BrokenPipeError again (Python would print "Exception ignored ...")."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass


def _invoke(argv: list[str] | None) -> int:
    """Parse and run a command. Not click's Command.main, which prints a usage block, echoes
    a blank line and "Aborted!" on Ctrl-C or end of input, and exits 1 on a broken pipe: every
    exception is left to ``main``."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        with cli.make_context("taalasc", args) as ctx:
            result = cli.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and turn every failure into one ``error:`` line and an exit code: 1 bad
    input (usage errors included) or internal error, 2 a check failed, 130 Ctrl-C, 141
    stdout closed early. docs/bad-input.md lists what each bad input prints."""
    _escape_unencodable()
    try:
        return _invoke(argv)
    except click.UsageError as exc:  # bad input: exit 1, not click's 2
        where = exc.ctx.command_path if exc.ctx is not None else "taalasc"
        # click raises this for a group run without a command; its message is the whole help
        text = ("Missing command." if isinstance(exc, click.exceptions.NoArgsIsHelpError)
                else exc.format_message())
        return _fail(f"{where}: {text}", EXIT_ERROR)
    except click.exceptions.Abort:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except click.ClickException as exc:  # e.g. a click.File that cannot be opened
        return _fail(exc.format_message(), EXIT_ERROR, exc)
    except TaalascError as exc:
        return _fail(exc.lines(), exc.exit_code, exc)
    except KeyboardInterrupt as exc:
        return _fail("interrupted", EXIT_INTERRUPTED, exc)
    except BrokenPipeError as exc:
        if not _stdout_closed():
            return _fail(f"broken pipe ({exc})", EXIT_ERROR, exc)
        _discard_stdout()  # the reader wanted no more: stop quietly, as `cat` does
        return EXIT_BROKEN_PIPE
    except SystemExit as exc:
        # rich's Console.on_broken_pipe has pointed stdout at /dev/null and exits 1 from
        # within its `except BrokenPipeError`: the same case as above
        if isinstance(exc.__context__, BrokenPipeError):
            return EXIT_BROKEN_PIPE
        raise
    except EOFError as exc:
        return _fail("unexpected end of input", EXIT_ERROR, exc)
    except MemoryError as exc:
        return _fail("out of memory", EXIT_ERROR, exc)
    except RecursionError as exc:
        return _fail("input nested too deeply (RecursionError); please report it", EXIT_ERROR,
                     exc)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else "?"
        return _fail(f"cannot encode {ascii(bad)} in {exc.encoding}; set "
                     "PYTHONIOENCODING=utf-8", EXIT_ERROR, exc)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR, exc)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        return _fail(f"internal error ({type(exc).__name__}: {safe_text(exc, 300)}); please "
                     "report it (TAALASC_DEBUG=1 shows the traceback)", EXIT_ERROR, exc)


def run() -> None:
    """The console entry point (``taalasc``, ``python -m taalasc``). Python warnings are
    silenced, also in worker processes, unless asked for with -W or PYTHONWARNINGS: the ones
    taalasc's own arithmetic would raise are handled where they arise (np.errstate with the
    reason), so what is left is library noise that must not crowd the one error line."""
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
        os.environ["PYTHONWARNINGS"] = "ignore"  # inherited by spawned workers
    sys.exit(main())
