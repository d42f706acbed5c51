"""The exception hierarchy, and safe_text for anything read from a file that reaches the
terminal. The CLI catches TaalascError once and prints it as one line.

Exit codes (documented in the README, docs/bad-input.md and `taalasc --help`):
  0    success
  1    bad input (a usage error too) or internal error (every TaalascError but CheckFailed)
  2    a check failed (verify mismatch, diff above threshold, DRC violation)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (`taalasc ... | head`); nothing is printed
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHECK_FAILED = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `cmd | head` reports for any tool cut short


# Characters that a terminal acts on instead of showing: C0 controls (ESC starts colour, cursor
# and title sequences; CR and BS overwrite), DEL, C1 controls (0x9b is a one-byte CSI), the
# Unicode bidi embeddings/overrides/isolates (they reorder what is shown, "Trojan Source"),
# the line and paragraph separators, and lone surrogates (a file name that is not UTF-8,
# decoded with surrogateescape, cannot even be encoded for printing).
_SHORT_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_VISIBLE = {c: _SHORT_ESCAPES.get(c, f"\\x{c:02x}")
            for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_VISIBLE.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                            0x2028, 0x2029)})
_VISIBLE.update({c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)})  # surrogateescape
_VISIBLE.update({c: f"\\u{c:04x}" for c in range(0xD800, 0xE000) if c not in _VISIBLE})


def safe_text(text: object, max_chars: int | None = None) -> str:
    """``text`` as one harmless line for a terminal: every control, bidi or surrogate
    character above becomes a visible escape (``\\x1b``, ``\\u202e``, ``\\n``); other
    characters, backslashes included, are unchanged. With ``max_chars``, longer text is cut
    there and says how much was left out (for excerpts of untrusted files)."""
    text = str(text)
    cut = ""
    if max_chars is not None and len(text) > max_chars:
        text, cut = text[:max_chars], f"... ({len(text) - max_chars:,} more characters)"
    return text.translate(_VISIBLE) + cut


def safe_markup(text: object) -> str:
    """``safe_text`` for rich output: also escapes rich markup, so that a tensor named
    ``[red]x`` prints as ``[red]x`` instead of turning the rest red (or vanishing)."""
    from rich.markup import escape

    return escape(safe_text(text))


class TaalascError(Exception):
    """Base class: anything the user can fix, reported without a traceback."""

    exit_code = EXIT_ERROR

    def lines(self) -> list[str]:
        """What the CLI prints after ``error: ``: one line (escaped there by safe_text, so a
        newline inside the message cannot start a second one)."""
        return [str(self)]


# A file of thousands of unknown keys would otherwise print thousands of lines.
MAX_PROBLEMS_SHOWN = 50


class ConfigError(TaalascError):
    """A PDK or base-array YAML file is malformed or inconsistent.

    ``problems`` holds every problem found, each already prefixed with its key path,
    so that a user fixes them all in one pass.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """``SOURCE: problem``, or ``SOURCE: N problems`` then one indented line per problem
        (at most MAX_PROBLEMS_SHOWN, then how many more)."""
        if len(self.problems) == 1:
            return [f"{self.source}: {self.problems[0]}"]
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines += [f"  {self.source}: {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  {self.source}: ... and {len(self.problems) - len(shown)} more")
        return lines


class ModelError(TaalascError):
    """A checkpoint, index or config.json cannot be read or does not make sense."""


class QuantizationError(TaalascError):
    """Bit rules or quantization options are invalid for the given model."""


class PlacementError(TaalascError):
    """The model does not fit, or the placement cannot be made."""


class MaskError(TaalascError):
    """A mask file cannot be written or read back."""


class OutputError(TaalascError):
    """An output folder cannot be written safely (exists, read-only, disk full)."""


class ToolError(TaalascError):
    """An outside tool a command needs (the KLayout application, a PDK's DRC deck) is
    missing, too old, or failed; the line says what to install or where the log is."""


class CheckFailed(TaalascError):
    """A check ran to completion and failed (verify, diff threshold, DRC)."""

    exit_code = EXIT_CHECK_FAILED

