"""Paths and isolation: names that come from files (tensor names, base-array and PDK names)
cannot make taalasc write outside its output folder; YAML runs no code; nothing touches the
network."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from corpus.bad_inputs import _sub, evil_pdk_files, run_cli, small_llama, tree
from taalasc.model.synth import write_safetensors

EVIL_NAMES = ["../../evil", "/etc/passwd", "..\\..\\evil", "a/../../b", "x/./../../../y",
              "die0.gds", "manifest.json", "~root/.bashrc", "nul\u0000byte", "CON"]


def _new_paths(before: dict, after: dict) -> set[str]:
    return {p for p in after if p not in before}


def _assert_only_under(tmp_path, before, allowed_prefix: str) -> None:
    new = _new_paths(before, tree(tmp_path))
    ancestors = {allowed_prefix.rsplit("/", k)[0] for k in range(allowed_prefix.count("/") + 1)}
    outside = sorted(p for p in new if not p.startswith(allowed_prefix + "/")
                     and p not in ancestors and p != allowed_prefix)
    assert not outside, f"written outside the output folder: {outside}"


def test_tensor_names_cannot_escape_the_output_folder(capfd, tmp_path):
    """Tensor names are data, never paths: a compile of hostile names writes only into out/."""
    model = tmp_path / "m"
    model.mkdir()
    rng = np.random.default_rng(0)
    write_safetensors(model / "model.safetensors",
                      {name: rng.standard_normal((32, 32)).astype(np.float32)
                       for name in EVIL_NAMES}, "F32")
    passwd = open("/etc/passwd", "rb").read() if os.path.exists("/etc/passwd") else None
    before = tree(tmp_path)
    code, lines = run_cli(capfd, ["compile", model, "-o", tmp_path / "w" / "out", "--quiet"])
    assert code == 0, lines
    _assert_only_under(tmp_path, before, "w/out")
    assert not (tmp_path / "w" / "out" / "etc").exists()
    if passwd is not None:
        assert open("/etc/passwd", "rb").read() == passwd


def test_base_array_name_with_slashes_stays_inside(capfd, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(_sub("name: sky130-demo", "name: ../../../evil/base"))
    model = small_llama(tmp_path / "m")
    before = tree(tmp_path)
    code, lines = run_cli(capfd, ["compile", model, "--base", base,
                                  "-o", tmp_path / "a" / "b" / "out", "--quiet"])
    assert code == 1 and lines[0].endswith("name: must be 1-64 letters, digits, '.', '_' or '-' "
                                           "(starting with a letter or digit), not "
                                           "'../../../evil/base'"), lines
    _assert_only_under(tmp_path, before, "a/b/out")


def test_pdk_name_with_slashes_stays_inside(capfd, tmp_path):
    base = evil_pdk_files(tmp_path / "cfg", "../../../EVIL")
    model = small_llama(tmp_path / "m")
    before = tree(tmp_path)
    code, lines = run_cli(capfd, ["compile", model, "--base", base,
                                  "-o", tmp_path / "a" / "b" / "out", "--quiet"])
    _assert_only_under(tmp_path, before, "a/b/out")
    assert code != 0  # and a name that is not a plain identifier is refused


def test_python_yaml_tags_run_no_code(capfd, tmp_path, monkeypatch):
    """Every way PyYAML's unsafe loaders run code is refused by the safe loader."""
    monkeypatch.chdir(tmp_path)
    model = small_llama(tmp_path / "m")
    tags = ["!!python/object/apply:os.system ['touch PWNED']",
            "!!python/object/new:os.system ['touch PWNED']",
            "!!python/name:os.system",
            "!!python/module:os",
            "!!python/object/apply:subprocess.check_output [['touch', 'PWNED']]"]
    for tag in tags:
        base = tmp_path / "base.yaml"
        base.write_text(_sub("description: SKY130", f"description: {tag}\nx: SKY130"))
        code, lines = run_cli(capfd, ["compile", model, "--base", base, "-o", tmp_path / "out",
                                      "--quiet"])
        assert code == 1 and lines[0].startswith("error: ") and "constructor" in lines[0], lines
        assert not (tmp_path / "PWNED").exists()
        assert not (tmp_path / "out").exists()


def test_nothing_is_fetched_from_the_network(capfd, tmp_path, monkeypatch):
    """compile, inspect, estimate and configs run with every socket call refused."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network access attempted")

    for name in ("create_connection", "getaddrinfo", "gethostbyname"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    model = small_llama(tmp_path / "m")
    for argv in (["compile", model, "-o", tmp_path / "out", "--quiet"],
                 ["inspect", model], ["estimate", model], ["configs", "list"],
                 ["estimate", "--preset", "llama-3.1-8b"]):
        code, lines = run_cli(capfd, argv)
        assert code == 0, (argv, lines)
    assert calls == []
