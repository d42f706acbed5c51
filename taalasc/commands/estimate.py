"""`taalasc estimate`: area, timing, power, SRAM and cost of printing a model, without weights."""

from __future__ import annotations

from pathlib import Path

import click

from taalasc.commands.common import (FiniteFloat, base_option, echo_safe, emit_report,
                                     parse_group_size, quant_options, write_html)


def _parse_rules(rules: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for text in rules:
        glob, sep, bits = text.rpartition("=")
        if not sep or not glob or not bits.strip().isdigit():
            raise click.BadParameter(f"must be GLOB=BITS, not {text!r}", param_hint="--rule")
        out.append((glob, int(bits)))
    return out


def _parse_list(text: str | None, what: str, cast=str) -> list:
    if not text:
        return []
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise click.BadParameter(f"must be a comma-separated list, not {text!r}",
                                 param_hint=what) from None


@click.command("estimate")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="A Hugging Face config.json instead of a checkpoint.")
@click.option("--preset", default=None,
              help="A published model: llama-3.1-8b, llama-3.1-70b, llama-3.1-405b, "
                   "llama-3.2-1b, qwen2.5-7b, mistral-7b(-v0.1|-v0.3), bert-base-uncased, "
                   "gpt-oss-120b (mixture of experts). llama-3.1-8b and gpt-oss-120b also "
                   "print the published silicon that runs them (Taalas HC1, HNLPU).")
@base_option()
@quant_options
@click.option("--users", type=click.IntRange(1), default=1, show_default=True,
              help="Concurrent streams (users) sharing the chip.")
@click.option("--context", type=click.IntRange(1), default=2048, show_default=True,
              help="Context length per user, in tokens, for the KV-cache figures (decoders; "
                   "an encoder's sequence is its max_position_embeddings, else 128).")
@click.option("--lora-rank", type=click.IntRange(1), default=None,
              help="Check that a LoRA adapter of this rank (on q_proj, v_proj) fits the SRAM.")
@click.option("--lora", "lora_dir", type=click.Path(path_type=Path), default=None,
              help="A PEFT adapter folder (adapter_config.json + adapter_model.safetensors).")
@click.option("--utilisation", type=FiniteFloat(0, 1), default=0.5,
              show_default=True, help="Fraction of the time the chip serves tokens (cost/token).")
@click.option("--zero-bit-ratio", type=FiniteFloat(0, 1), default=None,
              help="Share of zero weight bits, for a zero-skip base (a zero costs no via); "
                   "default 0.5.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--markdown", "as_md", is_flag=True, help="Print the report as Markdown.")
@click.option("--sweep-bits", default=None, metavar="B1,B2,...",
              help="Sweep the default bits, e.g. 3,4,6 (prints a comparison table).")
@click.option("--sweep-base", default=None, metavar="BASE1,BASE2,...",
              help="Sweep base arrays (built-in names or YAML paths).")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="With a sweep: write a bar chart (PNG) of area, tokens/s, power and cost.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="Also write the estimate (or the sweep, with its chart) as one "
                   "self-contained HTML page.")
def estimate_cmd(model, config_path, preset, base, bits, rules, group_size, auto, budget,
                 asymmetric, users, context, lora_rank, lora_dir, utilisation, zero_bit_ratio,
                 as_json, as_md, sweep_bits, sweep_base, plot, html_path):
    """Estimate what printing a model on a base array takes — tiles, dies, area, Fmax,
    tokens/s, watts, SRAM for the KV cache and LoRA, and cost — from a checkpoint's header,
    a config.json or a preset. No weight is read, so even 405B takes well under a second.
    Encoders (BERT family) get sequences/s of a full-sequence forward instead of decode
    figures. Every figure lists its formula and its sourced inputs (--json, --markdown)."""
    import taalasc
    from taalasc.outdir import atomic_file, check_output_file

    yaml_base = base if str(base).endswith((".yaml", ".yml")) else None  # not a built-in name
    check_output_file(plot, (model, config_path, lora_dir, yaml_base), "--plot")
    check_output_file(html_path, (model, config_path, lora_dir, yaml_base), "--html")
    if as_json and as_md:
        raise click.UsageError("--json and --markdown are exclusive")
    common = dict(config=config_path, preset=preset, rules=_parse_rules(rules),
                  group_size=parse_group_size(group_size), auto=auto, budget=budget,
                  asymmetric=asymmetric, users=users, context=context, lora=lora_dir,
                  lora_rank=lora_rank, utilisation=utilisation, zero_bit_ratio=zero_bit_ratio)
    bits_list = _parse_list(sweep_bits, "--sweep-bits", int)
    bases = _parse_list(sweep_base, "--sweep-base") or [base]
    if not bits_list and len(bases) == 1:
        if plot is not None:
            raise click.UsageError("--plot needs --sweep-bits or --sweep-base")
        report = taalasc.estimate(model, base=bases[0], bits=bits, **common)
        emit_report(report, as_json, as_md)
        if html_path is not None:
            from taalasc.report.html import estimate_page

            write_html(html_path, estimate_page(report))
        return
    from taalasc.report.sweep import print_sweep, sweep_markdown, sweep_notes, sweep_plot

    points = taalasc.sweep(model, bases=bases, bits=bits_list or [bits], **common)
    if as_json:
        import json

        click.echo(json.dumps([p.to_dict() for _, p in points], indent=2, sort_keys=True))
    elif as_md:
        echo_safe(sweep_markdown(points))
        for note in sweep_notes(points):
            echo_safe(f"> {note}\n")
    else:
        print_sweep(points)
    if plot is not None:
        with atomic_file(plot) as tmp:
            sweep_plot(points, tmp)
        click.echo(f"wrote {plot}", err=True)
    if html_path is not None:
        from taalasc.report.html import sweep_page

        write_html(html_path, sweep_page(points))
