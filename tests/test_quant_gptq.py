"""GPTQ (error-compensating rounding), calibration data and Hessians, calibrated policies."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from realmodels import minilm_dir
from taalasc.errors import QuantizationError
from taalasc.model import open_checkpoint
from taalasc.model.synth import bert_config, llama_config, write_bert, write_llama
from taalasc.quant import (AutoMixed, BitPolicy, QuantSpec, plan_bits, quantize_model,
                           quantize_tensor)
from taalasc.quant.calib import (calibration_tokens, collect_hessians, text_units,
                                 token_file_sequences)
from taalasc.quant.gptq import gptq_quantize, inverse_hessian_factor, output_error
from taalasc.quant.quantize import (codes_from_scales, fp16_scale_min_asymmetric,
                                    fp16_scales_symmetric)
from taalasc.sim.float_ref import CheckpointSource, FloatOps
from taalasc.sim.graph import run_graph


def seeded(out: int = 48, inp: int = 128, tokens: int = 1500, seed: int = 0):
    """Weights and the Hessian of correlated, unevenly scaled inputs (like real activations)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out, inp)) * 0.05).astype(np.float32)
    mix = rng.standard_normal((inp, inp)) * 0.3 + np.eye(inp)
    x = rng.standard_normal((tokens, inp)) @ mix * np.exp(rng.standard_normal(inp))
    return w, 2.0 / tokens * x.T @ x


def unblocked_gptq(w, h, spec: QuantSpec, damp: float):
    """The textbook GPTQ loop: every column's error updates all later columns at once."""
    u = inverse_hessian_factor("w", h, damp)
    w = np.array(w, dtype=np.float64)
    bits, gs = spec.bits, spec.group_size
    off = (1 << (bits - 1)) if spec.asymmetric else 0
    codes = np.zeros(w.shape, dtype=np.int8)
    for j in range(w.shape[1]):
        if j % gs == 0:
            v = w[:, j:j + gs]
            if spec.asymmetric:
                s, m = fp16_scale_min_asymmetric(v.max(1), v.min(1), bits)
            else:
                s, m = fp16_scales_symmetric(v.max(1), v.min(1), bits), None
        c = codes_from_scales(w[:, j, None, None], s[:, None],
                              None if m is None else m[:, None], bits)[:, 0, 0]
        q = (c + off) * s.astype(np.float64) + (0 if m is None else m.astype(np.float64))
        codes[:, j] = c
        w[:, j + 1:] -= np.outer((w[:, j] - q) / u[j, j], u[j, j + 1:])
    return codes


# --- the algorithm ---------------------------------------------------------------------------

@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("bits, gs", [(4, 32), (3, 128), (2, None), (8, 16)])
def test_identity_hessian_gives_exactly_round_to_nearest(bits, gs, asym):
    w, _ = seeded()
    spec = QuantSpec(bits, gs, asym)
    rtn = quantize_tensor("w", w, spec)
    gq = gptq_quantize("w", w, np.eye(w.shape[1]), spec)
    np.testing.assert_array_equal(gq.codes, rtn.codes)
    np.testing.assert_array_equal(gq.scales, rtn.scales)
    if asym:
        np.testing.assert_array_equal(gq.mins, rtn.mins)
    assert gq.sqnr_db == pytest.approx(rtn.sqnr_db, abs=1e-9)


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("bits, gs", [(4, 32), (3, 128), (3, None)])
def test_gptq_reduces_the_output_error(bits, gs, asym):
    w, h = seeded()
    spec = QuantSpec(bits, gs, asym)
    rtn = output_error(w, quantize_tensor("w", w, spec), h)
    gq = output_error(w, gptq_quantize("w", w, h, spec), h)
    assert gq < 0.75 * rtn


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("gs, block", [(16, 7), (48, 32), (64, 128), (None, 40)])
def test_lazy_blocks_equal_the_unblocked_algorithm(gs, block, asym):
    w, h = seeded(out=24, inp=192, seed=3)
    spec = QuantSpec(3, gs if gs else 192, asym)
    gq = gptq_quantize("w", w, h, spec, damp=0.01, block=block)
    np.testing.assert_array_equal(gq.codes, unblocked_gptq(w, h, spec, 0.01))


@pytest.mark.parametrize("asym", [False, True])
def test_act_order_keeps_static_groups_and_helps(asym):
    w, h = seeded(seed=11)
    spec = QuantSpec(3, 32, asym)
    rtn = quantize_tensor("w", w, spec)
    ident = gptq_quantize("w", w, np.eye(w.shape[1]), spec, act_order=True)
    np.testing.assert_array_equal(ident.codes, rtn.codes)   # ties keep input order
    ordered = gptq_quantize("w", w, h, spec, act_order=True)
    np.testing.assert_array_equal(ordered.scales, rtn.scales)   # grids of the original weights
    assert output_error(w, ordered, h) < 0.75 * output_error(w, rtn, h)


@pytest.mark.parametrize("asym", [False, True])
def test_codes_in_range_and_bytes_deterministic(asym):
    w, h = seeded(seed=5)
    for bits in (2, 3, 6):
        a = gptq_quantize("w", w, h, QuantSpec(bits, 32, asym))
        b = gptq_quantize("w", w.copy(), h.copy(), QuantSpec(bits, 32, asym))
        assert a.codes.min() >= -2 ** (bits - 1) and a.codes.max() <= 2 ** (bits - 1) - 1
        assert a.codes.tobytes() == b.codes.tobytes()
        assert a.scales.tobytes() == b.scales.tobytes()
        assert (a.mins is None) == (not asym)
        if asym:
            assert a.mins.tobytes() == b.mins.tobytes() and (a.scales >= 0).all()
        assert np.isfinite(a.dequantize()).all()


def test_dead_inputs_keep_round_to_nearest_codes():
    w, h = seeded(seed=7)
    h[:, 5] = h[5, :] = 0.0       # input 5 never saw a non-zero activation
    qt = gptq_quantize("w", w, h, QuantSpec(4, None))
    again = codes_from_scales(w[:, 5, None, None].astype(np.float64), qt.scales,
                              None, 4)[:, 0, 0]
    np.testing.assert_array_equal(qt.codes[:, 5], again)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(hessian=np.eye(3)), r"^tensor 'w': Hessian must be \[128, 128\] for 128 inputs, "
                              r"not \[3, 3\]$"),
    (dict(hessian=np.full((128, 128), np.nan)), r"^tensor 'w': its calibration Hessian is not "
                                                r"finite"),
    (dict(damp=0.0), r"^GPTQ damping must be a number in \(0, 1\], not 0\.0$"),
    (dict(block=0), r"^GPTQ block must be a positive integer, not 0$"),
])
def test_gptq_argument_errors(kwargs, msg):
    w, h = seeded()
    args = dict(hessian=h, damp=0.1, block=128) | kwargs
    with pytest.raises(QuantizationError, match=msg):
        gptq_quantize("w", w, args["hessian"], QuantSpec(4, 32), damp=args["damp"],
                      block=args["block"])


def test_gptq_names_a_nan_weight():
    w, h = seeded()
    w[3, 7] = np.nan
    with pytest.raises(QuantizationError, match=r"^tensor 'w': weight \[3, 7\] is nan; "):
        gptq_quantize("w", w, h, QuantSpec(4, 32))


# --- calibration data ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    out = tmp_path_factory.mktemp("bert")
    write_bert(out, bert_config(hidden=32, layers=2, heads=2, intermediate=64, vocab=64),
               seed=2)
    return open_checkpoint(out)


@pytest.fixture(scope="module")
def llama_tied(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama")
    write_llama(out, llama_config(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64,
                                  vocab=64, tie_embeddings=True), dtype="F32", seed=3)
    return open_checkpoint(out)


SEQS = [[1, 5, 9, 2, 33, 17], [4, 4, 60, 12], [7, 8, 9, 10, 11, 12, 13, 14, 15]]


def test_empty_calibration_text_is_an_error(bert):
    with pytest.raises(QuantizationError, match=r"^calibration text is empty$"):
        calibration_tokens(bert, " \n\t ", tokenizer=object())


def test_empty_calibration_file_is_an_error(bert, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(QuantizationError, match=r"^.*empty\.txt: calibration text is empty$"):
        calibration_tokens(bert, path)


def test_calibration_text_without_tokenizer_is_an_error(bert):
    with pytest.raises(QuantizationError, match=r"^calibration text needs the model's "
                                                r"tokenizer, and .* has no tokenizer\.json; "
                                                r"give token ids instead \(--calib-tokens"):
        calibration_tokens(bert, "default")


def test_missing_calibration_file_is_an_error(bert, tmp_path):
    with pytest.raises(QuantizationError, match=r"^.*nope\.txt: calibration text file does "
                                                r"not exist$"):
        calibration_tokens(bert, tmp_path / "nope.txt")


def test_token_file(bert, tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("1 2 3\n\n  4 5\n" + " ".join(["6"] * 300) + "\n")
    seqs = token_file_sequences(bert, path, seq_tokens=128)
    assert [len(s) for s in seqs] == [3, 2, 128, 128, 44]
    path.write_text("1 2 x\n")
    with pytest.raises(QuantizationError, match=r"^.*ids\.txt:1: token ids must be integers "
                                                r"from 0 to 63, not 'x'$"):
        token_file_sequences(bert, path)
    path.write_text("1 64\n")
    with pytest.raises(QuantizationError, match=r"not '64'$"):
        token_file_sequences(bert, path)


class _CharTokenizer:
    """[CLS]=0 ... [SEP]=1 around one id per character (2 + ord % 60)."""

    def encode(self, text, add_special_tokens=True):
        ids = [2 + ord(c) % 60 for c in text]
        return [0] + ids + [1] if add_special_tokens else ids


def test_text_is_cut_into_wrapped_units(bert):
    text = "One two. Three four!\n\nFive " + "x" * 40
    seqs = calibration_tokens(bert, text, tokenizer=_CharTokenizer(), seq_tokens=16)
    assert all(s[0] == 0 and s[-1] == 1 and len(s) <= 16 for s in seqs)
    assert [len(s) - 2 for s in seqs] == [8, 11, 14, 14, 14, 3]   # sentences, then windows
    assert text_units(text, sentences=False) == ["One two. Three four!", "Five " + "x" * 40]
    capped = calibration_tokens(bert, text, tokenizer=_CharTokenizer(), max_tokens=12)
    assert [len(s) for s in capped] == [10]       # [CLS] 8 [SEP]; no room for another


@pytest.mark.skipif(minilm_dir() is None, reason="all-MiniLM-L6-v2 is not installed")
def test_default_sample_with_the_real_tokenizer():
    ckpt = open_checkpoint(minilm_dir())
    seqs = calibration_tokens(ckpt)   # padding/truncation of tokenizer.json switched off
    assert all(s[0] == 101 and s[-1] == 102 for s in seqs)   # [CLS] ... [SEP]
    assert sum(len(s) for s in seqs) > 1000 and max(len(s) for s in seqs) > 40


# --- Hessians ----------------------------------------------------------------------------------

class _Capture(FloatOps):
    def __init__(self, source):
        super().__init__(source)
        self.inputs: dict[str, list[np.ndarray]] = {}

    def linear(self, x, weight, bias):
        self.inputs.setdefault(weight, []).append(np.array(x, dtype=np.float64))
        return super().linear(x, weight, bias)


def _independent_hessians(ckpt, seqs):
    ops = _Capture(CheckpointSource(ckpt))
    for s in seqs:
        run_graph(ops, ckpt.config, ckpt.architecture, s)
    out = {}
    for name, xs in ops.inputs.items():
        x = np.concatenate(xs)
        out[name] = 2.0 / len(x) * x.T @ x
    return out


@pytest.mark.parametrize("model", ["bert", "llama_tied"])
def test_hessians_equal_an_independent_xtx(model, request):
    ckpt = request.getfixturevalue(model)
    got = collect_hessians(ckpt, SEQS)
    want = _independent_hessians(ckpt, SEQS)
    if model == "llama_tied":   # the tied head is also the embedding table: no Hessian
        assert "model.embed_tokens.weight" in want and "model.embed_tokens.weight" not in got
        del want["model.embed_tokens.weight"]
        q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    else:
        q, k = ("encoder.layer.0.attention.self.query.weight",
                "encoder.layer.0.attention.self.key.weight")
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    assert got[q] is got[k]   # one input, one shared array
    sub = collect_hessians(ckpt, SEQS, names=[k])
    assert list(sub) == [k]
    np.testing.assert_allclose(sub[k], want[k], rtol=1e-10, atol=1e-12)


def test_hessians_need_valid_tokens(bert):
    with pytest.raises(QuantizationError, match=r"^calibration cannot run the model: .*token 1 "
                                                r"must be an integer id from 0 to 63"):
        collect_hessians(bert, [[1, 99]])


# --- policies ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ids_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "ids.txt"
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(str(int(t)) for t in rng.integers(0, 64, 24))
                              for _ in range(6)) + "\n")
    return path


def test_gptq_policy_quantizes_linears_with_their_hessians(llama_tied, ids_file):
    policy = BitPolicy(default_bits=3, group_size=16, method="gptq", calib_tokens=ids_file)
    got = {qt.name: qt for qt in quantize_model(llama_tied, policy)}
    hessians = collect_hessians(llama_tied, token_file_sequences(llama_tied, ids_file))
    for name, qt in got.items():
        spec = QuantSpec(3, 16)
        w = llama_tied.read(name)
        want = gptq_quantize(name, w, hessians[name], spec) if name in hessians \
            else quantize_tensor(name, w, spec)
        assert qt.codes.tobytes() == want.codes.tobytes(), name
        assert qt.scales.tobytes() == want.scales.tobytes(), name
    d = policy.to_dict()
    assert d["method"] == "gptq" and d["asymmetric"] is False
    assert d["calibration"] == {"tokens": str(ids_file), "max_tokens": 4096}


def test_uncalibrated_policy_is_unchanged(llama_tied):
    d = BitPolicy().to_dict()
    assert d["method"] == "rtn" and d["calibration"] is None and d["auto_sensitivity"] is None
    for qt in quantize_model(llama_tied, BitPolicy(default_bits=4, group_size=16)):
        want = quantize_tensor(qt.name, llama_tied.read(qt.name), QuantSpec(4, 16))
        assert qt.codes.tobytes() == want.codes.tobytes()


def test_asymmetric_policy(llama_tied):
    plan = plan_bits(llama_tied, BitPolicy(default_bits=4, group_size=16, asymmetric=True))
    assert all(t.spec.asymmetric for t in plan.tensors)


def test_auto_uses_measured_output_error_with_calibration(llama_tied, ids_file):
    auto = AutoMixed(budget_bits_per_weight=3.5)
    plain = plan_bits(llama_tied, BitPolicy(group_size=16, auto=auto, default_bits=3))
    measured = BitPolicy(group_size=16, auto=auto, default_bits=3, calib_tokens=ids_file)
    plan = plan_bits(llama_tied, measured)
    assert plan.bits_per_weight <= 3.5
    assert measured.to_dict()["auto_sensitivity"] == "output-error"
    ratios = {t.name: t.sensitivity for t in plan.tensors}
    assert ratios != {t.name: t.sensitivity for t in plain.tensors}
    assert all(r > 0 for r in ratios.values())
    assert plan_bits(llama_tied, measured).specs == plan.specs   # deterministic


@pytest.mark.parametrize("kwargs, msg", [
    (dict(method="awq"), r"^method must be one of rtn, gptq, not 'awq'$"),
    (dict(method="gptq", calib="a.txt", calib_tokens="b.txt"),
     r"^give calibration text \(calib\) or token ids \(calib_tokens\), not both$"),
    (dict(method="gptq", calib=""),
     r"^calib must be a file path \(or 'default' for calib\), not ''$"),
    (dict(method="gptq", calib_max_tokens=1), r"^calib_max_tokens must be an integer >= 2, "
                                              r"not 1$"),
    (dict(calib="default"), r"^calibration data is used by method gptq, --awq and the auto "
                            r"policy; .* \(add --method gptq, --awq or --auto\)$"),
])
def test_policy_validation(kwargs, msg):
    with pytest.raises(QuantizationError, match=msg):
        BitPolicy(**kwargs)


def test_calibration_needs_a_checkpoint():
    tensors = {"a.weight": np.ones((4, 8), np.float32)}
    with pytest.raises(QuantizationError, match=r"^method gptq with calibration runs the model "
                                                r"on calibration data, so it needs a checkpoint"):
        list(quantize_model(tensors, BitPolicy(group_size=8, method="gptq")))


def test_cli_options_reach_the_policy(tmp_path):
    import click

    from taalasc.commands.common import bit_policy, quant_options

    @click.command()
    @quant_options
    @click.pass_context
    def cmd(ctx, bits, rules, group_size, auto, budget):   # takes none of the new options
        click.echo(repr(bit_policy(ctx, bits, rules, group_size, auto, budget).to_dict()))

    out = CliRunner().invoke(cmd, ["--method", "gptq", "--asym", "--calib", "default",
                                   "--bits", "3"])
    assert out.exit_code == 0, out.output
    d = eval(out.output)
    assert (d["method"], d["asymmetric"], d["calibration"]) == (
        "gptq", True, {"text": "default", "max_tokens": 4096})
    out = CliRunner().invoke(cmd, [])
    assert eval(out.output)["method"] == "rtn" and eval(out.output)["calibration"] is None
    out = CliRunner().invoke(cmd, ["--method", "awq"])
    assert out.exit_code == 2 and "'awq' is not one of 'rtn', 'gptq'" in out.output


def test_gptq_refuses_hessians_beyond_the_memory_bound():
    """Llama-3.1-8B-like shapes: 32 x (6 x 4096² + 14336²) x 8 bytes = 73 GiB."""
    from types import SimpleNamespace

    from taalasc.quant.calib import calibration_hessians, hessian_bytes_bound

    t = {}
    for i in range(32):
        for m in ("q", "k", "v", "o", "gate", "up"):
            t[f"model.layers.{i}.{m}.weight"] = SimpleNamespace(shape=(4096, 4096))
        t[f"model.layers.{i}.down.weight"] = SimpleNamespace(shape=(4096, 14336))
    t["model.embed_tokens.weight"] = SimpleNamespace(shape=(128256, 4096))
    ckpt = SimpleNamespace(tensors=t, path="llama-8b")
    assert hessian_bytes_bound(ckpt) == 32 * 8 * (6 * 4096 ** 2 + 14336 ** 2)
    with pytest.raises(QuantizationError, match=r"^llama-8b: GPTQ would hold up to 73\.0 GiB "
                                                r"of calibration Hessians .* more than 8 GiB; "
                                                r"use --method rtn"):
        calibration_hessians(ckpt, None)
