"""The two sides of a diff: compile folders (manifest + die files) or bare GDS/OASIS files.

Both sides must be masks for the same base chip: for folders the manifests' base array and
PDK (name and YAML sha256) must match; for bare files the PDK is recognised from the layers
the file uses. Anything else is a MaskError with one line naming both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from taalasc.errors import MaskError
from taalasc.outdir import MANIFEST, sha256_file

MASK_SUFFIXES = (".gds", ".gds2", ".gdsii", ".oas", ".oasis")


@dataclass
class MaskSet:
    """One side of a diff."""

    path: Path
    files: list[Path]                 # one per die, die order
    manifest: dict | None = None      # compile folders only
    base: object | None = None        # BaseArray (folders only)
    pdk: object | None = None         # Pdk (folders, or recognised from a bare file's layers)

    @property
    def is_folder(self) -> bool:
        return self.manifest is not None

    def describe(self) -> str:
        if self.base is not None:
            return f"base array {self.base.name!r} on {self.base.pdk.name}"
        if self.pdk is not None:
            return f"{self.pdk.name} layers"
        return "unknown PDK"


def load_library(path: Path):
    """A GDSII or OASIS file as a formats.gdsread.GdsLibrary (integer nm), read by our own
    readers; MaskError (one line) when unreadable. They are pure Python and numpy, so a
    corrupt file cannot crash the process: no child process is needed."""
    from taalasc.formats.readback import read_library

    return read_library(Path(path))


def open_mask_set(path: Path, fmt: str = "gds") -> MaskSet:
    """A compile folder (reads its manifest) or a single GDS/OASIS file."""
    from taalasc.extract.extract import read_manifest

    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        try:
            files = _die_files(path, manifest, fmt)
        except (KeyError, TypeError, AttributeError) as exc:
            raise MaskError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
        return MaskSet(path=path, files=files, manifest=manifest)
    if not path.exists():
        raise MaskError(f"{path}: no such compile folder or mask file")
    if path.suffix.lower() not in MASK_SUFFIXES:
        raise MaskError(f"{path}: must be a compile folder or a .gds/.oas file, "
                        f"not {path.suffix or 'a file without suffix'!r}")
    return MaskSet(path=path, files=[path])


def _die_files(folder: Path, manifest: dict, fmt: str) -> list[Path]:
    """The ``fmt`` file of every die, each a plain name of a file inside the folder."""
    from taalasc.extract.extract import mask_path

    return [mask_path(folder, manifest, die, fmt) for die in range(len(manifest["dies"]))]


def die_sha256(m: MaskSet, die: int) -> str | None:
    """The sha256 of die ``die``'s file (None when that side has fewer dies).

    A compile folder's die file must still be the one the compile wrote: its sha256 is
    checked against the manifest's ``outputs`` (~0.1 s per 100 MB), so that changed
    geometry is not reported under the manifest's tensors and tiles. To compare such files
    anyway, diff the mask files themselves (no manifest: geometry only)."""
    if die >= len(m.files):
        return None
    path = m.files[die]
    got = sha256_file(path)
    if m.manifest is not None:
        outputs = m.manifest.get("outputs")
        entry = outputs.get(path.name) if isinstance(outputs, dict) else None
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(want, str):
            raise MaskError(f"{path}: no sha256 for it in {MANIFEST} outputs, so it cannot be "
                            "checked against the compile; diff the mask files themselves")
        if got != want:
            raise MaskError(f"{path}: sha256 differs from {MANIFEST} outputs (the file was "
                            "changed after the compile); diff the mask files themselves to "
                            "compare their geometry")
    return got


def same_bytes(a: MaskSet, b: MaskSet, die: int, sha_a: str | None, sha_b: str | None) -> bool:
    """Both sides' die files are of one format and byte for byte the same (equal sha256)."""
    if sha_a is None or sha_b is None or sha_a != sha_b:
        return False
    oasis = (".oas", ".oasis")
    return (a.files[die].suffix.lower() in oasis) == (b.files[die].suffix.lower() in oasis)


def _inputs(m: MaskSet) -> dict:
    return m.manifest.get("inputs", {}) if m.manifest else {}


def check_compatible(a: MaskSet, b: MaskSet) -> None:
    """Refuse to diff masks of different base chips (MaskError, one line)."""
    if a.is_folder != b.is_folder:
        folder, other = (a, b) if a.is_folder else (b, a)
        raise MaskError(f"{folder.path} is a compile folder but {other.path} is a mask file; "
                        "give two compile folders or two GDS/OASIS files")
    if a.is_folder:
        for key, label in (("pdk", "PDK"), ("base_array", "base array")):
            ia, ib = _inputs(a).get(key, {}), _inputs(b).get(key, {})
            if ia.get("name") != ib.get("name"):
                raise MaskError(f"{a.path} uses {label} {ia.get('name')!r} but {b.path} uses "
                                f"{ib.get('name')!r}; a mask diff needs the same base chip")
            if ia.get("sha256") != ib.get("sha256"):
                sha_a, sha_b = str(ia.get("sha256"))[:12], str(ib.get("sha256"))[:12]
                raise MaskError(f"{a.path} and {b.path} were compiled with different versions of "
                                f"{label} {ia.get('name')!r} (sha256 {sha_a}… vs {sha_b}…); "
                                "a mask diff needs the same base chip")


def load_bases(a: MaskSet, b: MaskSet) -> None:
    """Load the compile folders' base array (refused if its YAML changed since the compile).

    Loaded once: check_compatible has shown both manifests name the same base array and PDK
    with the same YAML sha256, so B's is the same content as A's."""
    from taalasc.extract.extract import base_of

    if a.manifest is not None and b.manifest is not None:
        a.base = b.base = base_of(a.manifest, a.path)
        a.pdk = b.pdk = a.base.pdk


def recognise_pdk(a: MaskSet, b: MaskSet, layers_a: set, layers_b: set) -> None:
    """For bare files: name the PDK from the layers used; refuse two different PDKs."""
    from taalasc.config import builtin_names, load_pdk
    from taalasc.formats.readback import mask_layers

    known = []
    for name in builtin_names("pdk"):
        pdk = load_pdk(name)
        if pdk.layers is not None:
            known.append((pdk, mask_layers(pdk)))

    def match(layers: set):
        hits = [p for p, own in known if layers and layers <= own]
        return hits[0] if len(hits) == 1 else None

    pa, pb = match(layers_a), match(layers_b)
    if pa is not None and pb is not None and pa.name != pb.name:
        raise MaskError(f"{a.path} holds {pa.name} layers but {b.path} holds {pb.name} layers; "
                        "a mask diff needs the same PDK")
    if layers_a and layers_b and not layers_a & layers_b and (pa is None or pb is None):
        fmt = lambda ls: ", ".join(f"{l}/{d}" for l, d in sorted(ls))  # noqa: E731
        raise MaskError(f"{a.path} (layers {fmt(layers_a)}) and {b.path} (layers "
                        f"{fmt(layers_b)}) share no layer; a mask diff needs the same PDK")
    a.pdk = a.pdk or pa or pb
    b.pdk = b.pdk or pb or pa


def manifest_json(m: MaskSet) -> dict:
    """What the reports say about one side."""
    info = {"path": str(m.path), "files": [str(f) for f in m.files]}
    if m.manifest:
        inp = _inputs(m)
        info["base_array"] = inp.get("base_array", {}).get("name")
        info["pdk"] = inp.get("pdk", {}).get("name")
        info["model_files"] = [f.get("name") for f in inp.get("model", {}).get("files", [])]
        info["inputs_digest"] = m.manifest.get("inputs_digest")
    elif m.pdk is not None:
        info["pdk"] = m.pdk.name
    return json.loads(json.dumps(info))
