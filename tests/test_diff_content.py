"""`taalasc diff` compares content, not names, and reads only the die files a compile wrote.

Tampered copies of one small compile: a cell edited in place under its old name (tile,
chunk, strap, fill), a manifest naming a file outside the folder, a symlink leading out,
a die file changed after the compile.
"""

import json
import os
import shutil
from pathlib import Path

import gdstk
import numpy as np
import pytest

from taalasc import cli
from taalasc.cli import main
from taalasc.compile import CompileOptions, compile_model
from taalasc.custom.names import TILE, local_name
from taalasc.diff import diff_masks
from taalasc.diff.content import content_hashes
from taalasc.diff.hier import trusted_cells
from taalasc.errors import MaskError
from taalasc.folder import inside
from taalasc.formats.gdsread import GdsCell, GdsLibrary, _Refs
from taalasc.formats.readback import read_library
from taalasc.model.synth import llama_config, write_llama
from taalasc.outdir import sha256_file


@pytest.fixture(autouse=True)
def _wired(monkeypatch):
    # As in test_diff_flow: until the lead wires `diff` into taalasc.cli.COMMANDS.
    monkeypatch.setitem(cli.COMMANDS, "diff", ("taalasc.commands.diff", "diff_cmd", "diff"))


@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> Path:
    """One compile (GDS and OASIS) of a tiny model; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("content")
    write_llama(root / "m", llama_config(hidden=32, layers=1, heads=2, kv_heads=1,
                                         intermediate=64, vocab=64))
    compile_model(root / "m", root / "masks", CompileOptions(formats=("gds", "oas")))
    return root / "masks"


def _read(path: Path) -> gdstk.Library:
    return gdstk.read_oas(str(path), unit=1e-9) if path.suffix == ".oas" else \
        gdstk.read_gds(str(path), unit=1e-9)


def _write(lib: gdstk.Library, path: Path) -> None:
    lib.write_oas(str(path)) if path.suffix == ".oas" else lib.write_gds(str(path))


def _edit_in_place(lib: gdstk.Library, kind: str) -> str:
    """Change what one cell draws, keeping its name; returns the name."""
    cells = {c.name: c for c in lib.cells}
    local = {local_name(n): n for n in cells}
    if kind == "tile":     # T<sha>: one chunk reference now places another chunk cell
        name = sorted(n for n in cells if TILE.match(n))[0]
        tile = cells[name]
        ref = next(r for r in tile.references if local_name(r.cell_name).startswith("V"))
        other = next(cells[n] for k, n in sorted(local.items())
                     if k.startswith("V") and n != ref.cell_name)
        tile.remove(ref)
        tile.add(gdstk.Reference(other, ref.origin))
        return name
    name = {"chunk": sorted(n for k, n in local.items() if k.startswith("V"))[-1],
            "straps": local["STRAPS"], "fill": local["FILL"], "fillsq": local["FILLSQ"]}[kind]
    cell = cells[name]
    poly = cell.polygons[0]   # one rectangle moves 10 nm to the right
    cell.remove(poly)
    cell.add(gdstk.Polygon(poly.points + (10, 0), poly.layer, poly.datatype))
    return name


def _forge(folder: Path, name: str) -> None:
    """Record a changed die file's sha256 in the manifest, as a forger (or a writer bug) would:
    then nothing but the content can tell."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"][name] = {"bytes": (folder / name).stat().st_size,
                                 "sha256": sha256_file(folder / name)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _layers(d) -> list[dict]:
    return [t.to_json() for t in d.layers]


@pytest.mark.parametrize("kind,fmt", [("tile", "gds"), ("tile", "oas"), ("chunk", "gds"),
                                      ("straps", "gds"), ("fill", "oas")])
def test_cell_edited_under_its_name_is_compared(masks, tmp_path, kind, fmt):
    new = tmp_path / "new"
    shutil.copytree(masks, new)
    die = new / f"die0.{fmt}"
    lib = _read(die)
    name = _edit_in_place(lib, kind)
    _write(lib, die)
    _forge(new, die.name)
    d = diff_masks(masks, new, fmt=fmt)
    flat = diff_masks(masks, new, fmt=fmt, trust_hashes=False)
    assert flat.changed_shapes > 0, name
    assert _layers(d) == _layers(flat), name     # the same answer as full flattening
    assert d.dies[0].refs_skipped > 0            # and still without flattening the rest
    # Bare files (no manifest): the same comparison by content.
    assert _layers(diff_masks(masks / die.name, die)) == _layers(flat)


def _ours(lib: gdstk.Library, path: Path) -> GdsLibrary:
    """A gdstk library edited by a test, written and read back by our reader (the diff's)."""
    _write(lib, path)
    return read_library(path)


def test_fill_square_edit_is_not_trusted(masks, tmp_path):
    """FILLSQ is placed ~2 x 10^5 times: moving it changes every fill square, a long exact
    XOR, so this checks the decision only: FILLSQ and FILL (which places it) are compared,
    everything else is still skipped."""
    lib_a = read_library(masks / "die0.gds")
    edited_lib = _read(masks / "die0.gds")
    _edit_in_place(edited_lib, "fillsq")
    lib_b = _ours(edited_lib, tmp_path / "b.gds")
    tops = {lib_a.cells[lib_a.top].name}
    trusted_a, trusted_b = trusted_cells(lib_a, lib_b, "die 0")
    edited = {n for n in {c.name for c in lib_a.cells} if local_name(n) in ("FILL", "FILLSQ")}
    assert set(trusted_a) == set(trusted_b) == {c.name for c in lib_a.cells} - tops - edited


def test_identical_rewrite_still_skips_every_tile(masks, tmp_path):
    """Hashes come from the parsed records: gdstk's re-encoding of the same layout matches."""
    new = tmp_path / "new"
    shutil.copytree(masks, new)
    _write(_read(new / "die0.gds"), new / "die0.gds")
    _forge(new, "die0.gds")
    d = diff_masks(masks, new)
    assert d.identical
    assert d.dies[0].refs_compared == 0


def test_content_hash_ignores_names_and_sees_every_shape(masks, tmp_path):
    lib = _read(masks / "die0.gds")
    before = content_hashes(_ours(lib, tmp_path / "before.gds"), "die0")
    chunk = sorted(n for n in before if local_name(n).startswith("V"))[0]
    users = {c.name for c in lib.cells if any(r.cell_name == chunk for r in c.references)}
    lib.rename_cell(chunk, "RENAMED")
    renamed = content_hashes(_ours(lib, tmp_path / "renamed.gds"), "die0")
    assert renamed["RENAMED"] == before[chunk]
    assert all(renamed[n] == before[n] for n in users)       # names are not content
    cell = next(c for c in lib.cells if c.name == "RENAMED")
    poly = cell.polygons[0]
    cell.remove(poly)
    cell.add(gdstk.Polygon(poly.points + (0, 1), poly.layer, poly.datatype))
    moved = content_hashes(_ours(lib, tmp_path / "moved.gds"), "die0")
    assert moved["RENAMED"] != before[chunk]
    assert all(moved[n] != before[n] for n in users)          # ... and reaches every user


def _one_ref(child: int) -> _Refs:
    z, z2 = np.zeros(1, np.int64), np.zeros((1, 2), np.int64)
    return _Refs(np.array([child]), z2, np.zeros(1, bool), z, z + 1, z + 1, z2, z2)


def test_content_hash_refuses_a_cycle():
    """Our readers refuse a cycle when they read; the hash refuses one in a library built
    otherwise (TOP places A, A places B, B places A)."""
    lib = GdsLibrary(Path("x.gds"), [GdsCell("TOP", refs=_one_ref(1)), GdsCell("A", refs=_one_ref(2)),
                                     GdsCell("B", refs=_one_ref(1))], top=0)
    with pytest.raises(MaskError, match="reference cycle"):
        content_hashes(lib, "x.gds")


def _point_manifest(folder: Path, name: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["dies"][0]["files"]["gds"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../outside.gds", "ABSOLUTE", "sub/die0.gds", "..", "",
                                  "link-out.gds", "fifo.gds"])
def test_manifest_names_only_files_inside_the_folder(masks, tmp_path, capsys, name):
    new = tmp_path / "new"
    shutil.copytree(masks, new)
    shutil.copy(masks / "die0.gds", tmp_path / "outside.gds")
    (new / "sub").mkdir()
    shutil.copy(masks / "die0.gds", new / "sub" / "die0.gds")
    (new / "link-out.gds").symlink_to(tmp_path / "outside.gds")
    os.mkfifo(new / "fifo.gds")               # reading it would hang
    if name == "ABSOLUTE":
        name = str(tmp_path / "outside.gds")
    _point_manifest(new, name)
    assert main(["diff", str(masks), str(new), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {new / 'manifest.json'}: dies[0].files.gds: {name!r} is not a file "
                   "inside the folder")


def test_symlink_inside_the_folder_is_followed(masks, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(masks, new)
    (new / "alias.gds").symlink_to("die0.gds")
    _point_manifest(new, "alias.gds")
    _forge(new, "alias.gds")
    assert diff_masks(masks, new).identical


def test_inside_contract(tmp_path):
    (tmp_path / "f.gds").write_bytes(b"x")
    assert inside(tmp_path, "f.gds", "m.json: k") == tmp_path / "f.gds"
    with pytest.raises(MaskError, match=r"^m.json: k: 'gone.gds' does not exist in "):
        inside(tmp_path, "gone.gds", "m.json: k")
    for bad in (None, 3, "a\0b", ".", "./f.gds"):
        with pytest.raises(MaskError, match=r"^m.json: k: .* is not a file inside the folder$"):
            inside(tmp_path, bad, "m.json: k")


def test_die_file_changed_after_the_compile_exit_1(masks, tmp_path, capsys):
    new = tmp_path / "new"
    shutil.copytree(masks, new)
    lib = _read(new / "die0.gds")
    _edit_in_place(lib, "chunk")
    _write(lib, new / "die0.gds")
    assert main(["diff", str(masks), str(new), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {new / 'die0.gds'}: sha256 differs from manifest.json outputs "
                          "(the file was changed after the compile)") and "\n" not in err
    # The geometry can still be compared: the die files themselves, without the manifest.
    assert main(["diff", str(masks / "die0.gds"), str(new / "die0.gds"), "-q"]) == 2
    # A manifest that records no sha256 for the file cannot vouch for it either.
    manifest = json.loads((new / "manifest.json").read_text())
    del manifest["outputs"]["die0.gds"]
    (new / "manifest.json").write_text(json.dumps(manifest))
    assert main(["diff", str(masks), str(new), "-q"]) == 1
    assert "no sha256 for it in manifest.json outputs" in capsys.readouterr().err
