"""Property-based fuzzing (Hypothesis) of the three readers of untrusted files, end to end:
the safetensors header (through `taalasc inspect`), the YAML schemas (through
`taalasc estimate --base`) and the GDS/OASIS reader used by verify and diff.

Never a traceback, never a hang, never unbounded memory. Bounded for CI: max_examples and a
per-example timeout; the whole file runs in well under 30 s.
"""

from __future__ import annotations

import math
import re
import struct

import gdstk
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from corpus.bad_inputs import BASE_YAML, assert_one_error, run_cli, small_llama
from corpus.masks import GDSTK_CRASHERS, ReaderWorker, seed_library, write_seed
from taalasc.config import load_pdk
from taalasc.formats.readback import read_vias
from taalasc.errors import MaskError

FAST = settings(max_examples=60, deadline=None, derandomize=True,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=list(HealthCheck))


def _edits():
    """Up to 6 byte edits: (kind, position fraction, payload)."""
    return st.lists(st.tuples(st.sampled_from(["set", "cut", "insert"]),
                              st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=8)),
                    min_size=1, max_size=6)


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for kind, where, payload in edits:
        pos = min(int(where * len(b)), max(len(b) - 1, 0))
        if kind == "set" and b:
            b[pos] = payload[0]
        elif kind == "cut":
            del b[pos:pos + len(payload) * 3]
        else:
            b[pos:pos] = payload
    return bytes(b)


def _check_cli(code: int, lines: list[str]) -> None:
    """Success, or one clean error line: never a traceback or an internal error."""
    if code == 0:
        assert not any(line.startswith(("error:", "Traceback")) for line in lines), lines
    else:
        assert_one_error(code, lines, r".")


# --- safetensors header, through `taalasc inspect` ---------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return (small_llama(tmp_path_factory.mktemp("st")) / "model.safetensors").read_bytes()


@FAST
@given(edits=_edits(), in_header=st.booleans())
def test_fuzz_inspect_mutated_checkpoint(capfd, tmp_path_factory, checkpoint, edits, in_header):
    (n,) = struct.unpack("<Q", checkpoint[:8])
    if in_header:  # aim the edits at the 8-byte length and the JSON, where the parser works
        data = _mutate(checkpoint[:8 + n], edits) + checkpoint[8 + n:]
    else:
        data = _mutate(checkpoint, edits)
    path = tmp_path_factory.mktemp("m") / "model.safetensors"
    path.write_bytes(data)
    _check_cli(*run_cli(capfd, ["inspect", path]))


# --- YAML schema, through `taalasc estimate --base` --------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=8),
                    st.floats(allow_nan=True, allow_infinity=True), st.just([]), st.just({}),
                    st.lists(st.integers(-5, 5), max_size=3))


def _leaves(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix


_BASE_DOC = yaml.safe_load(BASE_YAML)
_LEAVES = sorted(_leaves(_BASE_DOC), key=str)


@FAST
@given(leaf=st.sampled_from(_LEAVES), value=_VALUES, drop=st.booleans())
def test_fuzz_base_array_leaf(capfd, tmp_path_factory, checkpoint, leaf, value, drop):
    doc = yaml.safe_load(BASE_YAML)
    parent = doc
    for key in leaf[:-1]:
        parent = parent[key]
    if drop and isinstance(parent, dict):
        del parent[leaf[-1]]
    else:
        parent[leaf[-1]] = value
    folder = tmp_path_factory.mktemp("y")
    (folder / "model.safetensors").write_bytes(checkpoint)
    (folder / "base.yaml").write_text(yaml.safe_dump(doc))
    code, lines = run_cli(capfd, ["estimate", folder / "model.safetensors",
                                  "--base", folder / "base.yaml"])
    _check_cli(code, lines)


# --- GDS/OASIS reader: hostile but well-formed geometry, in-process ---------------------------

_LAYERS = st.sampled_from([(71, 44), (72, 20), (1, 0), (71, 20)])
_COORD = st.integers(-10**8, 10**8)


@st.composite
def _hostile_library(draw):
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    leaf = lib.new_cell("LEAF")
    for _ in range(draw(st.integers(0, 4))):
        layer, datatype = draw(_LAYERS)
        kind = draw(st.sampled_from(["via", "rect", "poly", "path"]))
        x, y = draw(_COORD), draw(_COORD)
        if kind == "via":
            leaf.add(gdstk.rectangle((x, y), (x + 800, y + 800), layer=layer, datatype=datatype))
        elif kind == "rect":
            leaf.add(gdstk.rectangle((x, y), (x + draw(st.integers(1, 5000)),
                                              y + draw(st.integers(1, 5000))),
                                     layer=layer, datatype=datatype))
        elif kind == "poly":
            pts = draw(st.lists(st.tuples(_COORD, _COORD), min_size=3, max_size=7))
            leaf.add(gdstk.Polygon(pts, layer=layer, datatype=datatype))
        else:
            leaf.add(gdstk.FlexPath([(x, y), (x + 4000, y)], 800, layer=layer,
                                    datatype=datatype, simple_path=True))
    top = lib.new_cell("TOP")
    for _ in range(draw(st.integers(0, 3))):
        top.add(gdstk.Reference(
            leaf, (draw(_COORD), draw(_COORD)),
            rotation=draw(st.sampled_from([0, 1, 2, 3, 0.5])) * math.pi / 2,
            magnification=draw(st.sampled_from([1, 1, 2])),
            x_reflection=draw(st.booleans()),
            columns=draw(st.integers(1, 4)), rows=draw(st.integers(1, 4)),
            spacing=(1600, 6400)))
    return lib


@FAST
@given(lib=_hostile_library(), oas=st.booleans())
def test_fuzz_hostile_geometry_only_raises_mask_error(tmp_path_factory, lib, oas):
    path = tmp_path_factory.mktemp("g") / ("m.oas" if oas else "m.gds")
    lib.write_oas(path) if oas else lib.write_gds(path)
    try:
        centres = read_vias(path, load_pdk("sky130"))
    except MaskError as exc:
        assert "\n" not in str(exc)
        return
    assert centres.ndim == 2 and centres.shape[1] == 2
    assert np.all(np.diff(centres[:, 0]) >= 0)


# --- GDS/OASIS reader: mutated bytes, in a worker process (gdstk can crash) -------------------

@pytest.fixture(scope="module")
def worker():
    w = ReaderWorker()
    yield w
    w.close()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    gds, oas = write_seed(tmp_path_factory.mktemp("seed"))
    return {"gds": gds.read_bytes(), "oas": oas.read_bytes()}


def _fuzz_one(worker, seeds, tmp_path_factory, ext, edits, raw=None):
    data = raw if raw is not None else _mutate(seeds[ext], edits)
    path = tmp_path_factory.mktemp("f") / f"m.{ext}"
    path.write_bytes(data)
    answer = worker.read(path, timeout_s=10)
    if answer not in ("ok", "MaskError"):
        keep = path.with_name(f"failing.{ext}")
        keep.write_bytes(data)
        pytest.fail(f"reading a mutated .{ext} gave {answer!r} (file kept: {keep})")


_CRASHING_GDS = [p.read_bytes() for p in GDSTK_CRASHERS if p.suffix == ".gds"]
_CRASHING_OAS = [p.read_bytes() for p in GDSTK_CRASHERS if p.suffix == ".oas"]


@settings(FAST, max_examples=150)
@example(edits=[], raw=_CRASHING_GDS[0])
@given(edits=_edits(), raw=st.none())
def test_fuzz_mutated_gds_never_crashes(worker, seeds, tmp_path_factory, edits, raw):
    _fuzz_one(worker, seeds, tmp_path_factory, "gds", edits, raw)


@settings(FAST, max_examples=150)
@example(edits=[], raw=_CRASHING_OAS[0])
@given(edits=_edits(), raw=st.none())
def test_fuzz_mutated_oasis_never_crashes(worker, seeds, tmp_path_factory, edits, raw):
    _fuzz_one(worker, seeds, tmp_path_factory, "oas", edits, raw)


def test_seed_mask_is_valid(tmp_path):
    """The fuzz seed itself reads cleanly (so mutations start from a good file)."""
    gds, oas = write_seed(tmp_path)
    for path in (gds, oas):
        centres = read_vias(path, load_pdk("sky130"))
        assert centres.shape == (7, 2)
    assert len(seed_library().cells) == 2
    assert re.match(rb"%SEMI-OASIS\r\n", oas.read_bytes())
