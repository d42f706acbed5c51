"""`taalasc quality`: does the model still work on this chip? Perplexity (decoders) or
sentence-embedding cosine (encoders) of the chip against the float model, per bit policy."""

from __future__ import annotations

from pathlib import Path

import click

from taalasc.commands.common import FiniteFloat, base_option, progress_bar


@click.command("quality")
@click.argument("model", metavar="MODEL_OR_OUT", type=click.Path())
@click.option("--model", "original", type=click.Path(), default=None,
              help="With a compile folder as the argument: the checkpoint it was compiled from.")
@click.option("--text", "text_path", type=click.Path(dir_okay=False), default=None,
              help="Plain-text file to score [default: a few KB of English shipped with "
                   "taalasc]. Decoders read it as one text; encoders one sentence per line.")
@click.option("--window", type=click.IntRange(2), default=128, show_default=True,
              help="Tokens per window (decoders: each window scored on its own; encoders: "
                   "the longest sentence kept).")
@click.option("--max-tokens", type=click.IntRange(2), default=1024, show_default=True,
              help="Score at most this many tokens of the text.")
@click.option("--bits", type=click.IntRange(2, 8), multiple=True,
              help="A uniform policy of this many bits per weight (repeatable).")
@click.option("--auto", is_flag=True, help="Also the HC1-style 3/6-bit policy within --budget.")
@click.option("--budget", type=FiniteFloat(2, 8), default=3.5, show_default=True,
              help="Average bits per weight allowed by --auto.")
@click.option("--group-size", default="32", show_default=True,
              help="Weights per scale for --bits and --auto, or 'per-channel'.")
@click.option("--policy", "policies", multiple=True, metavar="'[LABEL=]OPTIONS'",
              help="Any policy written as quantize options, e.g. 'gptq4=--bits 4 --method "
                   "gptq' (repeatable).")
@click.option("--native", is_flag=True,
              help="Also the checkpoint's own codes (a GGUF file's Q8_0/Q4_0/Q4_1 blocks).")
@base_option("sky130-reticle")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the figures as JSON to this file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write a PNG of quality against bits per weight.")
def quality_cmd(model, original, text_path, window, max_tokens, bits, auto, budget,
                group_size, policies, native, base, json_path, plot_path):
    """Does the model still work on this chip? Runs the float model and the bit-accurate chip model
    on text through the model's tokenizer and prints, per bit policy: bits per weight,
    perplexity of the float model and of the chip and the increase, KL divergence and top-1
    agreement (decoders), or the cosine of the mean-pooled sentence embeddings (encoders).

    MODEL_OR_OUT is a checkpoint (quantized in memory with each policy; with no policy option:
    8-bit, 4-bit and --auto) or a compile folder (the weights read back from its masks; name
    the checkpoint with --model)."""
    import taalasc
    from taalasc.errors import safe_text
    from taalasc.outdir import atomic_file, check_output_file
    from taalasc.textquality import is_compiled

    is_compiled(model, original, bool(bits or auto or policies or native))
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        check_output_file(path, (model, original, text_path), option)
    with progress_bar(True) as tick:
        result = taalasc.quality(model, model=original, text=text_path, window=window,
                                 max_tokens=max_tokens, bits=bits, auto=auto, budget=budget,
                                 group_size=group_size, policies=policies, native=native,
                                 base=base, progress=tick)
    doc = result.to_dict()
    _print_table(doc)
    for row in doc["policies"]:
        if row["note"]:
            click.echo(safe_text(f"note: {row['label']}: {row['note']}"))
    # both outputs are made before either is written
    json_text = _json_text(doc) if json_path is not None else None
    image = render_plot(doc) if plot_path is not None else None
    if json_text is not None:
        with atomic_file(json_path) as tmp:
            _write(tmp, json_text)
    if image is not None:
        from taalasc.png import write_png
        with atomic_file(plot_path) as tmp:
            write_png(tmp, image)


def _json_text(doc: dict) -> str:
    import json

    from taalasc.commands.common import jsonable

    return json.dumps(jsonable(doc), indent=1, sort_keys=True) + "\n"


def _write(path: Path, text: str) -> None:
    from taalasc.errors import OutputError

    try:
        path.write_text(text)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


DECODER_COLUMNS = (("bits/w", "bits_per_weight", "{:.2f}"), ("float ppl", "ppl_float", "{:.3f}"),
                   ("chip ppl", "ppl_chip", "{:.3f}"), ("+%", "ppl_increase_pct", "{:+.2f}"),
                   ("KL nats", "kl_mean_nats", "{:.4f}"), ("top-1", "top1_agreement", "{:.3f}"))
ENCODER_COLUMNS = (("bits/w", "bits_per_weight", "{:.2f}"),
                   ("emb cos mean", "embedding_cosine_mean", "{:.5f}"),
                   ("emb cos min", "embedding_cosine_min", "{:.5f}"),
                   ("token cos", "hidden_cosine_mean", "{:.5f}"))


def _print_table(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from taalasc.errors import safe_markup

    decoder = doc["architecture"] == "llama"
    unit = ("window" if decoder else "sentence") + ("" if doc["sequences"] == 1 else "s")
    table = Table(title=f"chip vs float: {doc['tokens']} tokens in {doc['sequences']} {unit}",
                  caption="top-1: chip and float predict the same next token; +%: chip "
                          "perplexity over float" if decoder else
                          "cosine of mean-pooled, L2-normalised last hidden states")
    table.add_column("policy", overflow="fold")
    columns = DECODER_COLUMNS if decoder else ENCODER_COLUMNS
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for row in doc["policies"]:
        values = {**row["figures"], "bits_per_weight": row["bits_per_weight"]}
        table.add_row(safe_markup(row["label"]), *(fmt.format(values[key]) for _, key, fmt in columns))
    Console().print(table)


def render_plot(doc: dict):
    """RGB image: the quality figure (decoders: chip perplexity increase in %; encoders:
    1 - embedding cosine) against bits per weight, one labelled point per policy."""
    import numpy as np

    from taalasc.draw import MUTED, draw_text

    decoder = doc["architecture"] == "llama"
    title = ("Perplexity increase of the chip over float (%) against bits per weight" if decoder
             else "1 − embedding cosine (chip vs float) against bits per weight")
    points = [(row["bits_per_weight"],
               row["figures"]["ppl_increase_pct"] if decoder
               else 1.0 - row["figures"]["embedding_cosine_mean"], row["label"])
              for row in doc["policies"]]
    width, left, top, plot_w, plot_h = 640, 70, 40, 540, 260
    height = top + plot_h + 60 + 16 * len(points)
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    draw_text(img, 12, 12, title, bold=True)
    xs = [p[0] for p in points]
    ys = [p[1] if np.isfinite(p[1]) else 0.0 for p in points]
    x_lo, x_hi = min(2.0, min(xs)), max(8.0, max(xs))
    y_lo, y_hi = min(0.0, min(ys)), max(ys) if max(ys) > min(0.0, min(ys)) else 1.0
    bottom = top + plot_h
    img[top:bottom + 1, left] = (0, 0, 0)
    img[bottom, left:left + plot_w + 1] = (0, 0, 0)
    for b in range(int(np.ceil(x_lo)), int(np.floor(x_hi)) + 1):
        x = left + int(round((b - x_lo) / (x_hi - x_lo) * plot_w))
        img[bottom:bottom + 5, x] = (0, 0, 0)
        draw_text(img, x - 3, bottom + 8, str(b))
    for frac in (0.0, 0.5, 1.0):
        y = bottom - int(round(frac * plot_h))
        img[y, left - 5:left] = (0, 0, 0)
        text = f"{y_lo + frac * (y_hi - y_lo):.3g}"
        draw_text(img, left - 8 - 6 * len(text), y - 6, text, MUTED)
    draw_text(img, left + plot_w // 2 - 45, bottom + 24, "bits per weight", MUTED)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127)]
    for i, ((bx, _, label), by) in enumerate(zip(points, ys)):
        x = left + int(round((bx - x_lo) / (x_hi - x_lo) * plot_w))
        y = bottom - int(round((by - y_lo) / (y_hi - y_lo) * plot_h))
        color = palette[i % len(palette)]
        img[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = color
        ly = bottom + 50 + 16 * i
        img[ly:ly + 10, 10:20] = color
        draw_text(img, 26, ly, f"{label} ({bx:.2f} bits/weight, {by:.4g})")
    return img
