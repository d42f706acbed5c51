"""Bad checkpoints, end to end: `taalasc compile` / `taalasc inspect` give one clear error line,
exit 1, no traceback, and leave no output folder or staging folder behind."""

from __future__ import annotations

import tracemalloc

import pytest

from corpus.bad_inputs import (
    COMPILE_CASES,
    FP16_OVERFLOW_CASE,
    HEADER_CASES,
    assert_one_error,
    demo_model,
    run_cli,
)


def _compile(capfd, tmp_path, model, *extra):
    out = tmp_path / "out"
    code, lines = run_cli(capfd, ["compile", model, "-o", out, "--quiet", *extra])
    return code, lines, out


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if "taalasc-" in p.name]


@pytest.mark.parametrize("case", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_compile_refuses_bad_checkpoint(capfd, tmp_path, case):
    _, build, pattern = case
    model = build(tmp_path / "model")
    code, lines, out = _compile(capfd, tmp_path, model)
    assert_one_error(code, lines, pattern)
    _assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("case", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_inspect_refuses_bad_checkpoint(capfd, tmp_path, case):
    _, build, pattern = case
    code, lines = run_cli(capfd, ["inspect", build(tmp_path / "model")])
    assert_one_error(code, lines, pattern)


@pytest.mark.parametrize("case", COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_compile_refuses_bad_weights(capfd, tmp_path, case):
    _, build, pattern = case
    code, lines, out = _compile(capfd, tmp_path, build(tmp_path / "model"))
    assert_one_error(code, lines, pattern)
    _assert_nothing_written(tmp_path, out)


def test_vector_overflowing_fp16_is_one_line(capfd, tmp_path):
    _, build, pattern = FP16_OVERFLOW_CASE
    code, lines, out = _compile(capfd, tmp_path, build(tmp_path / "model"))
    assert_one_error(code, lines, pattern)
    _assert_nothing_written(tmp_path, out)


def test_model_that_does_not_fit(capfd, tmp_path):
    model = demo_model(tmp_path / "demo")
    code, lines, out = _compile(capfd, tmp_path, model, "--bits", "8", "--max-dies", "1",
                                 "--base", "sky130-demo")
    assert_one_error(code, lines, r"model needs [\d,]+ bits in \d+ weight tiles, but base array "
                                  r"sky130-demo .* allows 1 dies \(256 tiles\); 2 dies would be "
                                  r"needed")
    _assert_nothing_written(tmp_path, out)


def test_missing_model_path(capfd, tmp_path):
    code, lines, out = _compile(capfd, tmp_path, tmp_path / "nope")
    assert_one_error(code, lines, r"nope: no such file or folder")
    _assert_nothing_written(tmp_path, out)


def test_huge_header_length_allocates_nothing(capfd, tmp_path):
    """A header that claims 2**63 bytes (and one that claims 99 MB of a 10-byte file) is
    refused from the 8-byte length alone: peak Python allocation stays small."""
    for case in HEADER_CASES:
        if case[0] in ("header-length-2^63", "header-length-past-eof"):
            model = case[1](tmp_path / case[0])
            tracemalloc.start()
            try:
                code, lines = run_cli(capfd, ["inspect", model])
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert_one_error(code, lines, case[2])
            assert peak < 5_000_000, peak
