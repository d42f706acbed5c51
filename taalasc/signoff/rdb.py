"""KLayout marker databases (.lyrdb, XML): read a deck's categories and counts, write ours.

Counts are markers as the database holds them (and KLayout's marker browser and OpenLane 2's
``klayout__drc_error__count`` count them): a deck in deep mode reports a violation once per
cell, so a cell placed many times counts once. Reading streams the file, so a database of
millions of markers needs no more memory than its categories.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import unescape
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from taalasc.errors import ToolError

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|([^.']+)")


@dataclass
class Markers:
    """What one .lyrdb holds: every category (name -> description) and its marker count."""
    descriptions: dict[str, str] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)


def _path(text: str) -> str:
    """A category reference as KLayout writes it (``'via4.4_a'``, ``'a'.'b'``) -> ``a.b``."""
    parts = [m[1].replace("\\'", "'") if m[1] is not None else m[2]
             for m in _QUOTED.finditer(text.strip())]
    return ".".join(parts)


def read_markers(path: Path) -> Markers:
    """Categories and marker counts of a KLayout report database; ToolError if unreadable.

    The categories are parsed as XML up to the marker list; the markers (millions, when a
    deck flags every fill square) are counted by their ``<category>`` references in one
    pass over the bytes, ten times faster than parsing each item."""
    out = Markers()
    tags: list[str] = []
    names: list[str] = []     # the category path being read (categories nest)
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                if elem.tag == "items" and tags == ["report-database"]:
                    break
                tags.append(elem.tag)
                continue
            tags.pop()
            parent = tags[-1] if tags else ""
            if elem.tag == "name" and parent == "category":
                names.append(elem.text or "")
            elif elem.tag == "description" and parent == "category" and names:
                out.descriptions[".".join(names)] = (elem.text or "").strip()
            elif elem.tag == "category" and parent == "categories":
                out.descriptions.setdefault(".".join(names), "")
                names.pop()
        else:
            return out    # no marker list at all
        counts = _count_item_categories(path)
    except (ET.ParseError, OSError, IndexError) as exc:
        raise ToolError(f"{path}: not a readable KLayout marker database ({exc})") from None
    for ref, n in counts.items():
        out.counts[_path(unescape(ref.decode("utf-8", "replace"), _ENTITIES))] += n
    return out


_ENTITIES = {"&apos;": "'", "&quot;": '"'}
_ITEM_CATEGORY = re.compile(rb"<category>([^<]*)</category>")
_CHUNK = 1 << 24


def _count_item_categories(path: Path) -> Counter:
    """Occurrences of each ``<category>REF</category>`` after the ``<items>`` tag (inside
    the marker list a category element holds only its reference text)."""
    counts: Counter = Counter()
    with open(path, "rb") as f:
        carry, tail, started = b"", b"", False
        while True:
            chunk = f.read(_CHUNK)
            tail = (tail + chunk)[-64:]
            data = carry + chunk
            if not started:
                at = data.find(b"<items>")
                if at < 0:
                    carry = data[-16:]
                    if not chunk:
                        return counts
                    continue
                data, started = data[at:], True
            # count up to the last complete reference; the rest waits for the next chunk
            cut = data.rfind(b"</category>") + len(b"</category>") if chunk else len(data)
            if cut < len(b"</category>"):
                cut = max(0, len(data) - 256)   # no reference here: keep only a tail
            counts.update(m[1] for m in _ITEM_CATEGORY.finditer(data, 0, cut))
            carry = data[cut:]
            if not chunk:
                if b"</report-database>" not in tail:
                    raise ET.ParseError("the file ends before </report-database>")
                return counts


# "Only 0/45/90 degree edges" (IHP's 3.2 *_Angle45, *_Angle90): an edge at 0 or 90 degrees
# can never break such a rule. KLayout 0.30.0 flags straight vertical edges longer than
# ~3 mm in these checks (measured: a 3.0 mm bar passes, 3.3 mm is flagged, in deep and flat
# mode; 0.28.5 and klayout.db 0.30.12 flag neither), and a die's seal and supply rings have
# such edges. Markers of that shape are counted apart as the tool's false positives.
ANGLE_RULE = re.compile(r"_Angle(45|90)$")
_EDGE = re.compile(r"edge: \(([-\d.]+),([-\d.]+);([-\d.]+),([-\d.]+)\)$")


def axis_parallel_angle_markers(path: Path, rules: set[str]) -> Counter:
    """Per angle rule of ``rules``: its markers that are single edges at 0 or 90 degrees."""
    wanted = {r for r in rules if ANGLE_RULE.search(r)}
    out: Counter = Counter()
    if not wanted:
        return out
    try:
        for _, elem in ET.iterparse(path, events=("end",)):
            if elem.tag != "item":
                continue
            category = _path(unescape(elem.findtext("category") or "", _ENTITIES))
            values = [(v.text or "").strip() for v in elem.iter("value")]
            if category in wanted and len(values) == 1:
                m = _EDGE.match(values[0])
                if m and (m[1] == m[3] or m[2] == m[4]):
                    out[category] += 1
            elem.clear()
    except (ET.ParseError, OSError) as exc:
        raise ToolError(f"{path}: not a readable KLayout marker database ({exc})") from None
    return out


def write_markers(path: Path, top_cell: str, description: str,
                  categories: dict[str, tuple[str, list[tuple[int, int, int, int]]]],
                  dbu_um: float = 0.001) -> None:
    """A marker database KLayout's marker browser opens beside the die: per category
    (name -> (description, boxes in database units)) one box marker each."""
    import klayout.db as kdb
    import klayout.rdb as rdb

    db = rdb.ReportDatabase(description)
    db.description = description
    db.top_cell_name = top_cell
    cell = db.create_cell(top_cell)
    for name, (text, boxes) in categories.items():
        cat = db.create_category(name)
        cat.description = text
        for box in boxes:
            db.create_item(cell, cat).add_value(kdb.DBox(*(v * dbu_um for v in box)))
    db.save(str(path))
