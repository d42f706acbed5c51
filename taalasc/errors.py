"""The exception hierarchy. The CLI catches TaalascError once and prints it as one line.

Exit codes (documented in the README and `taalasc --help`):
  0  success
  1  bad input or internal error (every TaalascError except CheckFailed)
  2  a check failed (verify mismatch, diff above threshold, DRC violation)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHECK_FAILED = 2


class TaalascError(Exception):
    """Base class: anything the user can fix, reported without a traceback."""

    exit_code = EXIT_ERROR


class ConfigError(TaalascError):
    """A PDK or base-array YAML file is malformed or inconsistent.

    ``problems`` holds every problem found, each already prefixed with its key path,
    so that a user fixes them all in one pass.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{source}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  {source}: {p}" for p in self.problems)
            text = f"{source}: {len(self.problems)} problems\n{lines}"
        super().__init__(text)


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


class CheckFailed(TaalascError):
    """A check ran to completion and failed (verify, diff threshold, DRC)."""

    exit_code = EXIT_CHECK_FAILED
