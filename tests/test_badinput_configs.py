"""Bad and hostile base-array / PDK YAML, end to end through `taalasc compile --base FILE`:
one clear error (a ConfigError with several problems lists each on an indented line), exit 1,
no traceback, no code executed, nothing written."""

from __future__ import annotations

import pytest

from corpus.bad_inputs import (
    YAML_CASES,
    YAML_HUGE_INT_CASE,
    YAML_NUL_CASE,
    assert_one_error,
    demo_model,
    run_cli,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return demo_model(tmp_path_factory.mktemp("demo"))


def _run_case(capfd, tmp_path, monkeypatch, model, case):
    name, text, pattern = case
    monkeypatch.chdir(tmp_path)  # a YAML tag that ran code would write PWNED here
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    code, lines = run_cli(capfd, ["compile", model, "--base", path, "-o", out, "--quiet"])
    assert_one_error(code, lines, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no output, no PWNED


@pytest.mark.parametrize("case", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_compile_refuses_bad_yaml(capfd, tmp_path, monkeypatch, model, case):
    _run_case(capfd, tmp_path, monkeypatch, model, case)


def test_nul_character_is_one_line(capfd, tmp_path, monkeypatch, model):
    _run_case(capfd, tmp_path, monkeypatch, model, YAML_NUL_CASE)


def test_huge_integer_is_a_config_error(capfd, tmp_path, monkeypatch, model):
    _run_case(capfd, tmp_path, monkeypatch, model, YAML_HUGE_INT_CASE)


def test_estimate_refuses_hostile_yaml_too(capfd, tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    for name, text, pattern in YAML_CASES[:4]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        code, lines = run_cli(capfd, ["estimate", model, "--base", path])
        assert_one_error(code, lines, pattern)
    assert not (tmp_path / "PWNED").exists()
