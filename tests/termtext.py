"""Reading what a command printed for the terminal-width tests (issue 18).

``widest``: the widest line in terminal cells. ``shown``: the printed text as streams whose
concatenation keeps every cell whole however it was folded: one stream per table column
(its fragments on every line, in order) and one for the text outside tables, all without
whitespace. ``squeeze(x) in shown(out)`` then says that ``x`` was printed, possibly folded.
"""

from __future__ import annotations

import re

from rich.cells import cell_len

_BARS = re.compile("[│┃]")
_RULES = set("┏┓┗┛━─┳┻╇┡┩└┘┌┐┬┴├┤╋┼┠┨╂═╞╡╪")


def widest(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def squeeze(text: str) -> str:
    return "".join(str(text).split())


def shown(text: str) -> str:
    streams: list[list[str]] = [[]]          # stream 0: text outside tables
    table: dict[int, int] = {}               # column -> stream of the current table
    for line in text.splitlines():
        if line.strip() and set(line.strip()) <= _RULES:
            if line.strip()[0] in "┏┌":      # a new table starts
                table = {}
            continue
        if not _BARS.search(line):
            streams[0].append(squeeze(line))
            continue
        for column, part in enumerate(_BARS.split(line)[1:-1]):
            if column not in table:
                table[column] = len(streams)
                streams.append([])
            streams[table[column]].append(squeeze(part))
    return "\n".join("".join(s) for s in streams)
