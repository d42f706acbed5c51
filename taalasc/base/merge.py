"""Merge the base die and one die's custom layers into one GDSII file, record by record.

The output is a new library: every cell of the base file, every cell of the custom die file
(copied as they are, streamed in blocks, so memory does not grow with the die), and a new top
cell ``TLM_<custom top>`` that places both tops at the origin. Both files must use 1 nm
database units. A cell name defined in both files is refused: GDS merges cells by name, so a
clash would silently replace one cell's contents with the other's. The library header is
written with the fixed timestamp of taalasc.emit.gdsii, so the same inputs give the same bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

from taalasc.emit import gdsii
from taalasc.errors import MaskError

MERGED_PREFIX = "TLM_"
_UNITS, _BGNSTR, _STRNAME, _ENDLIB, _SNAME = 0x03, 0x05, 0x06, 0x04, 0x12
_BLOCK = 1 << 20


def _records(f: BinaryIO, path: Path) -> Iterator[tuple[int, bytes]]:
    """(record type, whole record bytes), read in blocks."""
    buf, pos = b"", 0
    while True:
        if len(buf) - pos < 4:
            buf = buf[pos:] + f.read(_BLOCK)
            pos = 0
            if len(buf) < 4:
                return
        length, rtype = struct.unpack_from(">HB", buf, pos)
        if length < 4:
            raise MaskError(f"{path}: cannot read mask file (record of length {length})")
        while len(buf) - pos < length:
            more = f.read(_BLOCK)
            if not more:
                raise MaskError(f"{path}: cannot read mask file (truncated record)")
            buf = buf[pos:] + more
            pos = 0
        yield rtype, buf[pos:pos + length]
        pos += length


def _real8(raw: bytes) -> float:
    """GDSII excess-64 base-16 real."""
    mantissa = int.from_bytes(raw[1:8], "big") / (1 << 56)
    value = mantissa * 16.0 ** ((raw[0] & 0x7F) - 64)
    return -value if raw[0] & 0x80 else value


def _name(record: bytes) -> str:
    return record[4:].rstrip(b"\0").decode("ascii", "replace")


def copy_cells(path: Path, out: BinaryIO, taken: set[str]) -> str:
    """Copy every cell of ``path`` to ``out``; return its single top cell's name. Adds the
    names to ``taken``; MaskError on a name already there, other units, or several tops."""
    defined: list[str] = []
    referenced: set[str] = set()
    with open(path, "rb") as f:
        in_cells = False
        for rtype, rec in _records(f, path):
            if rtype == _UNITS:
                meters = _real8(rec[12:20]) if len(rec) == 20 else 0.0
                if abs(meters - 1e-9) > 1e-15:
                    raise MaskError(f"{path}: database unit is {meters:g} m, not 1 nm; "
                                    "cannot merge")
            elif rtype == _BGNSTR:
                in_cells = True
            elif rtype == _ENDLIB:
                break
            if not in_cells:
                continue
            if rtype == _STRNAME:
                name = _name(rec)
                if name in taken:
                    raise MaskError(f"{path}: cell {name!r} is also in the other file; GDS "
                                    "merges cells by name, so the merged die would be wrong")
                taken.add(name)
                defined.append(name)
            elif rtype == _SNAME:
                referenced.add(_name(rec))
            out.write(rec)
        else:
            raise MaskError(f"{path}: cannot read mask file (no ENDLIB record)")
    tops = [n for n in defined if n not in referenced]
    if len(tops) != 1:
        raise MaskError(f"{path}: expected one top cell, found {len(tops)}")
    return tops[0]


def merge_die(base_gds: Path, custom_gds: Path, out_path: Path) -> str:
    """Write ``out_path``: base die + custom layers under a new top cell; return its name."""
    taken: set[str] = set()
    with open(out_path, "wb") as out:
        out.write(gdsii.header("TAALASC_MERGED"))
        base_top = copy_cells(base_gds, out, taken)
        custom_top = copy_cells(custom_gds, out, taken)
        top = MERGED_PREFIX + custom_top
        if top in taken:
            raise MaskError(f"{custom_gds}: cell {top!r} already exists; cannot name the merged top")
        out.write(gdsii.begin_cell(top) + gdsii.sref(base_top, 0, 0) + gdsii.sref(custom_top, 0, 0)
                  + gdsii.end_cell() + gdsii.footer())
    return top
