"""Bit policies: rules, the automatic mixed-precision budget, streaming, the report and CLI."""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from taalasc.commands.quantize import quantize as quantize_cmd
from taalasc.errors import QuantizationError
from taalasc.model import open_checkpoint
from taalasc.model.synth import llama_config, write_llama
from taalasc.quant import (AutoMixed, BitPolicy, BitRule, QuantSpec, assign_bits, parse_rule,
                           plan_bits, quantize_model, quantize_report, quantize_tensor)


def toy(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = {"embed.weight": (32, 16), "layers.0.q_proj.weight": (16, 16),
             "layers.0.v_proj.weight": (8, 16), "layers.0.norm.weight": (16,),
             "layers.0.down_proj.weight": (16, 32), "lm_head.weight": (32, 16)}
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in names.items()}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama")
    write_llama(out, llama_config(hidden=64, layers=2, intermediate=128, vocab=128))
    return open_checkpoint(out)


# --- rules -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, rule", [("*.v_proj.*=6", BitRule("*.v_proj.*", 6)),
                                        ("  lm_head.weight = 8 ", BitRule("lm_head.weight", 8)),
                                        ("*=2", BitRule("*", 2))])
def test_parse_rule(text, rule):
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text", ["*.v_proj.*", "*=x", "=4", "a=b=3", "", "*=6.5", "*=-3"])
def test_parse_rule_rejects_malformed_text(text):
    with pytest.raises(QuantizationError, match=r"^rule must look like GLOB=BITS .*, not "):
        parse_rule(text)


@pytest.mark.parametrize("text", ["*=1", "*=9"])
def test_parse_rule_rejects_bits_out_of_range(text):
    with pytest.raises(QuantizationError, match=r"^bits of rule '\*' must be an integer from 2"):
        parse_rule(text)


def test_last_matching_rule_wins():
    t = toy()
    specs = assign_bits(t, BitPolicy(default_bits=4, group_size=8,
                                     rules=(parse_rule("*=5"), parse_rule("*.v_proj.*=6"))))
    assert specs["layers.0.v_proj.weight"].bits == 6
    assert specs["layers.0.q_proj.weight"].bits == 5
    specs = assign_bits(t, BitPolicy(default_bits=4, group_size=8,
                                     rules=(parse_rule("*.v_proj.*=6"), parse_rule("*=5"))))
    assert {s.bits for s in specs.values()} == {5}
    assert "layers.0.norm.weight" not in specs  # 1-D: an fp16 constant, not quantized
    assert list(specs) == [n for n, a in t.items() if a.ndim == 2]  # input order kept


def test_rule_that_matches_nothing_suggests_a_name():
    with pytest.raises(QuantizationError,
                       match=r"^rule '\*\.vproj\.\*=6' matches no tensor; "
                             r"did you mean '\*\.v_proj\.\*'\?$"):
        assign_bits(toy(), BitPolicy(group_size=8, rules=(parse_rule("*.vproj.*=6"),)))


def test_rule_that_matches_only_norms_is_an_error():
    with pytest.raises(QuantizationError, match=r"^rule '\*norm\*=8' matches only unquantized"):
        assign_bits(toy(), BitPolicy(group_size=8, rules=(parse_rule("*norm*=8"),)))


def test_group_size_resolution_and_errors():
    specs = assign_bits(toy(), BitPolicy(group_size=128))  # rows of 16/32: one group per row
    assert specs["embed.weight"] == QuantSpec(4, 16)
    assert specs["layers.0.down_proj.weight"] == QuantSpec(4, 32)
    # 12 divides neither 16 nor 32: the largest divisor below it (8) is taken, for every tensor
    specs = assign_bits(toy(), BitPolicy(group_size=12))
    assert specs["embed.weight"] == QuantSpec(4, 8)
    assert specs["layers.0.down_proj.weight"] == QuantSpec(4, 8)


def test_more_than_two_dimensions_is_an_error():
    t = toy()
    t["conv.weight"] = np.ones((2, 2, 3), np.float32)
    with pytest.raises(QuantizationError, match=r"^tensor 'conv.weight' has shape \(2, 2, 3\)"):
        assign_bits(t, BitPolicy(group_size=None))


# --- automatic mixed precision ------------------------------------------------------------

@pytest.mark.parametrize("budget", [3.0, 3.1, 3.5, 4.0, 4.6, 6.0, 8.0])
def test_auto_respects_the_budget(budget):
    t = toy()
    plan = plan_bits(t, BitPolicy(group_size=8, auto=AutoMixed(3, 6, budget)))
    assert plan.bits_per_weight <= budget
    bits = {tp.spec.bits for tp in plan.tensors}
    assert bits <= {3, 6}
    if budget >= 6:
        assert bits == {6}
    # greedy fill: no low tensor could still be raised within the budget
    total = sum(tp.numel for tp in plan.tensors)
    slack = budget * total - sum(tp.numel * tp.spec.bits for tp in plan.tensors)
    assert all(tp.numel * 3 > slack for tp in plan.tensors if tp.spec.bits == 3)


def test_auto_gives_high_bits_to_the_heavy_tailed_tensor():
    # Same size, so the same cost; a Student-t(2) tensor loses more of its signal at 3 bits
    # than a Gaussian one (most values sit far below the group maximum) and gains more from
    # 6 bits. Under our NSR metric a *sparse huge-outlier* tensor is NOT the most sensitive:
    # the outliers carry most of the energy and are represented exactly.
    rng = np.random.default_rng(5)
    gauss = rng.standard_normal((64, 128)).astype(np.float32)
    heavy = rng.standard_t(2, (64, 128)).astype(np.float32)
    spiky = rng.standard_normal((64, 128)).astype(np.float32)
    spiky[rng.random(spiky.shape) < 0.01] *= 50
    t = {"a.gauss": gauss, "b.spiky": spiky, "c.heavy": heavy}
    plan = plan_bits(t, BitPolicy(group_size=128, auto=AutoMixed(3, 6, 4.0)))
    assert [tp.name for tp in plan.tensors if tp.spec.bits == 6] == ["c.heavy"]
    sens = {tp.name: tp.sensitivity for tp in plan.tensors}
    assert sens["c.heavy"] > sens["a.gauss"] > sens["b.spiky"] > 0


def test_auto_ties_break_by_name():
    w = np.random.default_rng(2).standard_normal((16, 16)).astype(np.float32)
    t = {"z.weight": w, "a.weight": w.copy()}
    plan = plan_bits(t, BitPolicy(group_size=None, auto=AutoMixed(3, 5, 4.0)))
    assert {tp.name: tp.spec.bits for tp in plan.tensors} == {"z.weight": 3, "a.weight": 5}


def test_rules_override_auto_and_count_in_the_budget():
    t = toy()
    rule = parse_rule("lm_head.weight=2")
    plan = plan_bits(t, BitPolicy(group_size=8, rules=(rule,), auto=AutoMixed(3, 6, 3.5)))
    by = {tp.name: tp for tp in plan.tensors}
    assert by["lm_head.weight"].spec.bits == 2 and by["lm_head.weight"].reason == "rule " \
        "lm_head.weight=2"
    assert plan.bits_per_weight <= 3.5
    with pytest.raises(QuantizationError, match=r"^auto budget 3.2 bits/weight cannot be met"):
        plan_bits(t, BitPolicy(group_size=8, rules=(parse_rule("embed.*=8"),),
                               auto=AutoMixed(3, 6, 3.2)))


@pytest.mark.parametrize("kwargs, msg", [
    (dict(low_bits=3, high_bits=3), r"^auto high_bits must be greater than low_bits 3"),
    (dict(budget_bits_per_weight=2.5), r"^auto budget must be at least low_bits 3"),
    (dict(low_bits=1), r"^auto low_bits must be an integer from 2 to 8, not 1"),
])
def test_auto_validation(kwargs, msg):
    with pytest.raises(QuantizationError, match=msg):
        AutoMixed(**kwargs)


# --- streaming over a checkpoint ----------------------------------------------------------

def test_quantize_model_streams_one_tensor_at_a_time(llama):
    reads: list[str] = []

    class Counting:
        tensors = llama.tensors

        def read(self, name):
            reads.append(name)
            return llama.read(name)

    stream = quantize_model(Counting(), BitPolicy(default_bits=3, group_size=32))
    assert inspect.isgenerator(stream)
    assert reads == []  # the plan needs headers only
    first = next(stream)
    assert reads == [first.name] == ["model.embed_tokens.weight"]
    rest = list(stream)
    names = [first.name] + [q.name for q in rest]
    assert names == [n for n, ti in llama.tensors.items() if len(ti.shape) == 2]
    assert reads == names  # each tensor read exactly once, in dataflow order
    again = quantize_tensor(names[3], llama.read(names[3]), QuantSpec(3, 32))
    assert rest[2].codes.tobytes() == again.codes.tobytes()


def test_report_to_dict_is_strict_json(llama):
    policy = BitPolicy(group_size=None, auto=AutoMixed(3, 6, 3.5),
                       rules=(parse_rule("*.v_proj.*=8"),))
    report = quantize_report(llama, policy)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["quant__bits_per_weight"] <= 3.5
    assert d["quant__weights__count"] == sum(t["numel"] for t in d["tensors"])
    v = [t for t in d["tensors"] if ".v_proj." in t["name"]]
    assert v and all(t["bits"] == 8 and t["reason"] == "rule *.v_proj.*=8" for t in v)
    assert "model.norm.weight" in d["constants"]
    assert report.bits_per_weight_with_scales > report.bits_per_weight
    exact = quantize_report({"w": np.zeros((2, 2), np.float32)}, BitPolicy(group_size=None))
    assert exact.to_dict()["tensors"][0]["sqnr_db"] is None


# --- CLI ----------------------------------------------------------------------------------

def test_cli_table_and_json(llama):
    path = str(llama.path)
    res = CliRunner().invoke(quantize_cmd, [path, "--bits", "3", "--rule", "*.v_proj.*=6",
                                            "--group-size", "32"])
    assert res.exit_code == 0, res.output
    assert "model.layers.1.self_attn.v_p" in res.output
    assert "bits/weight" in res.output
    res = CliRunner().invoke(quantize_cmd, [path, "--auto", "--budget", "3.5", "--json",
                                            "--group-size", "per-channel"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["policy"]["auto"] == {"low_bits": 3, "high_bits": 6, "budget_bits_per_weight": 3.5}
    assert d["policy"]["group_size"] == "per-channel"
    assert 3.0 < d["quant__bits_per_weight"] <= 3.5


@pytest.mark.parametrize("args, msg", [
    (["--rule", "*.vproj.*=6"], r"^rule '\*\.vproj\.\*=6' matches no tensor; did you mean"),
    (["--rule", "*.v_proj.*"], r"^rule must look like GLOB=BITS"),
    (["--auto", "--budget", "2.5"], r"^auto budget must be at least low_bits 3"),
])
def test_cli_errors_are_quantization_errors(llama, args, msg):
    res = CliRunner().invoke(quantize_cmd, [str(llama.path), *args])
    assert res.exit_code == 1
    assert isinstance(res.exception, QuantizationError)
    assert re.search(msg, str(res.exception))


@pytest.mark.parametrize("args", [["--group-size", "abc"], ["--bits", "9"], ["--high-bits", "1"]])
def test_cli_usage_errors(llama, args):
    res = CliRunner().invoke(quantize_cmd, [str(llama.path), *args])
    assert res.exit_code == 2
    assert args[0] in res.output


def test_cli_auto_takes_explicit_bits_as_low_bits(llama):
    res = CliRunner().invoke(quantize_cmd, [str(llama.path), "--auto", "--bits", "4",
                                            "--budget", "4.5", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["policy"]["auto"]["low_bits"] == 4
    assert {t["bits"] for t in d["tensors"]} == {4, 6}


def test_progress_reports_both_stages(llama):
    calls: list[tuple[str, int, int]] = []
    policy = BitPolicy(group_size=32, auto=AutoMixed(3, 6, 3.5))
    quantize_report(llama, policy, lambda stage, done, total: calls.append((stage, done, total)))
    n = sum(1 for ti in llama.tensors.values() if len(ti.shape) == 2)
    assert calls[0] == ("sensitivity", 0, n) and ("sensitivity", n, n) in calls
    assert calls[-1] == ("quantize", n, n)


@pytest.mark.skipif("quantize" not in __import__("taalasc.cli").cli.COMMANDS,
                    reason="taalasc quantize not wired into COMMANDS yet")
def test_main_prints_one_line_error(llama, capsys):
    from taalasc.cli import main

    assert main(["quantize", str(llama.path), "--rule", "*.vproj.*=6"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: rule '*.vproj.*=6' matches no tensor; did you mean")
    assert main(["quantize", str(llama.path), "--json", "--group-size", "32"]) == 0
