"""The bad-input corpus: every case is built at test time in a temporary folder.

Each case is ``(id, build, pattern)``: ``build(folder)`` writes the bad input into ``folder``
and returns the path (or the extra CLI arguments) to hand to taalasc; ``pattern`` is a regex
that the one-line error message (after ``error: ``) must match. The three static files in this
folder (gdstk_*.gds/.oas) are the only inputs that are not generated: they are the smallest
mutated mask files found that crash gdstk itself (see docs/bad-input.md).

``run_cli`` runs ``taalasc.cli.main`` in-process and returns (exit code, stderr lines); it
records Python warnings as stderr lines too, because outside pytest they are printed there.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from taalasc.cli import main
from taalasc.model.synth import llama_config, write_demo, write_llama, write_safetensors

HERE = Path(__file__).parent
REPO = HERE.parent.parent
BASE_YAML = (REPO / "base_array" / "sky130-demo.yaml").read_text()
PDK_YAML = (REPO / "pdk_configs" / "sky130.yaml").read_text()


# --- running the CLI and judging its output -------------------------------------------------

def run_cli(capfd, argv: list) -> tuple[int, list[str]]:
    """Run ``taalasc ARGV`` in-process; return (exit code, non-empty stderr lines).

    ``capfd`` (pytest's fixture) captures file descriptor 2 too, so messages printed by C
    libraries (gdstk) are seen. Warnings that pytest would swallow are added as lines.
    """
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    lines += [f"{w.category.__name__}: {w.message}" for w in caught]
    return code, lines


def assert_one_error(code: int, lines: list[str], pattern: str, exit_code: int = 1) -> None:
    """Exit code as expected, and stderr is one ``error: `` line matching ``pattern``.

    A ConfigError with several problems prints ``error: FILE: N problems`` then one indented
    line per problem; that is accepted as one error.
    """
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    assert code == exit_code, f"exit {code}, stderr:\n{text}"
    assert lines and lines[0].startswith("error: "), text
    rest = lines[1:]
    m = re.search(r": (\d+) problems$", lines[0])
    if m:
        assert len(rest) == int(m.group(1)) and all(r.startswith("  ") for r in rest), text
    else:
        assert not rest, f"more than one stderr line:\n{text}"
    assert "internal error" not in lines[0], text
    assert re.search(pattern, text[len("error: "):]), f"{pattern!r} not in:\n{text}"


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (relative, sorted) -> file bytes (None for folders)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = p.read_bytes() if p.is_file() and not p.is_symlink() \
            else None
    return out


# --- models -----------------------------------------------------------------------------------

def small_llama(folder: Path, **changes) -> Path:
    """A tiny valid Llama checkpoint (compiles in well under a second)."""
    cfg = dict(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=64)
    cfg.update(changes)
    return write_llama(folder, llama_config(**cfg), dtype="F32")


def raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"",
                    length: int | None = None) -> Path:
    """A safetensors file with any header (dict or raw bytes), data and declared length."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _f32(folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", tensors, "F32")
    return folder / "model.safetensors"


def _w(*shape) -> np.ndarray:
    return np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _truncated(folder: Path) -> Path:
    path = small_llama(folder) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _truncated_header(folder: Path) -> Path:
    path = small_llama(folder) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    return path


def _edit_header(folder: Path, edit: Callable[[dict], None]) -> Path:
    """Rewrite a valid file's header through ``edit``; the data area stays as it was."""
    path = small_llama(folder) / "model.safetensors"
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    edit(header)
    return raw_safetensors(path, header, blob[8 + n:])


def _lie_offsets(h: dict) -> None:  # shift one tensor by 4 bytes: a hole before it
    name = sorted(k for k in h if k != "__metadata__")[0]
    b, e = h[name]["data_offsets"]
    h[name]["data_offsets"] = [b + 4, e + 4]


def _lie_size(h: dict) -> None:  # the shape claims twice the bytes the offsets hold
    name = sorted(k for k in h if k != "__metadata__")[0]
    h[name]["shape"] = [2 * h[name]["shape"][0]] + h[name]["shape"][1:]


def _overlap(h: dict) -> None:  # the second tensor starts inside the first
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])
    b, e = h[names[1]]["data_offsets"]
    h[names[1]]["data_offsets"] = [b - 4, e - 4]


def _unknown_dtype(h: dict) -> None:
    h[sorted(k for k in h if k != "__metadata__")[0]]["dtype"] = "F12"


def _huge_header_length(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return raw_safetensors(folder / "model.safetensors", b"{}", length=2**63)


def _header_just_under_cap(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return raw_safetensors(folder / "model.safetensors", b"{}", length=99_999_999)


def _int_weights(folder: Path) -> Path:
    folder.mkdir(parents=True)
    header = {"w": {"dtype": "I32", "shape": [32, 32], "data_offsets": [0, 4096]}}
    return raw_safetensors(folder / "model.safetensors", header, b"\0" * 4096)


def _with_value(value: float, shape=(32, 32)) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        w = _w(*shape)
        w.flat[1] = value
        return _f32(folder, {"w": w})
    return build


def _vector_overflowing_fp16(folder: Path) -> Path:
    return _f32(folder, {"w": _w(32, 32), "norm": np.full(32, 1e6, np.float32)})


def _missing_shard(folder: Path) -> Path:
    out = write_llama(folder, llama_config(hidden=32, layers=1, heads=2, kv_heads=1,
                                           intermediate=64, vocab=64), dtype="F32", shards=2)
    (out / "model-00002-of-00002.safetensors").unlink()
    return out


def _shard_outside(folder: Path) -> Path:
    out = small_llama(folder)
    names = json.loads(_header_json(out / "model.safetensors"))
    names.pop("__metadata__", None)
    index = {"weight_map": {n: "../model.safetensors" for n in names}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return out


def _header_json(path: Path) -> bytes:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8:8 + n]


def _config_disagrees(folder: Path) -> Path:
    out = small_llama(folder)
    cfg = json.loads((out / "config.json").read_text())
    cfg["hidden_size"] = 48
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _config_not_json(folder: Path) -> Path:
    out = small_llama(folder)
    (out / "config.json").write_text("{'hidden_size': 32,")
    return out


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / name).write_bytes(content)
        return folder / name
    return build


def _empty_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def _no_tensors(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return raw_safetensors(folder / "model.safetensors", b"{}      ")


# Header-level cases: refused before any weight is read (compile and inspect agree).
HEADER_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("truncated-data", _truncated, r"run past the end of the \d+-byte data area"),
    ("truncated-in-header", _truncated_header, r"header length \d+ runs past the end of the "
                                               r"40-byte file"),
    ("empty-file", _file("model.safetensors", b""), r"0 bytes is shorter than the 8-byte"),
    ("five-bytes", _file("model.safetensors", b"\x01\x02\x03\x04\x05"), r"5 bytes is shorter"),
    ("random-bytes", _file("model.safetensors", np.random.default_rng(7).bytes(4096)),
     r"header length must be at most|header length \d+ runs past"),
    ("png-renamed", _file("model.safetensors", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
     r"header length must be at most|runs past the end"),
    ("header-length-2^63", _huge_header_length, r"header length must be at most 100000000 "
                                                r"bytes, not 9223372036854775808"),
    ("header-length-past-eof", _header_just_under_cap, r"header length 99999999 runs past the "
                                                       r"end of the 10-byte file"),
    ("offsets-leave-hole", lambda f: _edit_header(f, _lie_offsets), r"leaves a hole of 4 bytes"),
    ("shape-lies-about-size", lambda f: _edit_header(f, _lie_size),
     r"data_offsets span \d+ bytes, but F32 \[\d+, \d+\] needs \d+"),
    ("overlapping-tensors", lambda f: _edit_header(f, _overlap), r"overlaps tensor"),
    ("unknown-dtype", lambda f: _edit_header(f, _unknown_dtype),
     r"dtype must be one of BOOL, .*, not 'F12'"),
    ("header-not-json", lambda f: raw_safetensors(_empty_folder(f) / "model.safetensors",
                                                  b"{not json"), r"header is not valid JSON"),
    ("header-duplicate-key", lambda f: raw_safetensors(
        _empty_folder(f) / "model.safetensors", b'{"a": 1, "a": 2}'), r"duplicate key 'a'"),
    ("no-tensors", _no_tensors, r"checkpoint holds no tensors"),
    ("index-missing-shard", _missing_shard, r"shard file 'model-00002-of-00002.safetensors' "
                                            r"is missing"),
    ("index-shard-outside-folder", _shard_outside, r"must stay inside the index's folder"),
    ("config-disagrees", _config_disagrees, r"config\.json: .*disagrees|config\.json: .*48"),
    ("config-not-json", _config_not_json, r"config\.json: config\.json is not valid JSON"),
    ("not-a-checkpoint-suffix", _file("model.bin", b"\0" * 64), r"a checkpoint must be a "
                                                                r"\.safetensors file"),
    ("empty-folder", _empty_folder, r"folder has no model\.safetensors\.index\.json and no "
                                    r"\.safetensors file"),
]

# Cases found only when the weights are read or placed (compile only).
COMPILE_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("nan-weight", _with_value(float("nan")), r"tensor 'w': weight \[0, 1\] is nan"),
    ("inf-weight", _with_value(float("inf")), r"tensor 'w': weight \[0, 1\] is inf"),
    ("int32-weights", _int_weights, r"tensor 'w' has dtype I32; weights must be one of"),
    ("zero-size-tensor", lambda f: _f32(f, {"w": np.zeros((0, 32), np.float32)}),
     r"w: shape \[0, 32\] cannot be placed"),
    ("scalar-tensor", lambda f: _f32(f, {"w": np.ones((), np.float32)}),
     r"w: shape \[\] cannot be placed"),
    ("3d-tensor", lambda f: _f32(f, {"w": np.ones((2, 2, 2), np.float32)}),
     r"tensor 'w' has shape \(2, 2, 2\): only 2-D"),
]

# Reaches the weights and fails there, but prints a numpy RuntimeWarning before the error.
FP16_OVERFLOW_CASE = ("vector-overflows-fp16", _vector_overflowing_fp16,
                      r"norm: element 0 = 1e\+06 overflows fp16")


def demo_model(folder: Path) -> Path:
    return write_demo(folder)


# --- YAML configs -------------------------------------------------------------------------------

def _sub(old: str, new: str) -> str:
    assert old in BASE_YAML, old
    return BASE_YAML.replace(old, new)


BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)]) + "\n"

# (id, YAML text or bytes, pattern). Each is handed to `taalasc compile MODEL --base FILE`.
YAML_CASES: list[tuple[str, str | bytes, str]] = [
    ("syntax-error", "name: [unclosed\n", r"line 2: expected ',' or ']'"),
    ("billion-laughs", BILLION_LAUGHS, r"line 2: YAML aliases \(\*name\) are not allowed"),
    ("python-tag", "!!python/object/apply:os.system ['echo pwned > PWNED']\n",
     r"line 1: could not determine a constructor for the tag"),
    ("python-tag-in-value", _sub("name: sky130-demo",
                                 "name: !!python/object/apply:os.system ['echo pwned > PWNED']"),
     r"could not determine a constructor for the tag"),
    ("wrong-type", _sub("columns: 16", "columns: sixteen"),
     r"tile_grid\.columns: must be an integer, not a string 'sixteen'"),
    ("bool-for-int", _sub("columns: 16", "columns: true"),
     r"tile_grid\.columns: must be an integer, not a boolean True"),
    ("unknown-key", _sub("max_dies: 8", "max_dies: 8\nmax_diez: 9"),
     r"max_diez: unknown key \(did you mean 'max_dies'\?\)"),
    ("negative-size", _sub("columns: 16", "columns: -16"), r"tile_grid\.columns: must be > 0, "
                                                           r"not -16"),
    ("nan-value", _sub("activity_factor: 0.15", "activity_factor: .nan"),
     r"datapath\.activity_factor: must be finite, not nan"),
    ("die-beyond-reticle", _sub("width_nm: 2000000", "width_nm: 4294967296"),
     r"die\.width_nm: 4294967296 nm is longer than the 33000000 nm side of the largest "
     r"exposure field"),
    ("grid-over-32-bits", _sub("origin_nm: [100000, 100000]", "origin_nm: [2147483000, 100000]"),
     r"tile_grid: \d+ nm does not fit a 32-bit GDS coordinate"),
    ("duplicate-key", _sub("max_dies: 8", "max_dies: 8\nmax_dies: 9"), r"duplicate key 'max_dies'"),
    ("base-and-pdk-mismatch", _sub("pdk: sky130", "pdk: ihp-sg13g2"),
     r"site_pitch_x_nm: 1600 nm is below the via pitch 1960 nm"),
    ("pdk-missing", _sub("pdk: sky130", "pdk: ./nope.yaml"), r"pdk: no such file"),
    ("pdk-unknown", _sub("pdk: sky130", "pdk: sky131"), r"pdk: unknown PDK 'sky131' \(did you "
                                                        r"mean 'sky130'\?\)"),
    ("estimation-only-pdk", _sub("pdk: sky130", "pdk: n6-class"),
     r"is on n6-class, an estimation-only PDK with no public mask layers"),
    ("empty-file", "", r"<top>: must be a mapping, not null"),
    ("top-level-list", "- 1\n- 2\n", r"<top>: must be a mapping, not a list"),
    ("not-utf8", b"\xff\xfe\x00garbage", r"not UTF-8 text \(byte 0\)"),
    ("over-1-MiB", "# " + "x" * (1 << 20) + "\n", r"over the 1,048,576-byte limit"),
    ("deep-nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n",
     r"nesting is too deep|must|unknown key"),
]

# Cases that currently do not give a clean one-line error (see the xfail reasons).
YAML_NUL_CASE = ("nul-character", "name: \x00\n", r"unacceptable character #x0000")
YAML_HUGE_INT_CASE = ("5000-digit-integer", _sub("columns: 16", "columns: " + "9" * 5000),
                      r"line \d+: integer of 5000 digits is too long")


def evil_pdk_files(folder: Path, pdk_name: str) -> Path:
    """A copy of sky130 whose ``name`` is ``pdk_name`` and a base array using it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p.yaml").write_text(re.sub(r"(?m)^name: .*$", f"name: {json.dumps(pdk_name)}",
                                          PDK_YAML, count=1))
    (folder / "b.yaml").write_text(_sub("pdk: sky130", "pdk: p.yaml"))
    return folder / "b.yaml"
