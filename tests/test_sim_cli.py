"""`taalasc simulate` and the quality figures."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from taalasc.commands.simulate import simulate
from taalasc.errors import ModelError
from taalasc.model.synth import bert_config, llama_config, write_bert, write_llama
from taalasc.sim import SimResult, compare, kl_divergence


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    cfg = llama_config(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64, vocab=40)
    return write_llama(tmp_path_factory.mktemp("llama"), cfg, dtype="F32", seed=3)


def invoke(args):
    return CliRunner().invoke(simulate, [str(a) for a in args])


def test_simulate_prints_prediction_and_saves_logits(llama_dir, tmp_path):
    out = tmp_path / "logits"
    r = invoke([llama_dir, "--tokens", "1 2,3", "--bits", "8", "--group-size", "16",
                "--save-logits", out])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("tokens: 1 2 3\n")
    assert "next token: the 5 likeliest" in r.output and "float: token" in r.output
    assert "top1_agreement" in r.output and "accumulator overflows" in r.output
    f, c = np.load(out / "float.npy"), np.load(out / "chip.npy")
    assert f.shape == c.shape == (3, 40) and f.dtype == np.float32
    assert not np.array_equal(f, c)


def test_simulate_json_is_deterministic(llama_dir):
    a = invoke([llama_dir, "--tokens", "5 6 7", "--json", "--bits", "4"])
    b = invoke([llama_dir, "--tokens", "5 6 7", "--json", "--bits", "4"])
    assert a.exit_code == 0, a.output
    assert a.output == b.output
    doc = json.loads(a.output)
    assert doc["tokens"] == [5, 6, 7] and doc["datapath"]["activation_bits"] == 8
    assert doc["datapath"]["accumulator_bits"] == 24 and doc["datapath"]["overflows"] == 0
    assert 0.0 <= doc["quality"]["top1_agreement"] <= 1.0
    # against the float model of the same codes only the datapath error is left
    assert doc["datapath_quality"]["logit_cosine_min"] > doc["quality"]["logit_cosine_min"]


def test_simulate_bert(tmp_path):
    d = write_bert(tmp_path / "b", bert_config(hidden=32, layers=1, heads=4, intermediate=64,
                                               vocab=40, max_position=8))
    r = invoke([d, "--tokens", "1 2 3", "--json", "--bits", "8", "--save-logits", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    q = json.loads(r.output)["quality"]
    assert q["hidden_cosine_min"] > 0.99 and "pooled_cosine" in q
    assert np.load(tmp_path / "o" / "chip.npy").shape == (3, 32)


def test_token_out_of_range_is_a_model_error(llama_dir):
    r = invoke([llama_dir, "--tokens", "1 40"])
    assert isinstance(r.exception, ModelError)
    assert str(r.exception).endswith(
        ": token 1 must be an integer id from 0 to 39 (vocab_size 40), not 40")


def test_tokens_must_be_integers(llama_dir):
    r = invoke([llama_dir, "--tokens", "1 x"])
    assert r.exit_code == 2 and "must be integer token ids" in r.output


def test_quality_figures_on_known_logits():
    ref = SimResult("llama", (1, 2), logits=np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                                                      dtype=np.float32))
    same = compare(ref, ref)
    assert same["top1_agreement"] == 1.0 and same["kl_mean_nats"] == 0.0
    assert same["logit_cosine_min"] == pytest.approx(1.0)
    other = SimResult("llama", (1, 2), logits=np.array([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                                                        dtype=np.float32))
    q = compare(ref, other)
    assert q["top1_agreement"] == 0.5 and q["logit_cosine_min"] == pytest.approx(0.0)
    # KL of softmax([0,1,0]) against softmax([1,0,0]), by hand
    p = np.exp([0, 1, 0]) / np.exp([0, 1, 0]).sum()
    want = float((p * (np.log(p) - np.log(np.exp([1, 0, 0]) / np.exp([1, 0, 0]).sum()))).sum())
    assert kl_divergence(ref.logits, other.logits)[1] == pytest.approx(want, rel=1e-12)
    assert q["kl_mean_nats"] == pytest.approx(want / 2, rel=1e-12)
    with pytest.raises(ModelError, match="different token sequences"):
        compare(ref, SimResult("llama", (1, 3), logits=ref.logits))
