"""Terminal output that fits: every table and note of the commands within the width.

On a terminal the width is the terminal's (rich reads it, or $COLUMNS). Piped or in a CI log
it is $COLUMNS when set, else PIPE_COLUMNS: rich's own default there is 80, and an unbounded
width makes lines nobody can read. Cells fold (wrap at spaces, split a word longer than the
column) instead of being cut with "…": a tensor name is never lost. A table whose columns do
not fit side by side is printed as several tables, each with the first (key) column again.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

PIPE_COLUMNS = 100
_COLUMN_OVERHEAD = 3   # a column's padding (1 + 1) and its right border; the table adds 1


def columns() -> int | None:
    """$COLUMNS when it is a positive integer."""
    text = os.environ.get("COLUMNS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def console(stderr: bool = False):
    """A rich Console as wide as the terminal, or $COLUMNS / PIPE_COLUMNS when not one."""
    from rich.console import Console

    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=columns() or PIPE_COLUMNS)


def new_table(title: str | None, header: Sequence[str], right: Sequence[int] = (),
              caption: str | None = None, show_header: bool = True, **options: Any):
    """A rich Table whose cells and headers fold rather than being cut. ``title``,
    ``caption`` and ``header`` are rich markup: escape what comes from the inputs."""
    from rich.table import Table

    table = Table(title=title, caption=caption, show_header=show_header, **options)
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in set(right) else "left",
                         overflow="fold", no_wrap=False)
    return table


WRAP_MIN = 16   # a column of running text (``wrap``) keeps at least this many characters


def _widths(header: Sequence[str], rows: Sequence[Sequence[str]],
            wrap: Sequence[int]) -> list[int]:
    """Each column's width without its padding and border: its widest cell (cells are not
    wrapped where a split avoids it) and its header (a long one wraps, down to WRAP_MIN or
    its longest word); a column of running text (in ``wrap``) needs only its longest word,
    or WRAP_MIN."""
    from rich.cells import cell_len

    def words(text: str) -> int:
        return max((cell_len(w) for w in str(text).split()), default=0)

    out = []
    for i, head in enumerate(header):
        cells = max([cell_len(str(r[i])) for r in rows], default=0)
        if i in set(wrap):
            cells = min(cells, max(WRAP_MIN, *(words(r[i]) for r in rows)))
        out.append(max(min(cell_len(str(head)), max(WRAP_MIN, words(head))), cells))
    return out


def column_groups(header: Sequence[str], rows: Sequence[Sequence[str]], width: int,
                  keys: int = 1, wrap: Sequence[int] = ()) -> list[list[int]]:
    """Columns split into groups that fit ``width`` side by side (see _widths), each led by
    the ``keys`` first columns; one group when everything fits."""
    need = [w + _COLUMN_OVERHEAD for w in _widths(header, rows, wrap)]
    lead = list(range(min(keys, len(header))))
    room = width - 1 - sum(need[i] for i in lead)
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in range(len(lead), len(header)):
        if current and used + need[i] > room:
            groups.append(lead + current)
            current, used = [], 0
        current.append(i)
        used += need[i]
    if current or not groups:
        groups.append(lead + current)
    return groups


def print_tables(out, title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[int] = (), keys: int = 1, caption: str | None = None,
                 wrap: Sequence[int] = ()) -> None:
    """Print a table on ``out`` (a Console), split into column groups when it is too wide
    (``keys``, ``wrap``: see column_groups). Cells are plain text (escaped here); ``title``
    and ``caption`` are rich markup."""
    from rich.markup import escape

    from taalasc.errors import safe_text

    # names from the checkpoint: control characters made visible, then markup escaped
    header = [safe_text(h) for h in header]
    rows = [[safe_text(c) for c in row] for row in rows]
    widths = _widths(header, rows, wrap)
    groups = column_groups(header, rows, out.width, keys, wrap)
    for n, group in enumerate(groups):
        part = title if len(groups) == 1 else f"{title} ({n + 1}/{len(groups)})"
        table = new_table(part, [escape(header[i]) for i in group],
                          right=[k for k, i in enumerate(group) if i in set(right)],
                          caption=caption if n == len(groups) - 1 else None)
        # When the group fits, only running text wraps (rich would shrink the widest column
        # first, a tensor name say); when not, rich folds whatever it must.
        if sum(widths[i] + _COLUMN_OVERHEAD for i in group) + 1 <= out.width:
            for column, i in zip(table.columns, group):
                column.width = None if i in set(wrap) else widths[i]
        for row in rows:
            table.add_row(*(escape(row[i]) for i in group))
        out.print(table)


def print_text(out, text: str) -> None:
    """A line of plain text (a note), wrapped to the width; names escaped by safe_text."""
    from taalasc.errors import safe_text

    out.print(safe_text(text), markup=False, highlight=False)
