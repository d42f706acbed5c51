"""Cell names of a die file: unique to the compile and the die, or derived from content, so
die files merge.

GDS (and a merge tool reading OASIS) joins cells by name: two die files that both hold a
``FILL`` cell, with different fill, cannot be merged into one library without one die's fill
replacing the other's. So every cell a die file defines starts with the die's *prefix*,
``T<first 8 hex digits of the compile's inputs digest, upper case>_D<die>_``, e.g.
``TA3F09C12_D0_``, except the chunk cells (below). The inputs digest (recorded in the manifest
as ``inputs_digest``) hashes the checkpoint, base array, PDK, options and taalasc version, so
two compiles that differ in anything share no prefixed name, and two dies of one compile
differ in ``D<die>``.

Local names after the prefix: ``DIE`` (the top cell), ``FILL``, ``FILLSQ``, ``STRAPS``,
``TIES`` and ``T{16 hex}`` (a tile, by the sha256 of its bits). Tile cells are content-named
*within* a die file only: a tile cell places its die's ``STRAPS``; hence the prefix on them.
Names stay within GDSII's conservative 32 characters for dies below 1,000 (a tile cell of die
999: 32).

Chunk cells (the vias of a few sites of one row with one digit pattern of n <= 8 bits: 8
sites of 1-bit digits, 4 of 2-bit ternary or select digits, ...) carry no prefix: every
tile cell names one per 8 bits, so the prefix would cost 13+ bytes per 8 bits of GDSII. Their
name is their content instead: ``V{n}{hex of the pattern}{tag}``, e.g. ``V8a5KQ3ZC7MX``, where
the tag (:func:`chunk_tag`) hashes every via a chunk cell of that base array can hold (the
slots of a chunk's sites on every line, so site pitch, line positions and which digit goes
on which line, via size and grid) and the via layer. A chunk cell holds exactly the vias its n and pattern pick from those, so equal
names mean equal contents across dies and compiles, which is all a merge needs. The tag is
the first 40 bits of the sha256, as 8 base32 characters (upper case and 2-7, so it never
reads as part of the lower-case hex pattern before it). Two different geometries collide
with probability about k^2 / 2^41 for k geometries in one merged library: 5e-9 for k = 100
base arrays, where a real reticle holds one or a few; and taalasc's own merge
(base/merge.copy_cells) compares a repeated chunk cell byte for byte, so a collision there is
refused, never silent. A chunk name is 12 characters (an even GDSII string, no padding).
"""

from __future__ import annotations

import base64
import hashlib
import re

import numpy as np

from taalasc.errors import MaskError

TOP, FILL, FILLSQ, STRAPS, TIES = "DIE", "FILL", "FILLSQ", "STRAPS", "TIES"
TAG = re.compile(r"T[0-9A-F]{8}\Z")
PREFIX = re.compile(r"T[0-9A-F]{8}_D[0-9]+_")
TILE = re.compile(PREFIX.pattern + r"T[0-9a-f]{16}\Z")   # a tile cell's full name
CHUNK = re.compile(r"V([1-8])([0-9a-f]{1,2})([A-Z2-7]{8})\Z")   # n, pattern, tag
CHUNK_TAG = re.compile(r"[A-Z2-7]{8}\Z")


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


def chunk_tag(vias_nm: np.ndarray, layer: tuple[int, int]) -> str:
    """The geometry part of chunk cell names: 40 bits of the sha256 of every via a chunk cell
    can hold (``vias_nm``, int [k, 4] rectangles) and their (layer, datatype), as 8 base32
    characters (see the module docstring for why 40 bits suffice)."""
    data = (b"taalasc-chunk/1" + np.asarray(layer, "<i8").tobytes()
            + np.ascontiguousarray(vias_nm, "<i8").tobytes())
    return base64.b32encode(hashlib.sha256(data).digest()[:5]).decode()


def chunk_name(n: int, value: int, tag: str) -> str:
    """Full name of a chunk cell: its pattern's bit count n (sites x site_bits), pattern
    (site 0's digit in the lowest bits) and geometry ``tag`` (:func:`chunk_tag`); no die
    prefix."""
    if not isinstance(tag, str) or not CHUNK_TAG.match(tag):
        raise MaskError(f"chunk tag must be 8 base32 characters, not {tag!r:.40}")
    return f"V{n}{value:0{(n + 3) // 4}x}{tag}"


def parse_chunk(name: str) -> tuple[int, int, str] | None:
    """(n pattern bits, pattern, tag) of a chunk cell's name; None for any other name."""
    found = CHUNK.match(name)
    if found is None or len(found.group(2)) != (int(found.group(1)) + 3) // 4:
        return None
    return int(found.group(1)), int(found.group(2), 16), found.group(3)


def tile_name(bits: np.ndarray) -> str:
    """Local name of a tile cell: identical bit vectors share a cell within a die file."""
    return "T" + hashlib.sha256(bits.tobytes()).hexdigest()[:16]
