"""Our safetensors header parser and tensor reader, checked against the safetensors package."""

from __future__ import annotations

import io
import json
import re
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save, save_file

from taalasc.errors import ModelError
from taalasc.model.safetensors_io import (
    MAX_HEADER_BYTES,
    TensorInfo,
    parse_header_json,
    read_header,
    read_header_from,
    read_tensor,
    read_tensor_raw,
)


def _file(tmp_path, header, data: bytes = b"", name="m.safetensors"):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# --- round trip with the safetensors package as an independent writer ---------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_round_trip_against_safetensors_writer(tmp_path, dtype):
    rng = np.random.default_rng(1)
    tensors = {
        "a.weight": rng.standard_normal((3, 5)).astype(dtype),
        "b.bias": rng.standard_normal(7).astype(dtype),
        "c.scalar": np.array(2.5, dtype=dtype),
        "d.empty": np.zeros((0, 4), dtype=dtype),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    header = read_header(path)
    assert header.metadata == {"format": "pt"}
    assert set(header.tensors) == set(tensors)
    for name, want in tensors.items():
        info = header.tensors[name]
        assert info.shape == want.shape
        got = read_tensor(info)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want.astype(np.float32))
        raw = read_tensor_raw(info)
        assert raw.dtype == want.dtype
        assert raw.tobytes() == want.tobytes()


def test_read_returns_a_copy_and_reads_only_its_bytes(tmp_path):
    a = np.arange(4, dtype=np.float32)
    path = tmp_path / "x.safetensors"
    save_file({"a": a, "b": a * 2}, str(path))
    info = read_header(path).tensors["a"]
    # Corrupt every byte outside tensor a: reading a must not notice.
    blob = bytearray(path.read_bytes())
    for i in range(info.offset + info.nbytes, len(blob)):
        blob[i] = 0xFF
    path.write_bytes(bytes(blob))
    got = read_tensor(info)
    got[0] = 99.0
    np.testing.assert_array_equal(read_tensor(info), a)


def test_int_and_f64_dtypes(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"i8": np.array([-3, 4], np.int8), "f64": np.array([0.1], np.float64),
               "i64": np.array([2**40], np.int64)}, str(path))
    h = read_header(path).tensors
    np.testing.assert_array_equal(read_tensor(h["i8"]), [-3.0, 4.0])
    assert read_tensor(h["f64"])[0] == np.float32(0.1)
    assert read_tensor_raw(h["i64"])[0] == 2**40
    with pytest.raises(ModelError, match=r"^.*x\.safetensors: tensor 'i64' has dtype I64; "
                                         r"weights must be one of F32, F16, BF16"):
        read_tensor(h["i64"])


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int8])
@pytest.mark.parametrize("truncate", [False, True])
def test_a_large_tensor_is_converted_chunk_by_chunk(tmp_path, monkeypatch, dtype, truncate):
    # float32 result plus one chunk, not the stored copy plus a widened one (8 B lm_head)
    from taalasc.model import safetensors_io

    monkeypatch.setattr(safetensors_io, "_READ_CHUNK", 7)
    want = (np.random.default_rng(2).standard_normal((5, 9)) * 20).astype(dtype)
    path = tmp_path / "x.safetensors"
    save_file({"w": want}, str(path))
    info = read_header(path).tensors["w"]
    if truncate:
        with open(path, "r+b") as f:
            f.truncate(info.offset + 3 * 7 * want.itemsize + 1)
        with pytest.raises(ModelError, match=rf"tensor 'w' is truncated: read "
                                             rf"{3 * 7 * want.itemsize + 1} of {info.nbytes}"):
            read_tensor(info)
        return
    got = read_tensor(info)
    assert got.dtype == np.float32 and got.shape == (5, 9) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_truncated_after_open_is_an_error(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": np.arange(16, dtype=np.float32)}, str(path))
    info = read_header(path).tensors["a"]
    with open(path, "r+b") as f:
        f.truncate(info.offset + 10)
    with pytest.raises(ModelError, match=r"^.*: tensor 'a' is truncated: read 10 of 64 bytes$"):
        read_tensor(info)


def test_tensor_info_numel():
    info = TensorInfo("t", "F32", (3, 0, 2), "f", 8, 0)
    assert info.numel == 0
    assert TensorInfo("t", "F32", (), "f", 8, 4).numel == 1


# --- every header error, pinned --------------------------------------------------------------

HEADER_ERRORS = [
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8,
     r"tensor 'a': entry is missing data_offsets$"),
    ({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
     r"tensor 'a': entry is missing dtype$"),
    ({"a": _entry(dtype="F12")}, b"\0" * 8, r"tensor 'a': dtype must be one of BOOL, .*not 'F12'$"),
    ({"a": _entry(dtype=7)}, b"\0" * 8, r"tensor 'a': dtype must be one of .*, not 7$"),
    ({"a": _entry(shape=(-2,))}, b"\0" * 8,
     r"tensor 'a': shape must not have negative dimensions, not \[-2\]$"),
    ({"a": {**_entry(), "shape": [2.0]}}, b"\0" * 8,
     r"tensor 'a': shape must be a list of integers, not \[2\.0\]$"),
    ({"a": {**_entry(), "shape": [True]}}, b"\0" * 8,
     r"tensor 'a': shape must be a list of integers, not \[True\]$"),
    ({"a": _entry(offsets=(0,))}, b"\0" * 8,
     r"tensor 'a': data_offsets must be \[begin, end\] integers, not \[0\]$"),
    ({"a": {**_entry(), "data_offsets": "0-8"}}, b"\0" * 8,
     r"tensor 'a': data_offsets must be \[begin, end\] integers, not '0-8'$"),
    ({"a": _entry(offsets=(8, 0))}, b"\0" * 8,
     r"tensor 'a': data_offsets must satisfy 0 <= begin <= end, not \[8, 0\]$"),
    ({"a": _entry(offsets=(0, 12))}, b"\0" * 12,
     r"tensor 'a': data_offsets span 12 bytes, but F32 \[2\] needs 8$"),
    ({"a": _entry(offsets=(8, 16))}, b"\0" * 8,
     r"tensor 'a': data_offsets \[8, 16\] run past the end of the 8-byte data area"),
    ({"a": _entry(), "b": _entry(offsets=(4, 12))}, b"\0" * 12,
     r"tensor 'b' overlaps tensor 'a' \(bytes 4\.\.8 of the data area\)$"),
    ({"a": _entry(offsets=(4, 12))}, b"\0" * 12,
     r"tensor 'a' leaves a hole of 4 bytes before it in the data area \(at byte 0\)$"),
    ({"a": _entry()}, b"\0" * 9,
     r"1 trailing bytes after the last tensor"),
    ({"a": {**_entry(), "extra": 1}}, b"\0" * 8, r"tensor 'a': unknown key 'extra'"),
    ({"a": [1, 2]}, b"", r"tensor 'a': entry must be an object, not \[1, 2\]$"),
    ({"__metadata__": {"format": 1}}, b"",
     r"__metadata__ must be a map of strings to strings, not \{'format': 1\}$"),
    ({"__metadata__": ["x"]}, b"", r"__metadata__ must be a map of strings to strings"),
    (b"[1, 2]", b"", r"header must be a JSON object, not list$"),
    (b"{not json", b"", r"header is not valid JSON: "),
    (b'{"a": 1, "a": 2}', b"", r"header is not valid JSON: duplicate key 'a'"),
    (b'{"a": NaN}', b"", r"header is not valid JSON: NaN is not valid JSON"),
    (b"\xff\xfe{}", b"", r"header is not UTF-8 \(byte 0\)$"),
    (b"[" * 100_000 + b"]" * 100_000, b"", r"header (JSON is nested too deeply|is not valid)"),
]


@pytest.mark.parametrize("header,data,pattern", HEADER_ERRORS)
def test_header_errors(tmp_path, header, data, pattern):
    path = _file(tmp_path, header, data)
    with pytest.raises(ModelError, match=r"^" + re.escape(str(path)) + r": " + pattern):
        read_header(path)


def test_file_shorter_than_8_bytes(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ModelError, match=r"^.*short\.safetensors: not a safetensors file: "
                                         r"3 bytes is shorter than the 8-byte header length$"):
        read_header(path)


def test_header_length_past_end_of_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 50) + b"{}")
    with pytest.raises(ModelError, match=r"^.*x\.safetensors: header length 50 runs past the "
                                         r"end of the 10-byte file"):
        read_header(path)


def test_huge_header_length_is_refused_before_allocating(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(ModelError, match=r"^.*: header length must be at most 100000000 "
                                         r"bytes, not 9223372036854775808$"):
        read_header(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"^.*nope\.safetensors: cannot read: "):
        read_header(tmp_path / "nope.safetensors")


def test_padding_and_zero_size_tensors_are_accepted(tmp_path):
    header = json.dumps({"z": _entry(shape=(0,), offsets=(0, 0)), "a": _entry(),
                         "y": _entry(shape=(0, 3), offsets=(8, 8))}).encode() + b"      "
    h = read_header(_file(tmp_path, header, b"\0" * 8))
    assert list(h.tensors) == ["z", "a", "y"]  # file-offset order
    assert h.tensors["a"].offset == 8 + len(header)


def test_empty_header_with_no_data_is_valid(tmp_path):
    assert read_header(_file(tmp_path, b"{}")).tensors == {}


# --- fuzzing: garbage in -> ModelError out, never another exception -----------------------

VALID = save({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
              "b": np.ones(3, dtype=np.float16)}, metadata={"format": "pt"})


def _parse_bytes(blob: bytes) -> None:
    try:
        read_header_from(io.BytesIO(blob), len(blob), "fuzz")
    except ModelError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(blob):
    _parse_bytes(blob)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       st.integers(-20, 20))
def test_fuzz_mutated_valid_file(edits, cut):
    blob = bytearray(VALID)
    for pos, value in edits:
        blob[pos] = value
    blob = bytes(blob[:cut] if cut < 0 else blob + b"\0" * cut)
    _parse_bytes(blob)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["a", "b", "__metadata__"]),
       st.sampled_from([None, "dtype", "shape", "data_offsets"]), JSON,
       st.integers(0, 64))
def test_fuzz_structured_header(name, key, value, data_len):
    doc = json.loads(VALID[8:8 + struct.unpack("<Q", VALID[:8])[0]])
    if key is None or not isinstance(doc.get(name), dict):
        doc[name] = value
    else:
        doc[name][key] = value
    raw = json.dumps(doc).encode()
    try:
        parse_header_json(raw, 8 + len(raw) + data_len, "fuzz")
    except ModelError:
        pass


def test_header_cap_matches_reference():
    assert MAX_HEADER_BYTES == 100_000_000


def test_null_metadata_is_no_metadata(tmp_path):
    h = read_header(_file(tmp_path, {"__metadata__": None, "a": _entry()}, b"\0" * 8))
    assert h.metadata == {} and list(h.tensors) == ["a"]
