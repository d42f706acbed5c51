"""Merge the base die and one die's custom layers into one GDSII file, record by record.

The output is a new library: every cell of the base file, every cell of the custom die file
(copied as they are, streamed in blocks, so memory does not grow with the die), and a new top
cell ``TLM_<custom top>`` that places both tops at the origin. Both files must use 1 nm
database units. A cell name defined in both files is refused: GDS merges cells by name, so a
clash would silently replace one cell's contents with the other's. The library header is
written with the fixed timestamp of taalasc.formats.gdsii, so the same inputs give the same bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

from taalasc.formats import gdsii
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
                  force: bool = False, base_name: str | None = None) -> dict:
    """Merge every GDSII die of the compile in ``compile_dir`` with the base die of its base
    array into ``out_dir`` (replaced as a whole): die{n}.gds and manifest.json. The base comes
    from ``base_dir`` (a `taalasc base build` folder of the same base YAML) or is built here.
    The base YAML is the one the compile names, or ``base_name``; either way it must be the
    compile's byte for byte. Returns the manifest."""
    import hashlib
    import json
    import time

    from taalasc.base.build import BASE_FORMAT, base_inputs, build_base, write_base
    from taalasc.config import load_base_array
    from taalasc.errors import OutputError
    from taalasc.outdir import MANIFEST, sha256_file, staged_output

    start = time.perf_counter()
    compile_dir, out_abs = Path(compile_dir).resolve(), Path(out_dir).absolute().resolve()
    compiled = _read_manifest(compile_dir, "taalasc-manifest/1", "taalasc compile folder")
    if out_abs == compile_dir or compile_dir in out_abs.parents:
        raise OutputError(f"{out_dir}: inside the compile folder {compile_dir}; a compile folder "
                          "holds exactly what the compile wrote, so write merged dies elsewhere")
    try:
        dies = [(int(d["die"]), str(d["files"]["gds"])) for d in compiled["dies"]
                if d.get("present") and d["files"].get("gds")]
        recorded = compiled["inputs"]["base_array"]
        recorded_sha, recorded_name = str(recorded["sha256"]), str(recorded["name"])
        base_name = base_name or compiled["inputs"]["options"]["base"]
        compile_digest = compiled["inputs_digest"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OutputError(f"{compile_dir}: {MANIFEST} lacks {exc} (not written by this "
                          "taalasc?)") from None
    if not dies:
        raise OutputError(f"{compile_dir}: the compile wrote no GDSII die files; merge reads "
                          "GDSII (compile with --format gds or both)")
    base = load_base_array(base_name)
    inputs = base_inputs(base)
    if inputs["base_array"]["sha256"] != recorded_sha:
        raise OutputError(f"{base.path}: base array {recorded_name!r} changed since the "
                          f"compile in {compile_dir} (sha256 differs); recompile first")
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
    digest = hashlib.sha256(json.dumps({"compile": compile_digest, "base": inputs},
                                       sort_keys=True).encode()).hexdigest()
    with staged_output(Path(out_dir), inputs_digest=digest, force=force) as staging:
        if base_dir is None:
            base_gds = staging / ".base.gds"
            write_base(build_base(base), base_gds)
        outputs, tops = {}, {}
        for die, file in dies:
            name = f"die{die}.gds"
            tops[name] = merge_die(base_gds, compile_dir / Path(file).name, staging / name)
            outputs[name] = {"bytes": (staging / name).stat().st_size,
                             "sha256": sha256_file(staging / name)}
        if base_dir is None:
            base_gds.unlink()
        manifest = {"format": MERGE_FORMAT, "inputs_digest": digest,
                    "inputs": {"compile_inputs_digest": compile_digest, "base": inputs},
                    "top_cells": tops, "outputs": outputs}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["seconds"] = time.perf_counter() - start
    return manifest
