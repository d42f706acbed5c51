"""Cell names of a die file: unique to the compile and the die, so die files merge.

GDS (and a merge tool reading OASIS) joins cells by name: two die files that both hold a
``FILL`` cell, with different fill, cannot be merged into one library without one die's fill
replacing the other's. So every cell a die file defines starts with the die's *prefix*,
``T<first 8 hex digits of the compile's inputs digest, upper case>_D<die>_``, e.g.
``TA3F09C12_D0_``. The inputs digest (recorded in the manifest as ``inputs_digest``) hashes
the checkpoint, base array, PDK, options and taalasc version, so two compiles that differ in
anything share no cell name, and two dies of one compile differ in ``D<die>``.

Local names after the prefix: ``DIE`` (the top cell), ``FILL``, ``FILLSQ``, ``STRAPS``,
``TIES``, ``V{n}_{hex}`` (a chunk of n sites with that bit pattern) and ``T{16 hex}`` (a
tile, by the sha256 of its bits). Chunk and tile cells are content-named *within* a die file
only: the same bit pattern on another base array is other geometry, and a tile cell places
its die's ``STRAPS``; hence the prefix on them too. Names stay within GDSII's conservative
32 characters for dies below 1,000 (a tile cell of die 999: 32).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from taalasc.errors import MaskError

TOP, FILL, FILLSQ, STRAPS, TIES = "DIE", "FILL", "FILLSQ", "STRAPS", "TIES"
TAG = re.compile(r"T[0-9A-F]{8}\Z")
PREFIX = re.compile(r"T[0-9A-F]{8}_D[0-9]+_")
TILE = re.compile(PREFIX.pattern + r"T[0-9a-f]{16}\Z")   # a tile cell's full name


def compile_tag(inputs_digest: str) -> str:
    """The compile's part of every cell name: ``T`` + 8 hex digits of its inputs digest."""
    if not re.fullmatch(r"[0-9a-f]{8,}", inputs_digest):
        raise MaskError(f"inputs digest must be lower-case hex, not {inputs_digest!r:.40}")
    return "T" + inputs_digest[:8].upper()


def die_prefix(tag: str, die: int) -> str:
    """The prefix of every cell name of one die file (``tag`` from :func:`compile_tag`)."""
    if not isinstance(tag, str) or not TAG.match(tag):
        raise MaskError(f"cell name tag must be T and 8 upper-case hex digits, not {tag!r:.40}")
    return f"{tag}_D{int(die)}_"


def local_name(name: str) -> str:
    """A cell name without its die prefix (names written by others come back as they are)."""
    found = PREFIX.match(name)
    return name[found.end():] if found else name


def chunk_name(n: int, value: int) -> str:
    """Local name of a chunk cell: its site count and bit pattern (site 0 = bit 0)."""
    return f"V{n}_{value:0{(n + 3) // 4}x}"


def tile_name(bits: np.ndarray) -> str:
    """Local name of a tile cell: identical bit vectors share a cell within a die file."""
    return "T" + hashlib.sha256(bits.tobytes()).hexdigest()[:16]
