"""Hostile but small inputs that would cost gigabytes or hang, and bad numeric options.

Each case: exit 1, one ``error:`` line naming the file or key, fast, bounded memory. Memory is
measured with tracemalloc around the call, and the address space is capped while it runs
(``_memory_cap``), so that a regression fails with "out of memory" instead of taking the
machine's memory; a FIFO that would block forever is cut by an alarm (``_deadline``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from corpus.bad_inputs import BASE_YAML, assert_one_error, run_cli, small_llama

from taalasc.config.base_array import MAX_DIES
from taalasc.dieworker import parse_index_set, select_layers
from taalasc.errors import MaskError, ModelError, QuantizationError
from taalasc.extract.extract import read_manifest
from taalasc.lora.peft import load_lora, write_peft_adapter
from taalasc.lora.targets import regex_problem, select_targets, linear_modules
from taalasc.model import open_checkpoint
from taalasc.model.synth import write_safetensors
from taalasc.quant.calib import calibration_tokens, token_file_sequences

MB = 1 << 20


@contextlib.contextmanager
def _memory_cap(extra_bytes: int = 1 << 30):
    """Address space limited to its current size + ``extra_bytes`` while the block runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = now + extra_bytes if hard == resource.RLIM_INFINITY else min(now + extra_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def _deadline(seconds: int):
    def fire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bounded(capfd, argv, peak_mb: float = 30, seconds: float = 5):
    """run_cli under the caps; returns (code, lines) after checking peak memory and time."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with _memory_cap(), _deadline(int(seconds) + 10):
            code, lines = run_cli(capfd, argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - start
    assert peak < peak_mb * MB, f"peak {peak / MB:.1f} MB: {lines}"
    assert elapsed < seconds, f"{elapsed:.1f} s: {lines}"
    return code, lines


def _assert_option_refused(code, lines, option, reason):
    """A bad option value: exit 1, no traceback, the last line names the option and why.
    (The usage lines click prints before it are the CLI's, taalasc/cli.py.)"""
    text = "\n".join(lines)
    assert code == 1 and "Traceback" not in text and "internal error" not in text, text
    assert re.search(rf"[Ee]rror: .*{re.escape(option)}'?: {reason}", lines[-1]), text


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return small_llama(tmp_path_factory.mktemp("limits") / "m")


def _copy(model: Path, folder: Path, **config_changes) -> Path:
    shutil.copytree(model, folder)
    if config_changes:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_changes)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


# --- 1. sizes claimed by a config.json ---------------------------------------------------------

@pytest.mark.parametrize("layers", [10**9, 10**18])
def test_huge_layer_count_in_config_with_weights(capfd, tmp_path, llama, layers):
    model = _copy(llama, tmp_path / "m", num_hidden_layers=layers)
    assert (model / "config.json").stat().st_size < 1000
    for argv in (["inspect", model], ["estimate", model]):
        code, lines = _bounded(capfd, argv)
        assert_one_error(code, lines, rf"m/config\.json: num_hidden_layers must be at most "
                                      rf"1,024 \(far beyond any published model\), not "
                                      rf"{layers:,}$")


@pytest.mark.parametrize("key, value", [("num_hidden_layers", 10**9),
                                        ("hidden_size", 10**12), ("vocab_size", 2**40)])
def test_huge_sizes_in_a_config_alone(capfd, tmp_path, llama, key, value):
    config = json.loads((llama / "config.json").read_text())
    config[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, lines = _bounded(capfd, ["estimate", "--config", path])
    assert_one_error(code, lines, rf"config\.json: {key} must be at most [\d,]+ \(far beyond "
                                  rf"any published model\), not {value:,}$")


def test_parameter_count_cap_is_checked_before_listing_blocks(capfd, tmp_path, llama):
    config = json.loads((llama / "config.json").read_text())
    config.update(num_hidden_layers=1024, hidden_size=1 << 16, intermediate_size=1 << 20,
                  num_attention_heads=64, num_key_value_heads=64)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, lines = _bounded(capfd, ["estimate", "--config", path])
    assert_one_error(code, lines, r"config\.json: the config describes [\d,]+ parameters; at "
                                  r"most 10,000,000,000,000 .* are estimated$")


def test_largest_published_shapes_still_estimate(capfd):
    code, lines = _bounded(capfd, ["estimate", "--preset", "llama-3.1-405b"], peak_mb=200)
    assert code == 0, lines


# --- 2. --die / --layers ranges ------------------------------------------------------------------

def test_index_ranges_are_checked_before_expansion(llama):
    with _memory_cap():
        start = time.monotonic()
        with pytest.raises(ModelError, match=rf"^--die: 999999999 must be below {MAX_DIES:,} "):
            parse_index_set("0-999999999", "--die")
        with pytest.raises(ModelError, match=r"^--layers: layer 1 must be one of the model's "
                                             r"blocks \(0-0\), not 1$"):
            select_layers(open_checkpoint(llama), "embed,0-999999999")
        with pytest.raises(ModelError, match=r"^--layers: layer 5 must be one of the model's "
                                             r"blocks \(0-0\), not 5$"):
            select_layers(open_checkpoint(llama), "5-999999999999999999999")
        assert time.monotonic() - start < 1
    assert parse_index_set("0-2,5", "--die", count=6) == (0, 1, 2, 5)


@pytest.mark.parametrize("option, pattern", [
    ("--die", rf"--die: 999999999 must be below {MAX_DIES:,} \(indices run from 0 to "),
    ("--layers", r"--layers: layer 1 must be one of the model's blocks \(0-0\), not 1$"),
])
def test_compile_refuses_huge_ranges(capfd, tmp_path, llama, option, pattern):
    out = tmp_path / "out"
    code, lines = _bounded(capfd, ["compile", llama, "-o", out, "--quiet", option,
                                   "0-999999999"])
    assert_one_error(code, lines, pattern)
    assert not out.exists()


# --- 3. base arrays that validate but describe what no stepper prints -----------------------------

def _base_yaml(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(BASE_YAML)
    edit(doc)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _two_metre_die(d):
    d["die"]["width_nm"] = 2_000_000_000


def _square_30mm(d):
    d["die"].update(width_nm=30_000_000, height_nm=30_000_000)


def _million_tiles(d):  # tiny tiles on a 26 x 26 mm die: 840,000 tiles that fit
    d["die"].update(width_nm=26_000_000, height_nm=26_000_000)
    d["tile_grid"].update(columns=1200, rows=700, pitch_x_nm=20_000, pitch_y_nm=35_000)
    d["weight_tile"].update(sites_x=8, sites_y=4, input_lanes=4)


def _huge_tile(d):
    d["die"].update(width_nm=20_000_000, height_nm=20_000_000)
    d["tile_grid"].update(columns=1, rows=1, pitch_x_nm=7_000_000, pitch_y_nm=14_000_000)
    d["weight_tile"].update(sites_x=4096, sites_y=2048)


def _many_dies(d):
    d["max_dies"] = 10**9


@pytest.mark.parametrize("edit, pattern", [
    (_two_metre_die, r"die\.width_nm: 2000000000 nm is longer than the 33000000 nm side of the "
                     r"largest exposure field \(26 x 33 mm reticle limit\)"),
    (_square_30mm, r"die: 900 mm² is larger than the 858 mm² exposure field"),
    (_million_tiles, r"tile_grid: 1200 x 700 = 840,000 tiles per die; at most 262,144"),
    (_huge_tile, r"weight_tile: 4096 x 2048 = 8,388,608 sites per tile; at most 4,194,304"),
    (_many_dies, r"max_dies: must be ≤ 65536, not 1000000000"),
], ids=["2m-die", "30mm-square", "840k-tiles", "8M-site-tile", "1e9-dies"])
def test_base_array_beyond_what_a_stepper_prints(capfd, tmp_path, edit, pattern):
    path = _base_yaml(tmp_path, edit)
    code, lines = _bounded(capfd, ["estimate", "--preset", "llama-3.2-1b", "--base", path])
    assert_one_error(code, lines, rf"base\.yaml: (\d+ problems)?.*{pattern}")
    assert len(lines) == 1, lines  # that one problem alone


# --- 4. FIFOs, endless devices and oversized files as small inputs --------------------------------

def _special(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


WHAT_IT_IS = {"fifo": r"a FIFO \(named pipe\)", "zero": "a character device"}


def _config_json(tmp_path, llama, kind):
    model = _copy(llama, tmp_path / "m")
    _special(model / "config.json", kind)
    return ["inspect", model], r"m/config\.json: config\.json must be a regular file"


def _base(tmp_path, llama, kind):
    path = _special(tmp_path / "base.yaml", kind)
    return (["estimate", "--preset", "llama-3.2-1b", "--base", path],
            r"base\.yaml: YAML config must be a regular file")


def _pdk(tmp_path, llama, kind):
    _special(tmp_path / "pdk.yaml", kind)
    base = tmp_path / "base.yaml"
    base.write_text(BASE_YAML.replace("pdk: sky130", "pdk: ./pdk.yaml"))
    return (["estimate", "--preset", "llama-3.2-1b", "--base", base],
            r"pdk\.yaml: YAML config must be a regular file")


def _adapter_config(tmp_path, llama, kind):
    adapter = write_peft_adapter(tmp_path / "lora", open_checkpoint(llama))
    _special(adapter / "adapter_config.json", kind)
    return (["estimate", llama, "--lora", adapter],
            r"lora/adapter_config\.json: adapter config must be a regular file")


# compile hashes the calibration file into the manifest first (it names the resolved path,
# /dev/zero for the symlink); the calibration readers themselves are tested below
def _calib_text(tmp_path, llama, kind):
    text = _special(tmp_path / "calib.txt", kind)
    return (["compile", llama, "-o", tmp_path / "out", "--quiet", "--method", "gptq",
             "--calib", text], r"(calib\.txt|/dev/zero): calibration file must be a regular file")


def _calib_tokens(tmp_path, llama, kind):
    ids = _special(tmp_path / "ids.txt", kind)
    return (["compile", llama, "-o", tmp_path / "out", "--quiet", "--method", "gptq",
             "--calib-tokens", ids], r"(ids\.txt|/dev/zero): calibration file must be a "
                                     r"regular file")


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("build", [_config_json, _base, _pdk, _adapter_config, _calib_text,
                                   _calib_tokens],
                         ids=["config.json", "base-yaml", "pdk-yaml", "adapter_config",
                              "calib-text", "calib-tokens"])
def test_only_regular_files_are_read(capfd, tmp_path, llama, build, kind):
    argv, pattern = build(tmp_path, llama, kind)
    code, lines = _bounded(capfd, argv)
    assert_one_error(code, lines, rf"{pattern}, not {WHAT_IT_IS[kind]}$")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_calibration_readers_read_only_regular_files(tmp_path, llama, kind):
    ckpt = open_checkpoint(llama)
    with _deadline(10):
        for name, read, what in (("calib.txt", calibration_tokens, "calibration text"),
                                 ("ids.txt", token_file_sequences, "calibration token file")):
            path = _special(tmp_path / name, kind)
            with pytest.raises(QuantizationError, match=rf"{re.escape(name)}: {what} must be a "
                                                        rf"regular file, not {WHAT_IT_IS[kind]}$"):
                read(ckpt, path)


def test_oversized_config_json_is_refused_unread(capfd, tmp_path, llama):
    model = _copy(llama, tmp_path / "m")
    with open(model / "config.json", "r+b") as f:  # sparse: no disk is used
        f.truncate(5 * MB)
    code, lines = _bounded(capfd, ["inspect", model])
    assert_one_error(code, lines, r"config\.json: is 5,242,880 bytes, over the 4,194,304-byte "
                                  r"limit for a config\.json$")


# --- 6. JSON nested deeper than Python's parser recurses -------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_deep_json_config_is_one_line(capfd, tmp_path, llama):
    model = _copy(llama, tmp_path / "m")
    (model / "config.json").write_text(DEEP)
    code, lines = _bounded(capfd, ["inspect", model])
    assert_one_error(code, lines, r"config\.json: config\.json is nested too deeply")
    code, lines = _bounded(capfd, ["estimate", "--config", model / "config.json"])
    assert_one_error(code, lines, r"config\.json: config\.json is nested too deeply")


def test_deep_json_adapter_config_and_manifest(capfd, tmp_path, llama):
    adapter = write_peft_adapter(tmp_path / "lora", open_checkpoint(llama))
    (adapter / "adapter_config.json").write_text(DEEP)
    code, lines = _bounded(capfd, ["estimate", llama, "--lora", adapter])
    assert_one_error(code, lines, r"adapter_config\.json: adapter config is nested too deeply")
    with pytest.raises(ModelError, match=r"adapter config is nested too deeply"):
        load_lora(adapter, open_checkpoint(llama))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(DEEP)
    with pytest.raises(MaskError, match=r"manifest\.json: manifest is nested too deeply"):
        read_manifest(tmp_path / "out")


# --- 5. regexes in a LoRA adapter ---------------------------------------------------------------

PEFT_PATTERNS = [r".*\.(q_proj|v_proj)", r"model.layers.\d+.self_attn.(q|k|v)_proj",
                 r".*layers\.\d+\.self_attn\.(q_proj|v_proj)", r"^(?!.*vision).*(q_proj|v_proj)",
                 r".*\.layers\.(0|1|2|10|11)\.self_attn\.q_proj", r".*\.(self_attn|mlp)\.\w+"]
REDOS = [r"(a+)+$", r"(a|a)*$", r"(.*a){20}", r"(a*)*b", r"(a|ab)+c", r"(\w+\s?)+$",
         r"(a)\1", r".*.*.*.*x", "q" * 1001, r"(x+x+)+y", "(1|10)" * 30]


RANK_KEYS = ["q_proj", r"model.layers.0.self_attn.q_proj", r"^model.decoder.layers.0.k_proj",
             r".*\.(q_proj|v_proj)", r"layers\.\d+\.mlp\.down_proj"]


@pytest.mark.parametrize("pattern", PEFT_PATTERNS)
def test_peft_patterns_pass_the_guard(pattern):
    assert regex_problem(pattern) is None


@pytest.mark.parametrize("key", RANK_KEYS)
def test_rank_pattern_keys_pass_the_guard(key):
    assert regex_problem(rf"(.*\.)?({key})$") is None  # as PEFT wraps a rank_pattern key


@pytest.mark.parametrize("pattern", REDOS)
def test_backtracking_patterns_are_refused_fast(pattern):
    start = time.monotonic()
    assert regex_problem(pattern)
    assert time.monotonic() - start < 0.1


def test_what_the_guard_lets_through_matches_quickly():
    """Three free repeats, the most allowed, on a few hundred names of a realistic length."""
    names = [f"base_model.model.model.layers.{i}.self_attn.q_proj_{'x' * 40}" for i in range(300)]
    assert regex_problem(r".*.*.*X") is None
    start = time.monotonic()
    assert not select_targets({n: n + ".weight" for n in names}, r".*.*.*X")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("key, value", [
    ("target_modules", r"(a+)+$"), ("exclude_modules", r"(.*a){20}"),
    ("rank_pattern", {r"(a|a)*": 4}), ("alpha_pattern", {"q" * 1001: 4.0})])
def test_adapter_with_a_backtracking_regex_is_refused(tmp_path, llama, key, value):
    ckpt = open_checkpoint(llama)
    adapter = write_peft_adapter(tmp_path / "lora", ckpt, config_overrides={key: value})
    start = time.monotonic()
    with pytest.raises(ModelError, match=rf"adapter_config\.json: {key} (key )?.* (could take "
                                         r"too long in Python's backtracking regex engine: |is "
                                         r"1,001 characters long; at most 1,000$)"):
        load_lora(adapter, ckpt)
    assert time.monotonic() - start < 1


def test_adapter_with_a_peft_regex_loads(tmp_path, llama):
    ckpt = open_checkpoint(llama)
    adapter = write_peft_adapter(tmp_path / "lora", ckpt,
                                 targets=r"model.layers.\d+.self_attn.(q|v)_proj")
    lora = load_lora(adapter, ckpt)
    assert sorted(lora.pairs) == ["model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.0.self_attn.v_proj.weight"]
    shapes = {n: t.shape for n, t in ckpt.tensors.items()}
    assert select_targets(linear_modules(shapes), r".*\.(q_proj|v_proj)") == set(lora.pairs)


# --- 7. garbage values, shapes, names and options -------------------------------------------------

@pytest.mark.parametrize("rope, pattern", [
    ("linear", r"rope_scaling must be an object or null, not 'linear'"),
    ([1, 2], r"rope_scaling must be an object or null, not \[1, 2\]"),
    ({"rope_type": 5}, r"rope_scaling\.rope_type must be one of default, linear, llama3, not 5"),
    ({"factor": "x"}, r"rope_scaling must name its rope_type \(one of default, linear, llama3\) "
                      r"when it sets factor"),
    ({"rope_type": "linear", "factor": "x"},
     r"rope_scaling\.factor must be a positive number for rope_type 'linear', not 'x'"),
])
def test_garbage_rope_scaling(capfd, tmp_path, llama, rope, pattern):
    model = _copy(llama, tmp_path / "m", rope_scaling=rope)
    with pytest.raises(ModelError, match=rf"config\.json: .*{pattern}"):
        open_checkpoint(model)
    code, lines = run_cli(capfd, ["compile", model, "-o", tmp_path / "out", "--quiet"])
    assert_one_error(code, lines, pattern)


def test_vectors_only_checkpoint_is_refused_up_front(capfd, tmp_path):
    path = tmp_path / "vec.safetensors"
    write_safetensors(path, {"a.weight": np.ones(64, np.float32),
                             "b.bias": np.ones(32, np.float32)}, "F32")
    pattern = (r"vec\.safetensors: no 2-D weight tensors \(a model's matrices\) to quantize; "
               r"only 2 other tensor\(s\): a\.weight \[64\], b\.bias \[32\]$")
    code, lines = _bounded(capfd, ["compile", path, "-o", tmp_path / "out", "--quiet"])
    assert_one_error(code, lines, pattern)
    assert not (tmp_path / "out").exists()
    code, lines = _bounded(capfd, ["estimate", path])
    assert_one_error(code, lines, pattern)
    code, lines = run_cli(capfd, ["inspect", path])  # inspect still shows what the file holds
    assert code == 0, lines


def test_folder_name_that_is_not_utf8(capfd, tmp_path, llama):
    folder = tmp_path / os.fsdecode(b"m\xffodel")
    try:
        shutil.copytree(llama, folder)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    for argv in (["inspect", folder], ["inspect", "--json", folder],
                 ["estimate", "--json", folder],
                 ["compile", folder, "-o", tmp_path / "out", "--quiet", "--format", "gds"]):
        code, lines = run_cli(capfd, argv)
        assert code == 0, (argv, lines)
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["meta"]["model"] == "m\\xffodel"


@pytest.mark.parametrize("argv, option, reason", [
    (["estimate", "--preset", "llama-3.2-1b", "--auto", "--budget", "inf"], "--budget",
     "must be a finite number, not 'inf'"),
    (["estimate", "--preset", "llama-3.2-1b", "--auto", "--budget", "nan"], "--budget",
     "must be a finite number, not 'nan'"),
    (["estimate", "--preset", "llama-3.2-1b", "--auto", "--budget", "-1"], "--budget",
     "must be 2 <= x <= 8, not -1"),
    (["estimate", "--preset", "llama-3.2-1b", "--group-size", "0"], "--group-size",
     "must be a positive integer or 'per-channel', not 0"),
    (["estimate", "--preset", "llama-3.2-1b", "--group-size", "-32"], "--group-size",
     "must be a positive integer or 'per-channel', not -32"),
    (["estimate", "--preset", "llama-3.2-1b", "--utilisation", "nan"], "--utilisation",
     "must be a finite number, not 'nan'"),
    (["faults", "out", "model", "--seed", "-1"], "--seed", r"-1 is not in the range x>=0"),
    (["verify", "out", "model", "--min-top1", "nan"], "--min-top1",
     "must be a finite number, not 'nan'"),
    (["verify", "out", "model", "--min-cosine", "nan"], "--min-cosine",
     "must be a finite number, not 'nan'"),
    (["verify", "out", "model", "--max-kl", "nan"], "--max-kl",
     "must be a finite number, not 'nan'"),
    (["verify", "out", "model", "--max-kl", "-0.5"], "--max-kl", "must be 0 <= x, not -0.5"),
    (["quality", "model", "--budget", "nan"], "--budget", "must be a finite number, not 'nan'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_numeric_options(capfd, argv, option, reason):
    code, lines = run_cli(capfd, argv)
    _assert_option_refused(code, lines, option, reason)
