"""Does the model still work on this chip? The flow of ``taalasc.quality`` (and `taalasc
quality`): text → token sequences → the float model once → the bit-accurate chip model per
bit policy → perplexity, KL and top-1 (decoders) or sentence-embedding cosine (encoders).

A policy is written as the quantize options of the command line ('--bits 4 --method gptq'),
parsed by the same click options every command shares, so a policy reads the same in a
notebook as in a shell. The figures themselves are taalasc.sim.quality's.
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_TEXT = Path(__file__).resolve().parent / "sim" / "quality_default.txt"

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PolicyQuality:
    """The chip against the float model under one bit policy."""

    label: str                     # '4-bit', 'auto 3/6 <= 3.5 b/w', a --policy LABEL
    options: str                   # the quantize options it was made from
    note: str                      # what the run left out or made again; '' when nothing
    bits_per_weight: float         # code bits per weight
    stored_bits_per_weight: float  # code bits plus scales and minimums per weight
    figures: dict                  # taalasc.sim.quality TextQuality.figures() + overflows


@dataclass(frozen=True)
class QualityResult:
    """Every policy's figures on one text; ``result["4-bit"]`` is one policy's."""

    model: str
    architecture: str
    text: str                      # the text file, or '(default text)'
    window: int
    max_tokens: int
    tokens: int                    # tokens scored over all sequences
    sequences: int                 # windows (decoders) or sentences (encoders)
    policies: tuple[PolicyQuality, ...]

    def __getitem__(self, label: str) -> PolicyQuality:
        for policy in self.policies:
            if policy.label == label:
                return policy
        raise KeyError(f"no policy labelled {label!r}; there are "
                       f"{[p.label for p in self.policies]}")

    def to_dict(self) -> dict:
        """The document `taalasc quality --json` writes."""
        return {"model": self.model, "architecture": self.architecture, "text": self.text,
                "window": self.window, "max_tokens": self.max_tokens, "tokens": self.tokens,
                "sequences": self.sequences,
                "policies": [{"label": p.label, "options": p.options, "note": p.note,
                              "bits_per_weight": p.bits_per_weight,
                              "stored_bits_per_weight": p.stored_bits_per_weight,
                              "figures": p.figures} for p in self.policies]}


def run_quality(model: str | Path, original: str | Path | None = None, *,
                text: str | Path | None = None, window: int = 128, max_tokens: int = 1024,
                bits: Sequence[int] = (), auto: bool = False, budget: float = 3.5,
                group_size: str = "32", policies: Sequence[str] = (), native: bool = False,
                base=None, progress: Progress | None = None) -> QualityResult:
    """``model`` is a checkpoint (quantized in memory with each policy; with none asked for:
    8-bit, 4-bit and auto) or a compile folder (the weights read back from its masks; then
    ``original`` names the checkpoint). ``base``: the base array whose datapath runs the chip
    (a name, a YAML path or a BaseArray; a compile folder runs on its own)."""
    from taalasc.config import load_base_array
    from taalasc.errors import ModelError
    from taalasc.model import open_checkpoint
    from taalasc.sim import quality as q

    tick = progress or (lambda stage, done, total: None)
    compiled = is_compiled(model, original, bool(bits or auto or policies or native))
    ckpt = open_checkpoint(original if compiled else model)
    parsed = [] if compiled else [(label, options, parse_policy(options, given))
                                  for label, options, given
                                  in policy_strings(bits, auto, budget, group_size, policies,
                                                    native)]
    if native and getattr(ckpt, "native", None) is None:
        raise ModelError(f"{ckpt.path}: --native needs a .gguf file (its Q8_0, Q4_0 or Q4_1 "
                         "blocks); this checkpoint holds float weights")
    text_file = Path(text) if text else DEFAULT_TEXT
    sequences = _sequences(ckpt, text_file, window, max_tokens)

    base_array = None if compiled else load_base_array(base)
    runs = []  # (label, options, weights maker)
    if compiled:
        _same_model(Path(model), ckpt)
        runs.append(("compiled masks", "", lambda: _compiled_weights(Path(model))))
    ternary = base_array is not None and base_array.weight_tile.encoding == "ternary"
    for label, options, policy in parsed:   # a ternary base's sites hold -1, 0, +1 only
        policy = replace(policy, ternary=ternary)
        runs.append((label, options, lambda policy=policy: _quantized(ckpt, policy)))
    if native:
        runs.append(("native codes", "--native", lambda: _native(ckpt)))

    rows = []
    reference = q.float_outputs(ckpt, sequences, lambda d, t: tick("float model", d, t))
    for label, options, make in runs:
        weights, note, run_base = make()
        run_on = run_base or base_array
        figures = q.text_quality(ckpt, weights, sequences, run_on.datapath, reference,
                                 lambda d, t, label=label: tick(f"chip {label}", d, t),
                                 run_on.weight_tile)
        bits_pw = q.weight_bits(weights)
        rows.append(PolicyQuality(label, options, note, bits_pw["code"], bits_pw["stored"],
                                  figures))
        del weights
    return QualityResult(model=str(ckpt.path), architecture=ckpt.architecture,
                         text=str(text) if text else "(default text)", window=window,
                         max_tokens=max_tokens, tokens=sum(len(s) for s in sequences),
                         sequences=len(sequences), policies=tuple(rows))


def is_compiled(model: str | Path, original: str | Path | None, policies: bool) -> bool:
    """Whether ``model`` is a compile folder; ModelError when it is one and ``policies`` are
    asked for or the checkpoint it was compiled from (``original``) is not named. The
    command checks this before its output files, as the first thing it is told."""
    from taalasc.errors import ModelError

    compiled = (Path(model) / "manifest.json").is_file()
    if compiled and policies:
        raise ModelError(f"{model} is a compile folder: its masks hold one bit policy; "
                         "--bits, --auto, --policy and --native apply to a checkpoint")
    if compiled and original is None:
        raise ModelError(f"{model} is a compile folder: name the checkpoint it was compiled "
                         "from with --model (the float reference and the tokenizer need it)")
    return compiled


@functools.cache
def _policy_parser():
    """A click command that parses one policy string with the quantization options every
    command shares (built on first use: click is not needed to import this module)."""
    import click

    from taalasc.commands.common import bit_policy, quant_options

    @click.command("policy", add_help_option=False)
    @quant_options
    @click.pass_context
    def parser(ctx: click.Context, **options):
        return bit_policy(ctx, **options)

    return parser


def parse_policy(text: str, given: str | None = None):
    """A BitPolicy from quantization options written as one string, e.g. '--bits 3 --auto';
    errors quote ``given`` (what the user typed) when set."""
    import click

    from taalasc.errors import QuantizationError

    try:
        args = shlex.split(text)
        return _policy_parser().main(args=args, prog_name="--policy", standalone_mode=False)
    except ValueError as exc:
        raise QuantizationError(f"--policy {given or text!r}: {exc}") from None
    except click.ClickException as exc:
        raise QuantizationError(f"--policy {given or text!r}: {exc.format_message()}") from None


def policy_strings(bits: Sequence[int], auto: bool, budget: float, group_size: str,
                   policies: Sequence[str], native: bool = False) -> list[tuple[str, str, str]]:
    """(label, quant options, as given) of every requested policy, in the order given; with none
    requested (and no --native): 8-bit, 4-bit and the automatic 3/6-bit policy."""
    if not (bits or auto or policies or native):
        bits, auto = (8, 4), True
    out = [(f"{b}-bit", f"--bits {b} --group-size {group_size}", f"--bits {b}") for b in bits]
    if auto:
        out.append((f"auto 3/6 <= {budget:g} b/w",
                    f"--auto --budget {budget!r} --group-size {group_size}", "--auto"))
    for text in policies:
        label, sep, options = text.partition("=")
        if not sep or label.lstrip().startswith("-"):
            label, options = text.strip(), text
        out.append((label.strip(), options, text))
    return out


def _sequences(ckpt, text_file: Path, window: int, max_tokens: int) -> list[list[int]]:
    from taalasc.errors import ModelError
    from taalasc.sim import quality as q

    try:
        text = text_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{text_file}: no such file") from None
    except UnicodeDecodeError:
        raise ModelError(f"{text_file}: the text must be UTF-8") from None
    except OSError as exc:
        raise ModelError(f"{text_file}: cannot read it: {exc.strerror or exc}") from None
    if not text.strip():
        raise ModelError(f"{text_file}: the text is empty")
    if ckpt.architecture not in ("llama", "bert"):
        raise ModelError(f"{ckpt.path}: architecture must be llama or bert to score text, "
                         f"not {ckpt.architecture!r}")
    tok = q.load_tokenizer(ckpt)
    if ckpt.architecture == "bert":
        sentences, total = [], 0
        for ids in q.encoder_sentences(tok, text, window):
            if sentences and total + len(ids) > max_tokens:
                break
            sentences.append(ids)
            total += len(ids)
        return sentences
    ids = q.encode(tok, text)[:max_tokens]
    if len(ids) < 2:
        raise ModelError(f"{text_file}: the text must hold at least 2 tokens to score, "
                         f"not {len(ids)}")
    return q.decoder_windows(ids, window)


def _quantized(ckpt, policy):
    from taalasc.sim.chip import chip_weights

    return chip_weights(ckpt, policy), "", None


def _native(ckpt):
    """The file's own codes (GGUF Q8_0/Q4_0/Q4_1) where it has them, 8 bits elsewhere: the
    policy compile uses for a .gguf file (native codes, the rest quantized again)."""
    from taalasc.quant import BitPolicy
    from taalasc.quant.method import native_specs

    policy = BitPolicy(default_bits=8, group_size=32, native=True)
    weights, note, base = _quantized(ckpt, policy)
    others = sum(1 for n, i in ckpt.tensors.items() if len(i.shape) == 2) - len(native_specs(ckpt))
    return weights, (f"{others} tensors without native codes re-quantized at 8 bits"
                     if others else note), base


def _same_model(out_dir: Path, ckpt) -> None:
    """ModelError unless ``ckpt``'s files are the ones the compile's manifest hashed."""
    from taalasc.errors import ModelError
    from taalasc.extract.extract import read_manifest
    from taalasc.outdir import sha256_file

    manifest = read_manifest(out_dir)
    compiled = {f["name"]: f["sha256"] for f in manifest["inputs"]["model"]["files"]}
    given = {Path(f).name: sha256_file(Path(f)) for f in ckpt.files}
    if compiled != given:
        raise ModelError(f"{ckpt.path}: not the checkpoint {out_dir} was compiled from "
                         f"(files {sorted(given)} vs {sorted(compiled)} or their sha256)")


def _compiled_weights(out_dir: Path):
    from taalasc.extract.extract import base_of, chip_weights, extract, read_manifest

    manifest = read_manifest(out_dir)
    base = base_of(manifest, out_dir)
    weights = chip_weights(extract(out_dir), manifest["quantization"])
    return weights, f"masks of {out_dir}", base
