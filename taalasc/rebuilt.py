"""Compare a compile folder with a rebuild of the same compile, file by file.

A compile is deterministic: the same checkpoint, base array and options give the same bytes.
So verify does not trust anything the folder says about itself beyond the options: it runs
the compile again (taalasc.compile.rebuild: small files into a scratch folder, masks into a
hash-only writer, merged dies of a --merge compile hashed as merged) and requires the folder
to hold exactly those files, byte for byte:

* no file missing, no file, folder or link that the compile would not write (in the folder
  and in its merged/ sub-folder);
* every file equal to the rebuild's (masks by size and sha256, small files by content),
  so a strap deleted, a fill square added, a cell renamed, a foreign or swapped die file or
  an edited report cannot pass, whatever the manifest claims;
* the manifest itself equal to the rebuild's, with the first differing key path named.

Where a mask differs, ``metal_differences`` says what differs on the top metal layer, shape
by shape (the via layer is decoded site by site by the extraction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taalasc.errors import safe_text
from taalasc.model.arch import natural_key  # die2 before die10
from taalasc.outdir import MANIFEST, output_entries, sha256_file

MASK_SUFFIXES = (".gds", ".oas")
_SHOWN = 8   # differing files named in a check's detail


@dataclass
class FolderComparison:
    """What differs between a compile folder and its rebuild."""
    files: int = 0                                        # files the compile writes
    problems: list[str] = field(default_factory=list)    # one line each, worst first
    differing_masks: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)     # expected masks not safe to read

    @property
    def identical(self) -> bool:
        return not self.problems


def compare_folder(out_dir: Path, rebuilt: Path, expected: dict) -> FolderComparison:
    """Compare ``out_dir`` with the rebuild: its small files in ``rebuilt``, every file's
    size and sha256 in ``expected["outputs"]`` (the rebuilt manifest)."""
    out = FolderComparison()
    outputs = expected["outputs"]
    wanted = set(outputs) | {MANIFEST}
    out.files = len(wanted)
    found, others = output_entries(Path(out_dir), wanted)
    for name, kind in others:
        out.problems.append(f"{safe_text(name)}: a {kind} the compile does not write")
    for name in sorted(wanted, key=natural_key):
        entry = found.get(name)
        if entry is None:
            out.problems.append(f"{name}: missing")
            out.unreadable.add(name)
            continue
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            out.problems.append(f"{name}: not a regular file (a link or a folder); the "
                                "compile writes a plain file here")
            out.unreadable.add(name)
            continue
        path = Path(out_dir) / name
        if name == MANIFEST:
            message = manifest_difference(path, rebuilt / MANIFEST)
        elif name.endswith(MASK_SUFFIXES):
            message = _mask_difference(path, outputs[name])
            if message:
                out.differing_masks.append(name)
        else:
            message = _file_difference(path, rebuilt / name)
        if message:
            out.problems.append(f"{name}: {message}")
    return out


def _mask_difference(path: Path, want: dict) -> str | None:
    size = path.stat().st_size
    if size != want["bytes"]:
        return f"{size:,} bytes, the rebuild writes {want['bytes']:,}"
    digest = sha256_file(path)
    if digest != want["sha256"]:
        return f"sha256 {digest[:12]}…, the rebuild's is {want['sha256'][:12]}… (same size)"
    return None


def _file_difference(path: Path, rebuilt: Path) -> str | None:
    got, want = path.read_bytes(), rebuilt.read_bytes()
    if got == want:
        return None
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"differs from the rebuild from byte {at:,} ({len(got):,} bytes, rebuild {len(want):,})"


def manifest_difference(path: Path, rebuilt: Path) -> str | None:
    """None when the two manifests are byte-identical; else the first differing key path."""
    got_bytes, want_bytes = path.read_bytes(), rebuilt.read_bytes()
    if got_bytes == want_bytes:
        return None
    try:
        got = json.loads(got_bytes)
    except (ValueError, RecursionError):
        return "not the JSON the compile writes"
    where = first_difference(got, json.loads(want_bytes))
    if where is None:
        return "the same values as the rebuild's, written differently (the compile's JSON " \
               "layout is part of the file)"
    key, a, b = where
    return f"{key or '(top)'} is {_brief(a)}, the rebuild gives {_brief(b)}"


def first_difference(a, b, key: str = "") -> tuple[str, object, object] | None:
    """The first (key path, a value, b value) where two JSON values differ, depth first."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return (_join(key, k), a.get(k, "(absent)"), b.get(k, "(absent)"))
            found = first_difference(a[k], b[k], _join(key, k))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{key}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return (f"{key} length", len(a), len(b))
        return None
    if a != b or type(a) is not type(b):
        return (key, a, b)
    return None


def _join(key: str, k) -> str:
    return f"{key}.{k}" if key else str(k)


def _brief(value, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return safe_text(text if len(text) <= limit else text[:limit] + "…")




def metal_differences(path: Path, layout, base, fmt: str) -> str:
    """What differs on the top metal (and its fill) of one die file from the rebuild's layout
    (taalasc.custom.writer.DieLayout): shapes missing and shapes added, with the first of
    each. Every strap, route wire, fill square and fill bar is one rectangle."""
    from taalasc.custom.geometry import strap_rects
    from taalasc.formats.readback import custom_layers, read_layer_rects

    _, metal = custom_layers(base.pdk)
    fill = (base.pdk.layers.top_metal_fill.gds_layer, base.pdk.layers.top_metal_fill.gds_datatype)
    grid = base.tile_grid
    straps = strap_rects(base.weight_tile, base.pdk.grid_nm)
    parts = [straps + np.tile(np.array(grid.tile_origin_nm(c, r), np.int64), 2)
             for c, r in sorted(layout.tiles)]
    for a in layout.arrays:
        x = a.x_nm + a.pitch_nm * np.arange(a.columns, dtype=np.int64)
        y = a.y_nm + a.pitch_nm * np.arange(a.rows, dtype=np.int64)
        xx, yy = (v.reshape(-1) for v in np.meshgrid(x, y))
        parts.append(np.stack([xx, yy, xx + a.size_nm, yy + a.size_nm], axis=1))
    parts += [layout.wires, layout.bars]
    want = _rows(np.concatenate([np.asarray(p, np.int64).reshape(-1, 4) for p in parts]))
    # Straps and routes on the drawing layer, fill on the fill layer: judged together here
    # (a fill shape moved to the drawing layer changes the file's bytes, which the files
    # check reports).
    got = _rows(np.concatenate([read_layer_rects(path, base.pdk, metal),
                                read_layer_rects(path, base.pdk, fill)]))
    missing, added = _set_minus(want, got), _set_minus(got, want)
    if not len(missing) and not len(added):
        return "top metal: every shape as the rebuild draws it"
    text = [f"top metal: {len(got):,} shapes, the rebuild draws {len(want):,}"]
    for what, rows in (("missing", missing), ("not drawn by the compile", added)):
        if len(rows):
            x0, y0, x1, y1 = rows[0].tolist()
            text.append(f"{len(rows):,} {what} (first ({x0}, {y0})-({x1}, {y1}) nm)")
    return "; ".join(text)


def _rows(rects: np.ndarray) -> np.ndarray:
    """Rectangles as sorted unique rows (a duplicated shape counts once: same mask)."""
    return np.unique(np.asarray(rects, np.int64).reshape(-1, 4), axis=0)


def _set_minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return a
    view = np.dtype((np.void, a.dtype.itemsize * 4))
    keep = ~np.isin(np.ascontiguousarray(a).view(view).ravel(),
                    np.ascontiguousarray(b).view(view).ravel())
    return a[keep]
