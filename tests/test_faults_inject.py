"""Fault injection (taalasc.faults): seeded, exact bookkeeping, rate 0 is the clean chip, the
fault counts follow the binomial law, and `taalasc faults` runs on the demo and writes JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from taalasc.errors import ModelError
from taalasc.faults import FaultBench, check_rates, fault_curve, inject
from taalasc.model.synth import llama_config, write_llama


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A small compiled Llama (1 layer) and its FaultBench (extraction, reference, clean chip)."""
    from taalasc.cli import main

    root = tmp_path_factory.mktemp("faults")
    model = write_llama(root / "model", llama_config(hidden=32, layers=1, heads=2, kv_heads=1,
                                                     intermediate=64, vocab=64), dtype="F32")
    out = root / "out"
    assert main(["compile", str(model), "-o", str(out), "--format", "gds", "--quiet",
                 "--rule", "*.mlp.*=3"]) == 0
    return FaultBench(out, model, tokens=[1, 5, 9, 2, 33, 60, 7, 7])


def _arrays(extraction, bits: dict | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Every stored array as unsigned bit patterns (codes: the low ``bits[name]`` bits, the
    sites a code occupies; all 8 when not given), for independent counts."""
    out = {}
    for name, a in extraction.codes.items():
        b = bits[name]["bits"] if bits else 8
        out[(name, "codes")] = a.view(np.uint8) & np.uint8((1 << b) - 1)
    for name, a in extraction.scales.items():
        out[(name, "scales")] = a.view(np.uint16)
    for name, a in extraction.vectors.items():
        out[(name, "vector")] = a.view(np.uint16)
    return out


def _changed_bits(before, after, bits: dict | None = None) -> dict[tuple[str, str], int]:
    a, b = _arrays(before, bits), _arrays(after, bits)
    counts = {}
    for key in a:
        diff = np.bitwise_xor(a[key], b[key])
        n = sum(bin(int(v)).count("1") for v in diff.reshape(-1) if v)
        if n:
            counts[key] = n
    return counts


def test_seeded_determinism(bench):
    rates = {"flip": 1e-3, "open": 1e-3, "short": 1e-3}
    a, log_a = bench.inject(rates, 7)
    b, log_b = bench.inject(rates, 7)
    c, log_c = bench.inject(rates, 8)
    assert log_a.to_dict() == log_b.to_dict()
    for key, arr in _arrays(a).items():
        np.testing.assert_array_equal(arr, _arrays(b)[key])
    assert log_a.faults > 0
    assert _changed_bits(a, c) != {}  # another seed, other faults


def test_rate_zero_is_the_fault_free_chip(bench):
    faulty, log = bench.inject({"flip": 0.0, "open": 0.0, "short": 0.0}, 0)
    assert log.faults == 0 and log.bits_changed == 0
    assert _changed_bits(bench.extraction, faulty) == {}
    figures = bench.measure(faulty)
    assert figures == bench.clean_figures
    assert figures["kl_vs_chip"] == 0.0 and figures["top1_vs_chip"] == 1.0
    rows = fault_curve(None, None, [0.0], trials=1, bench=bench)
    assert rows[0]["kl_vs_chip_worst"] == 0.0 and rows[0]["faults_mean"] == 0


def test_injection_leaves_its_input_alone(bench):
    before = {k: v.copy() for k, v in _arrays(bench.extraction).items()}
    bench.inject({"flip": 0.01, "short": 0.01}, 3)
    for key, arr in _arrays(bench.extraction).items():
        np.testing.assert_array_equal(arr, before[key])


@pytest.mark.parametrize("kinds", [("flip",), ("open",), ("short",), ("flip", "open", "short")])
def test_changed_bits_match_an_independent_count(bench, kinds):
    faulty, log = bench.inject({k: 0.002 for k in kinds}, 11)
    got = {(t, s): n for t, streams in log.changed_bits.items() for s, n in streams.items()}
    assert got == _changed_bits(bench.extraction, faulty, bench.quantization)
    if kinds == ("flip",):  # a flip always changes exactly its bit
        assert log.bits_changed == log.faults == log.counts["flip"] > 0
    if kinds == ("open",):  # an open only clears a 1; never more bits than opens
        assert 0 < log.bits_changed <= log.counts["open"]


def test_counts_follow_the_binomial_law(bench):
    rates = {"flip": 0.02, "open": 0.01, "short": 0.005}
    _, log = bench.inject(rates, 5, short_model="site")
    n = log.sites
    assert n == bench.placement.sites_used
    for kind, p in rates.items():
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        assert abs(log.counts[kind] - mean) < 5 * sd, (kind, log.counts[kind], mean)
    assert sum(sum(v.values()) for v in log.per_tensor.values()) == log.faults


def test_flip_exact_values(bench):
    """One flip of a scale's sign bit negates exactly that scale; one flip of a 3-bit code's
    sign bit moves it by 4 and wraps it into [-4, 3]."""
    name = "model.layers.0.mlp.up_proj.weight"
    faulty, log = bench.inject({"flip": 1.0}, 1, count=1, bit=15,
                               only=lambda s: s.tensor == name and s.kind == "scales")
    assert log.counts == {"flip": 1, "open": 0, "short": 0}
    before, after = bench.extraction.scales[name], faulty.scales[name]
    differ = np.argwhere(before.view(np.uint16) != after.view(np.uint16))
    assert len(differ) == 1
    i = tuple(differ[0])
    assert after[i] == -before[i]
    faulty, _ = bench.inject({"flip": 1.0}, 2, count=5, bit=-1,
                             only=lambda s: s.tensor == name and s.kind == "codes")
    old = bench.extraction.codes[name].astype(int)
    new = faulty.codes[name].astype(int)
    moved = np.argwhere(old != new)
    assert len(moved) == 5
    for i in map(tuple, moved):
        assert new[i] == (old[i] + 4 if old[i] < 0 else old[i] - 4)
        assert -4 <= new[i] <= 3


def test_row_short_clears_its_site_row(bench):
    name = "model.layers.0.self_attn.q_proj.weight"
    only = lambda s: s.tensor == name and s.kind == "codes"  # noqa: E731
    site, log_site = bench.inject({"short": 1.0}, 4, count=1, only=only, short_model="site")
    row, log_row = bench.inject({"short": 1.0}, 4, count=1, only=only, short_model="row")
    assert log_site.counts["short"] == log_row.counts["short"] == 1
    assert log_row.bits_changed >= log_site.bits_changed
    # 4-bit codes, 32 sites per row: the shorted row is 8 elements that all read 0
    changed = np.argwhere(row.codes[name] != bench.extraction.codes[name])
    assert 0 < len(changed) <= 8
    assert all(row.codes[name][tuple(i)] == 0 for i in changed)


def test_exponent_flips_of_a_norm_lose_every_position(bench):
    """Bit 14 of fp16 1.0 is the exponent MSB: flipped, 1.0 reads inf, the final norm's output
    is not finite and every position is lost (top-1 0, KL infinite, not a crash)."""
    name = "model.norm.weight"
    n = bench.extraction.vectors[name].size
    faulty, log = bench.inject({"flip": 1.0}, 0, count=n, bit=14,
                               only=lambda s: s.tensor == name)
    assert log.counts["flip"] == n
    assert np.isinf(faulty.vectors[name]).any()
    figures = bench.measure(faulty)
    assert figures["nonfinite_positions"] == len(bench.tokens)
    assert figures["top1_vs_chip"] == 0.0 and figures["kl_vs_chip"] == math.inf


def test_bad_rates_are_refused():
    with pytest.raises(ModelError, match=r"^fault kind must be one of flip, open, short, not 'bridge'$"):
        check_rates({"bridge": 0.1})
    with pytest.raises(ModelError, match=r"^fault rate of 'flip' must be a number in \[0, 1\]"):
        check_rates({"flip": -1e-3})
    with pytest.raises(ModelError, match=r"^fault rates must sum to at most 1"):
        check_rates({"flip": 0.6, "open": 0.6})


def test_cli_runs_on_the_demo_and_writes_json(tmp_path):
    from taalasc.cli import main
    from taalasc.commands.faults import faults_cmd

    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    masks, model = tmp_path / "demo" / "masks", tmp_path / "demo" / "model"
    out, md = tmp_path / "f.json", tmp_path / "f.md"
    args = [str(masks), str(model), "--rate", "1e-5", "--rate", "1e-3", "--trials", "1",
            "--fragile", "3", "--min-faults", "2", "--json", str(out), "--markdown", str(md)]
    result = CliRunner().invoke(faults_cmd, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["rate"] for r in data["curve"]] == [1e-5, 1e-3]
    assert data["curve"][1]["faults_mean"] > data["curve"][0]["faults_mean"]
    assert data["clean"]["kl_vs_chip"] == 0.0
    assert len(data["fragility"]["streams"]) > 3
    assert {r["stream"] for r in data["fragility"]["by_kind"]} == {"codes", "scales", "vector"}
    assert "most fragile" in result.output and "| rate/site |" in md.read_text()
    bad = CliRunner().invoke(faults_cmd, [str(masks), str(model), "--rate", "2"])
    assert bad.exit_code == 1 and "must be a number in [0, 1]" in str(bad.exception)
    bad = CliRunner().invoke(faults_cmd, [str(tmp_path), str(model)])
    assert bad.exit_code == 1 and "not a taalasc compile folder" in str(bad.exception)
