"""Options and output helpers shared by several commands."""

from __future__ import annotations

import functools
import inspect
import math
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from taalasc.config import DEFAULT_BASE


class FiniteFloat(click.ParamType):
    """A finite number within [min, max]. click's FloatRange lets nan through (every
    comparison with nan is false) and float lets inf through; thresholds, rates and budgets
    given as nan would silently pass or fail every check."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None):
        self.min, self.max = min, max

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"must be a number, not {value!r}", param, ctx)
        if not math.isfinite(number):
            self.fail(f"must be a finite number, not {value!r}", param, ctx)
        if (self.min is not None and number < self.min) or \
                (self.max is not None and number > self.max):
            low = "" if self.min is None else f"{self.min:g} <= "
            high = "" if self.max is None else f" <= {self.max:g}"
            self.fail(f"must be {low}x{high}, not {number:g}", param, ctx)
        return number


def base_option(default: str = DEFAULT_BASE):
    return click.option("--base", "base", default=default, show_default=True,
                        help="Base array: a built-in name (see `taalasc configs list`) or a YAML path.")


# The calibrated-quantization options. A command whose function does not take them as
# parameters still accepts them: quant_options keeps them in ctx.meta for bit_policy.
_CALIB_PARAMS = ("method", "asymmetric", "calib", "calib_tokens", "awq")
_META_KEY = "taalasc.quant_options"


def quant_options(func):
    """--bits/--rule/--group-size/--auto/--budget and --method/--asym/--calib/--calib-tokens,
    shared by every command that quantizes."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - plain functions have signatures
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    stash = tuple(k for k in _CALIB_PARAMS if not takes_all and k not in params)

    @functools.wraps(func)
    def command(*args, **kwargs):
        if stash:
            meta = click.get_current_context().meta.setdefault(_META_KEY, {})
            meta.update({k: kwargs.pop(k) for k in stash if k in kwargs})
        return func(*args, **kwargs)

    f = command
    f = click.option("--calib-tokens", "calib_tokens", default=None, metavar="FILE",
                     help="Calibration token ids instead of text: whitespace-separated "
                          "integers, one sequence per line.")(f)
    f = click.option("--calib", "calib", default=None, metavar="FILE|default",
                     help="Calibration text (UTF-8, read with the model's tokenizer) for "
                          "--method gptq and --auto; 'default' is the sample shipped with "
                          "taalasc. With it, --auto ranks tensors by their measured output "
                          "error on these activations.")(f)
    f = click.option("--awq", is_flag=True,
                     help="Llama family: fold activation-aware scales into the RMSNorm "
                          "weights before quantizing (calibrated; helps most at 3 bits).")(f)
    f = click.option("--asym/--sym", "asymmetric", default=False, show_default=True,
                     help="Asymmetric codes (an fp16 minimum per group, GGUF Q4_1 style) or "
                          "symmetric ones.")(f)
    f = click.option("--method", type=click.Choice(["rtn", "gptq"]), default="rtn",
                     show_default=True,
                     help="Rounding: rtn (round to nearest) or gptq (error-compensating, "
                          "calibrated; --calib default unless given).")(f)
    f = click.option("--budget", type=FiniteFloat(2, 8), default=3.5, show_default=True,
                     help="Average bits per weight allowed by --auto.")(f)
    f = click.option("--auto", is_flag=True,
                     help="HC1-style mixed precision: 3 bits, 6 bits for the most "
                          "error-sensitive tensors within --budget.")(f)
    f = click.option("--group-size", default="32", show_default=True,
                     help="Weights per scale along the input dimension, or 'per-channel'.")(f)
    f = click.option("--rule", "rules", multiple=True, metavar="GLOB=BITS",
                     help="Bits for tensors matching a glob, e.g. '*.v_proj.*=6' (repeatable).")(f)
    f = click.option("--bits", type=click.IntRange(2, 8), default=4, show_default=True,
                     help="Default bits per weight.")(f)
    return f


def parse_group_size(text: str) -> int | None:
    if text in ("per-channel", "channel"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"must be a positive integer or 'per-channel', not {text!r}",
                                 param_hint="--group-size") from None
    if value <= 0:  # 0 once meant per-channel silently; say it in words instead
        raise click.BadParameter(f"must be a positive integer or 'per-channel', not {value}",
                                 param_hint="--group-size")
    return value


def bit_policy(ctx: click.Context, bits: int, rules: tuple[str, ...], group_size: str,
               auto: bool, budget: float, high_bits: int = 6, *, method: str | None = None,
               asymmetric: bool | None = None, calib: str | None = None,
               calib_tokens: str | None = None, awq: bool | None = None):
    """The BitPolicy of the shared quantization options.

    With --auto the low width is 3 bits unless --bits was given on the command line.
    --method/--asym/--calib/--calib-tokens come from the arguments when given, else from
    what quant_options kept in the context."""
    from click.core import ParameterSource

    from taalasc.quant import AutoMixed, BitPolicy, parse_rule

    kept = ctx.meta.get(_META_KEY, {})
    method = method if method is not None else kept.get("method", "rtn")
    asymmetric = asymmetric if asymmetric is not None else kept.get("asymmetric", False)
    calib = calib if calib is not None else kept.get("calib")
    calib_tokens = calib_tokens if calib_tokens is not None else kept.get("calib_tokens")
    awq = kept.get("awq", False) if awq is None else awq
    extra = dict(method=method, asymmetric=bool(asymmetric), calib=calib,
                 calib_tokens=calib_tokens, awq=bool(awq))
    parsed = tuple(parse_rule(r) for r in rules)
    gs = parse_group_size(group_size)
    if not auto:
        return BitPolicy(default_bits=bits, rules=parsed, group_size=gs, **extra)
    given = ctx.get_parameter_source("bits") == ParameterSource.COMMANDLINE
    low = bits if given else AutoMixed().low_bits
    return BitPolicy(default_bits=low, rules=parsed, group_size=gs,
                     auto=AutoMixed(low_bits=low, high_bits=high_bits,
                                    budget_bits_per_weight=budget), **extra)


@contextmanager
def progress_bar(enabled: bool) -> Iterator:
    """A rich progress bar on a terminal; a no-op callback otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)
        yield tick


def print_table(title: str, rows: list[tuple[str, str]], justify: str = "right") -> None:
    """Key/value rows as a table that fits the terminal (taalasc.console): long values fold."""
    from taalasc.console import console, new_table
    from taalasc.errors import safe_markup

    # titles and values hold paths and names from the inputs: escaped
    table = new_table(safe_markup(title), ["", ""], right=[1] if justify == "right" else [],
                      show_header=False)
    for key, value in rows:
        table.add_row(f"[bold]{safe_markup(key)}[/]", safe_markup(value))
    console().print(table)


def emit_report(report, as_json: bool, as_md: bool) -> None:
    """A taalasc.report.Report on stdout: JSON, Markdown, or rich tables."""
    if as_json:  # json.dumps escapes control characters itself
        click.echo(report.to_json(), nl=False)
    elif as_md:
        echo_safe(report.to_markdown(), nl=False)
    else:
        report.print()


def write_html(path, text: str) -> None:
    """An HTML page (taalasc.report.html) written whole, then named on stderr."""
    from taalasc.outdir import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}", err=True)


def echo_safe(text: str, nl: bool = True) -> None:
    """click.echo for text that holds names and formulas read from files: each line escaped
    by safe_text, so none can drive the terminal."""
    from taalasc.errors import safe_text

    click.echo("\n".join(safe_text(line) for line in text.split("\n")), nl=nl)


def jsonable(value):
    """Strict JSON values: an infinite or NaN float (a KL of NaN chip outputs, say) becomes
    null, through dicts and lists."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
