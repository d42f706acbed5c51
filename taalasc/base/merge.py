"""Merge the base die and one die's custom layers into one GDSII or OASIS file.

The output is a new library: every cell of the base die, every cell of the custom die file
(copied as they are, streamed in blocks, so memory does not grow with the die), and a new top
cell ``TLM_<custom top>`` that places both tops at the origin. Both files must use 1 nm
database units. A cell name defined in both files is refused: tools merge cells by name, so a
clash would silently replace one cell's contents with the other's. Chunk cells are the
exception: their names are their contents (custom/names.py), so a chunk cell met again is
compared byte for byte with the first and left out (a difference, a hash collision, refused).

GDSII: base cells, then custom cells, record by record; the library header has the fixed
timestamp of taalasc.formats.gdsii, so the same inputs give the same bytes.

OASIS: the custom die's records between its START and END (taalasc.formats.oasread: its
CELLNAME, PROPNAME, TEXTSTRING ... reference numbers stay valid, as every one of its tables
comes along whole), then the base die's cells, then the top cell, then our END (no
validation, as the compile's writer). The base die is written here from its GDSII file with
our own record writers (taalasc.formats.oasis), every cell, placement and text by name and
never by reference number, so it cannot clash with the custom file's numbers, and each cell
starts with a CELL record, which resets OASIS's modal variables. (gdstk's write_oas gives the
same bytes run after run, but numbers its cell names and text strings from 0: copying its
output beside a custom file would mean rewriting every placement and text of both.)
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Container, Iterator

import numpy as np

from taalasc.custom.names import parse_chunk
from taalasc.formats import gdsii, oasis
from taalasc.errors import MaskError

MERGED_PREFIX = "TLM_"
_UNITS, _BGNSTR, _STRNAME, _ENDSTR, _ENDLIB, _SNAME = 0x03, 0x05, 0x06, 0x07, 0x04, 0x12
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


def copy_cells(path: Path, out: BinaryIO, taken: dict[str, bytes]) -> str:
    """Copy every cell of ``path`` to ``out``; return its single top cell's name. Adds the
    names to ``taken`` (name -> a chunk cell's bytes from STRNAME on, b"" for others);
    MaskError on a name already there, other units, or several tops. A chunk cell already
    there with the same bytes is left out (its name says its content, custom/names.py)."""
    defined: list[str] = []
    referenced: set[str] = set()
    with open(path, "rb") as f:
        in_cells = False
        begin = b""        # a BGNSTR waits for its STRNAME: a repeated chunk cell is left out
        chunk: list[bytes] | None = None   # the records of a chunk cell, from STRNAME on
        for rtype, rec in _records(f, path):
            if rtype == _UNITS:
                meters = _real8(rec[12:20]) if len(rec) == 20 else 0.0
                if abs(meters - 1e-9) > 1e-15:
                    raise MaskError(f"{path}: database unit is {meters:g} m, not 1 nm; "
                                    "cannot merge")
            elif rtype == _BGNSTR:
                in_cells = True
                begin = rec
                continue
            elif rtype == _ENDLIB:
                break
            if not in_cells:
                continue
            if rtype == _STRNAME:
                name = _name(rec)
                if parse_chunk(name) is not None:
                    chunk = []
                elif name in taken:
                    raise MaskError(f"{path}: cell {name!r} is also in the other file; GDS "
                                    "merges cells by name, so the merged die would be wrong")
                else:
                    taken[name] = b""
                    defined.append(name)
                    out.write(begin + rec)
                    continue
            elif rtype == _SNAME:
                referenced.add(_name(rec))
            if chunk is None:
                out.write(rec)
                continue
            chunk.append(rec)
            if rtype == _ENDSTR:
                body = b"".join(chunk)
                chunk = None
                defined.append(name)
                if name not in taken:
                    taken[name] = body
                    out.write(begin + body)
                elif taken[name] != body:
                    raise MaskError(f"{path}: cell {name!r} is also in the other file with "
                                    "other contents; GDS merges cells by name, so the merged "
                                    "die would be wrong")
        else:
            raise MaskError(f"{path}: cannot read mask file (no ENDLIB record)")
    tops = [n for n in defined if n not in referenced]
    if len(tops) != 1:
        raise MaskError(f"{path}: expected one top cell, found {len(tops)}")
    return tops[0]


def merge_die(base_gds: Path, custom_gds: Path, out_path: Path) -> str:
    """Write ``out_path``: base die + custom layers under a new top cell; return its name."""
    with open(out_path, "wb") as out:
        return merge_gds(base_gds, custom_gds, out)


def merge_gds(base_gds: Path, custom_gds: Path, out: BinaryIO) -> str:
    """GDSII merge into ``out``; returns the merged top cell's name."""
    taken: dict[str, bytes] = {}
    out.write(gdsii.header("TAALASC_MERGED"))
    base_top = copy_cells(base_gds, out, taken)
    custom_top = copy_cells(custom_gds, out, taken)
    top = _merged_top(custom_top, taken, custom_gds)
    out.write(gdsii.begin_cell(top) + gdsii.sref(base_top, 0, 0) + gdsii.sref(custom_top, 0, 0)
              + gdsii.end_cell() + gdsii.footer())
    return top


def _merged_top(custom_top: str, taken: Container[str], where: Path) -> str:
    top = MERGED_PREFIX + custom_top
    if top in taken:
        raise MaskError(f"{where}: cell {top!r} already exists; cannot name the merged top")
    return top


# --- OASIS --------------------------------------------------------------------------------

@dataclass(frozen=True)
class OasisBase:
    """The base die's cells as OASIS records (by name throughout), and its top cell."""
    records: bytes
    top: str
    names: frozenset[str]


def base_oasis(base_gds: Path) -> OasisBase:
    """The cells of the base die file ``base_gds`` as OASIS records. The base die is a fixed
    few hundred kB whatever the model (one tile cell arrayed over the grid), so it is held."""
    from taalasc.formats.safe_read import load_library

    lib = load_library(base_gds, flattened=False)   # converted cell by cell, never flattened
    tops = lib.top_level()
    if len(tops) != 1:
        raise MaskError(f"{base_gds}: expected one top cell, found {len(tops)}")
    records = b"".join(_cell_records(cell, base_gds) for cell in lib.cells)
    return OasisBase(records, tops[0].name, frozenset(c.name for c in lib.cells))


def _cell_records(cell, where: Path) -> bytes:
    """One gdstk cell: rectangles grouped by layer, other polygons, paths, texts, placements."""
    def fail(what: str) -> MaskError:
        return MaskError(f"{where}: cell {cell.name!r}: {what} cannot be written to OASIS here")

    rects: dict[tuple[int, int], list] = {}
    out = [oasis.cell_named(cell.name)]
    for p in cell.polygons:
        if p.repetition.size > 1:
            raise fail("a polygon with a repetition")
        pts = np.rint(p.points).astype(np.int64)
        xs, ys = np.unique(pts[:, 0]), np.unique(pts[:, 1])
        if len(pts) == 4 and len(xs) == 2 and len(ys) == 2 and _axis_aligned(pts):
            rects.setdefault((p.layer, p.datatype), []).append((xs[0], ys[0], xs[1], ys[1]))
        else:
            out.append(oasis.polygon(pts, (p.layer, p.datatype)))
    out[1:1] = [oasis.rectangles(np.array(r, np.int64), layer) for layer, r in rects.items()]
    for path in cell.paths:
        out.append(_path_records(path, fail))
    for label in cell.labels:   # OASIS text has no anchor, angle or size: position and string
        if label.repetition.size > 1:
            raise fail("a text with a repetition")
        x, y = (int(v) for v in np.rint(label.origin))
        out.append(oasis.text(label.text, x, y, (label.layer, label.texttype)))
    for ref in cell.references:
        out.append(_placement(ref, fail))
    return b"".join(out)


def _axis_aligned(pts: np.ndarray) -> bool:
    d = np.diff(np.vstack([pts, pts[:1]]), axis=0)
    return bool(np.all((d[:, 0] == 0) | (d[:, 1] == 0)))


def _path_records(path, fail) -> bytes:
    """A GDSII path as read by gdstk (a FlexPath of one element, constant width)."""
    import gdstk

    if not isinstance(path, gdstk.FlexPath) or path.num_paths != 1 or path.repetition.size > 1:
        raise fail("a path other than a plain GDSII path")
    widths = np.rint(path.widths()[:, 0]).astype(np.int64)
    if len(set(widths.tolist())) != 1 or widths[0] % 2 or np.any(path.offsets() != 0):
        raise fail("a path of varying, odd or offset width")
    half = int(widths[0]) // 2
    ends = path.ends[0]
    extensions = {"flush": (0, 0), "extended": (half, half)}.get(ends, ends)
    if not (isinstance(extensions, tuple) and len(extensions) == 2):
        raise fail(f"a path with {ends!r} ends")
    return oasis.path(np.rint(path.spine()).astype(np.int64), half,
                      tuple(int(round(e)) for e in extensions),
                      (path.layers[0], path.datatypes[0]))


def _placement(ref, fail) -> bytes:
    quarter = ref.rotation / (np.pi / 2)
    if abs(quarter - round(quarter)) > 1e-9 or ref.magnification != 1:
        raise fail(f"a placement rotated by {ref.rotation} rad or scaled {ref.magnification}x")
    rep = ref.repetition
    columns = rows = 1
    dx = dy = 0
    if rep.size > 1:
        if rep.spacing is None:
            raise fail("a placement with a repetition other than a grid")
        columns, rows = rep.columns, rep.rows
        dx, dy = (int(v) for v in np.rint(rep.spacing))
    x, y = (int(v) for v in np.rint(ref.origin))
    name = ref.cell if isinstance(ref.cell, str) else ref.cell.name
    try:
        return oasis.placement(name, x, y, columns, rows, dx, dy, flip=ref.x_reflection,
                               quarter_turns=int(round(quarter)))
    except ValueError as exc:
        raise fail(f"a placement ({exc})") from None


def merge_oas(base: OasisBase, custom_oas: Path, out: BinaryIO) -> str:
    """OASIS merge into ``out``; returns the merged top cell's name."""
    from taalasc.formats.oasread import copy_records
    from taalasc.formats.safe_read import check_oas

    check_oas(custom_oas)   # magic, START, END (and its checksum) before anything is copied
    out.write(oasis.start())
    cells = copy_records(custom_oas, out)
    if abs(cells.unit_per_um - 1000) > 1e-9:
        raise MaskError(f"{custom_oas}: database unit is {1e-6 / cells.unit_per_um:g} m, not "
                        "1 nm; cannot merge" if cells.unit_per_um > 0 else
                        f"{custom_oas}: database unit is not positive; cannot merge")
    names = {cells.name(k, custom_oas) for k in cells.defined}
    clash = sorted(names & base.names)
    if clash:
        raise MaskError(f"{custom_oas}: cell {clash[0]!r} is also in the other file; OASIS "
                        "merges cells by name, so the merged die would be wrong")
    tops = cells.tops(custom_oas)
    if len(tops) != 1:
        raise MaskError(f"{custom_oas}: expected one top cell, found {len(tops)}")
    custom_top = cells.name(tops[0], custom_oas)
    top = _merged_top(custom_top, names | base.names, custom_oas)
    # The custom top placed as its own file names it (reference number or name).
    out.write(base.records + oasis.cell_named(top) + oasis.placement(base.top, 0, 0)
              + oasis.placement(tops[0], 0, 0) + oasis.end())
    return top


# --- merging a compile's dies --------------------------------------------------------------

MERGED_FORMATS = ("gds", "oas")


class _Counted:
    """A write-only file that hashes and counts what goes through it (``fh`` None: nothing
    is kept, for verify's rebuild)."""

    def __init__(self, fh: BinaryIO | None):
        self.fh, self.sha256, self.nbytes = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        if self.fh is not None:
            self.fh.write(data)
        self.sha256.update(data)
        self.nbytes += len(data)


class DieMerger:
    """Merges the dies of one compile, one at a time, with one base die file."""

    def __init__(self, base_gds: Path, formats: tuple[str, ...]):
        bad = [f for f in formats if f not in MERGED_FORMATS]
        if bad or not formats:
            raise MaskError(f"merge formats must be a non-empty subset of "
                            f"{', '.join(MERGED_FORMATS)}, not {list(formats)!r}")
        self.base_gds, self.formats = Path(base_gds), tuple(sorted(set(formats)))
        self._oasis = base_oasis(self.base_gds) if "oas" in self.formats else None

    def merge(self, die: int, files: dict[str, Path], folder: Path | None) -> dict[str, dict]:
        """Merge die ``die``'s custom files (format -> path) into ``folder``/die{die}.{fmt},
        or only hash them (``folder`` None). Returns, per file name, its bytes, sha256 and
        top cell."""
        out = {}
        for fmt in self.formats:
            name = f"die{die}.{fmt}"
            with open(folder / name, "wb", buffering=_BLOCK) if folder is not None else \
                    contextlib.nullcontext() as fh:
                sink = _Counted(fh)
                top = merge_gds(self.base_gds, Path(files[fmt]), sink) if fmt == "gds" else \
                    merge_oas(self._oasis, Path(files[fmt]), sink)
            out[name] = {"bytes": sink.nbytes, "sha256": sink.sha256.hexdigest(),
                         "top_cell": top}
        return out


@contextlib.contextmanager
def die_merger(base_array, formats: tuple[str, ...]) -> Iterator[DieMerger]:
    """A DieMerger with the base die of ``base_array`` built here (in a temporary folder)."""
    import tempfile

    from taalasc.base.build import build_base, write_base

    with tempfile.TemporaryDirectory(prefix="taalasc-base-") as scratch:
        base_gds = Path(scratch) / "base.gds"
        write_base(build_base(base_array), base_gds)
        yield DieMerger(base_gds, formats)


def check_mergeable(base_array) -> None:
    """One error line, before anything is written, when the base die of ``base_array``
    cannot be drawn here (no recipe for its PDK, or its standard cells not installed)."""
    from taalasc.base.cells import library_dir
    from taalasc.base.recipe import recipe_for
    from taalasc.config.base_array import require_base_die_encoding

    require_base_die_encoding(base_array)
    try:
        cells = recipe_for(base_array.pdk).cells
        if cells is not None:
            library_dir(cells)
    except MaskError as exc:
        raise MaskError(f"merging draws the base die of {base_array.name!r}: {exc}") from None


MERGE_FORMAT = "taalasc-merge/1"


def _read_manifest(path: Path, fmt: str, what: str) -> dict:
    import json

    from taalasc.errors import OutputError
    from taalasc.outdir import MANIFEST

    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise OutputError(f"{path}: not a {what} ({MANIFEST} missing)") from None
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: not a {what} ({MANIFEST} unreadable: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise OutputError(f"{path}: not a {what} ({MANIFEST} is not {fmt})")
    return manifest


def merge_compile(compile_dir: Path, out_dir: Path, base_dir: Path | None = None,
                  force: bool = False, base_name: str | None = None,
                  formats: tuple[str, ...] | None = None) -> dict:
    """Merge every die of the compile in ``compile_dir`` with the base die of its base array
    into ``out_dir`` (replaced as a whole): die{n}.gds and/or die{n}.oas (``formats``; default
    those the compile wrote) and manifest.json. The base comes from ``base_dir`` (a `taalasc
    base build` folder of the same base YAML) or is built here. The base YAML is the one the
    compile names, or ``base_name``; either way it must be the compile's byte for byte.
    Returns the manifest."""
    import json
    import time

    from taalasc.base.build import BASE_FORMAT, base_inputs
    from taalasc.config import load_base_array
    from taalasc.errors import OutputError
    from taalasc.outdir import MANIFEST, MANIFEST_FORMAT, sha256_file, staged_output

    start = time.perf_counter()
    compile_dir, out_abs = Path(compile_dir).resolve(), Path(out_dir).absolute().resolve()
    compiled = _read_manifest(compile_dir, MANIFEST_FORMAT, "taalasc compile folder")
    if out_abs == compile_dir or compile_dir in out_abs.parents:
        raise OutputError(f"{out_dir}: inside the compile folder {compile_dir}; a compile folder "
                          "holds exactly what the compile wrote, so write merged dies elsewhere "
                          "(or compile with --merge: OUT/merged)")
    try:
        dies = [(int(d["die"]), {str(f): compile_dir / Path(str(n)).name
                                 for f, n in d["files"].items()})
                for d in compiled["dies"] if d.get("present")]
        recorded = compiled["inputs"]["base_array"]
        recorded_sha, recorded_name = str(recorded["sha256"]), str(recorded["name"])
        base_name = base_name or compiled["inputs"]["options"]["base"]
        written = tuple(compiled["inputs"]["options"]["formats"])
        compile_digest = compiled["inputs_digest"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OutputError(f"{compile_dir}: {MANIFEST} lacks {exc} (not written by this "
                          "taalasc?)") from None
    formats = tuple(sorted(set(formats or written)))
    missing = [f for f in formats if not dies or any(f not in files for _, files in dies)]
    if missing:
        raise OutputError(f"{compile_dir}: the compile wrote no {missing[0].upper()} die files; "
                          f"merge with --format {'/'.join(sorted(written))} or compile with "
                          f"--format {missing[0]} or both")
    base = load_base_array(base_name)
    check_mergeable(base)
    inputs = base_inputs(base)
    if inputs["base_array"]["sha256"] != recorded_sha:
        raise OutputError(f"{base.path}: base array {recorded_name!r} changed since the "
                          f"compile in {compile_dir} (sha256 differs); recompile first")
    base_gds = None
    if base_dir is not None:
        built = _read_manifest(Path(base_dir), BASE_FORMAT, "taalasc base folder")
        if built["inputs"] != inputs:
            raise OutputError(f"{base_dir}: base die built from other inputs than the compile's "
                              f"base array {recorded_name!r} (or another taalasc or cell "
                              "library); rebuild it with `taalasc base build`")
        base_gds = Path(base_dir) / built["file"]
        base_sha = sha256_file(base_gds)
        if base_sha != built["outputs"][built["file"]]["sha256"]:
            raise OutputError(f"{base_gds}: changed since `taalasc base build` wrote it")
    digest = hashlib.sha256(json.dumps({"compile": compile_digest, "base": inputs,
                                        "formats": list(formats)},
                                       sort_keys=True).encode()).hexdigest()
    with staged_output(Path(out_dir), inputs_digest=digest, force=force) as staging, \
            (contextlib.nullcontext(DieMerger(base_gds, formats)) if base_gds is not None
             else die_merger(base, formats)) as merger:
        outputs, tops = {}, {}
        for die, files in dies:
            for name, out in merger.merge(die, files, staging).items():
                tops[name] = out.pop("top_cell")
                outputs[name] = out
        manifest = {"format": MERGE_FORMAT, "inputs_digest": digest,
                    "inputs": {"compile_inputs_digest": compile_digest, "base": inputs,
                               "formats": list(formats)},
                    "top_cells": tops, "outputs": outputs}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["seconds"] = time.perf_counter() - start
    return manifest
