"""`taalasc simulate`: the float reference and the bit-accurate chip model, side by side."""

from __future__ import annotations

import dataclasses
import json

import click

from taalasc.commands.common import base_option, bit_policy, print_table, quant_options


def parse_tokens(text: str) -> list[int]:
    """Token ids separated by spaces or commas: "1 2 3" or "1,2,3"."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise click.BadParameter("must hold at least one token id", param_hint="--tokens")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"must be integer token ids separated by spaces, not {text!r}",
                                 param_hint="--tokens") from None


@click.command("simulate")
@click.argument("model", type=click.Path())
@click.option("--model", "original", type=click.Path(), default=None,
              help="With a compile folder as the argument: the checkpoint it was compiled "
                   "from (the float reference and the network config).")
@click.option("--lora", "lora_dir", type=click.Path(), default=None,
              help="A PEFT LoRA adapter folder: applied at run time by the chip, as its SRAM "
                   "holds it, and merged into the float reference.")
@click.option("--tokens", required=True, metavar="'ID ID ...'",
              help="Input token ids, separated by spaces or commas, e.g. '1 2 3'.")
@quant_options
@base_option()
@click.option("--overflow", type=click.Choice(["saturate", "raise"]), default="saturate",
              show_default=True,
              help="Accumulator overflow: saturate and count, or stop with exit code 2.")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many of the most likely next tokens to list.")
@click.option("--save-logits", "save_dir", type=click.Path(file_okay=False), default=None,
              help="Write float.npy and chip.npy ([sequence, vocab]; [sequence, hidden] for "
                   "BERT) into this folder.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the result as JSON.")
@click.option("--native/--requantize", default=True, show_default=True,
              help="For a .gguf file: its own Q8_0/Q4_0/Q4_1 codes as they are, or quantize "
                   "every tensor again from its values.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="With a compile folder: mask files read at once (one reader process each).")
@click.pass_context
def simulate(ctx: click.Context, model: str, original: str | None, lora_dir: str | None,
             tokens: str, bits: int, rules: tuple[str, ...], group_size: str, auto: bool,
             budget: float, base: str, overflow: str, top: int, save_dir: str | None,
             as_json: bool, native: bool, jobs: int) -> None:
    """Run MODEL_OR_OUTDIR on --tokens twice: the float32 reference of the checkpoint, and the
    chip model (integer weight codes, activation_bits activations, accumulator_bits
    accumulators from the base array), then print the next-token predictions and the quality
    figures (top-1 agreement, logit cosine, KL divergence; embedding cosine for BERT).

    MODEL is a checkpoint (quantized in memory with the --bits/--rule options) or a compile
    folder: then the chip's weights are read back from its mask geometry, its base array is
    the one it was compiled for, and --model names the original checkpoint."""
    from taalasc.config import load_base_array
    from taalasc.model import open_checkpoint
    from taalasc.sim.chip import chip_weights
    from taalasc.sim.graph import check_tokens, vocab_size
    from taalasc.sim.run import save_outputs, simulate as run_simulation

    ids = parse_tokens(tokens)
    policy = dataclasses.replace(bit_policy(ctx, bits, rules, group_size, auto, budget),
                                 native=native)
    from pathlib import Path

    from taalasc.errors import ModelError
    from taalasc.outdir import check_output_file

    # float.npy and chip.npy, names no adapter file has: only the model folders are guarded
    check_output_file(save_dir, (model, original), "--save-logits")
    compiled = Path(model) / "manifest.json"
    if compiled.is_file():
        if original is None:
            raise ModelError(f"{model} is a compile folder: name the checkpoint it was compiled "
                             "from with --model (the float reference needs it)")
        ckpt = open_checkpoint(original)
    else:
        ckpt = open_checkpoint(model)
    # check the ids before the (slow) quantization or extraction, so a typo fails at once
    check_tokens(ids, vocab_size(ckpt.config, ckpt.architecture, str(ckpt.path)), str(ckpt.path))
    lora = None
    if lora_dir is not None:
        from taalasc.lora import load_lora
        lora = load_lora(Path(lora_dir), ckpt)
    if compiled.is_file():
        import tempfile

        from taalasc.extract.extract import (ExtractedWeights, base_of, extract,
                                             read_manifest, written_format)

        manifest = read_manifest(Path(model))
        base_array = base_of(manifest, Path(model))
        # The values read back go to scratch files, read a tensor at a time by the chip
        # model (as verify does): memory is one tensor, not the model.
        with tempfile.TemporaryDirectory(prefix="taalasc-simulate-") as scratch:
            extraction = extract(Path(model), written_format(manifest), jobs=jobs,
                                 manifest=manifest, base=base_array,
                                 folder=Path(scratch))
            weights = ExtractedWeights(extraction, manifest["quantization"])
            sim = run_simulation(ckpt, weights, ids, base_array.datapath, overflow, lora,
                                 base_array.weight_tile)
    else:
        base_array = load_base_array(base)
        ternary = base_array.weight_tile.encoding == "ternary"   # its sites hold -1, 0, +1
        weights = chip_weights(ckpt, dataclasses.replace(policy, ternary=ternary))
        sim = run_simulation(ckpt, weights, ids, base_array.datapath, overflow, lora,
                             base_array.weight_tile)
    if save_dir is not None:
        save_outputs(sim, save_dir)
    if as_json:
        click.echo(json.dumps(sim.to_dict(), indent=2, sort_keys=True))
        return
    _print(sim, top, _tokenizer(ckpt))


# The quality figures' units (sim.quality.compare names them); cosines have none.
_UNITS = {"top1_agreement": "of positions", "kl_mean_nats": "nats",
          "max_abs_logit_error": "logit", "max_abs_hidden_error": "activation"}


def _token(tok, token_id: int) -> str:
    """A token id with its text when the model has a tokenizer: 38 " the"."""
    if tok is None:
        return str(token_id)
    try:
        text = tok.decode([token_id]) or tok.id_to_token(token_id) or ""
    except Exception:  # noqa: BLE001 - a tokenizer's own error: show the id alone
        return str(token_id)
    return f"{token_id} {json.dumps(text, ensure_ascii=False)}"


def _tokenizer(ckpt):
    """The model's tokenizer for labelling tokens, or None: labels are optional, so a
    missing or unreadable tokenizer does not stop the simulation."""
    from taalasc.errors import TaalascError
    from taalasc.sim.quality import load_tokenizer

    try:
        return load_tokenizer(ckpt)
    except TaalascError:
        return None


def _print(sim, top: int, tok=None) -> None:
    import numpy as np

    from taalasc.console import console, print_tables, print_text

    out = console()
    ref, chip = sim.reference, sim.chip
    print_text(out, f"tokens: {' '.join(str(t) for t in ref.tokens)}")
    if tok is not None:
        print_text(out, "text: " + json.dumps(tok.decode(list(ref.tokens)), ensure_ascii=False))
    if ref.logits is not None:
        columns = []
        for logits in (ref.logits[-1], chip.logits[-1]):
            wide = logits.astype(np.float64)
            order = np.argsort(-wide, kind="stable")[:top]
            p = np.exp(wide - wide.max())
            p /= p.sum()
            columns.append([(_token(tok, int(i)), f"{wide[i]:.4f}", f"{p[i]:.3g}")
                            for i in order])
        rows = [[str(k + 1), *f, *c] for k, (f, c) in enumerate(zip(*columns))]
        print_tables(out, f"next token: the {top} likeliest after the last input token",
                     ["rank", "float: token", "logit", "p", "chip: token", "logit", "p"], rows,
                     right=[0, 2, 3, 5, 6], wrap=[1, 4],
                     caption="logit: the model's raw score for the token; p: its softmax "
                             "probability")
    rows = [(name, _with_unit(name, value)) for name, value in sim.quality.items()]
    rows += [(f"{name} (datapath only)", _with_unit(name, value))
             for name, value in sim.datapath_quality.items()]
    rows += [("activation bits", f"{sim.activation_bits} bits"),
             ("accumulator bits", f"{sim.accumulator_bits} bits"),
             ("accumulator bits needed", f"{chip.accumulator_bits_needed} bits"),
             ("accumulator overflows", f"{chip.overflow_count:,}")]
    print_table("chip vs float reference", rows)


def _with_unit(name: str, value: float) -> str:
    unit = _UNITS.get(name, "")
    return f"{value:.6g} {unit}".rstrip()
