"""`taalasc base build` (draw a base array's base die) and `taalasc merge` (base die + a
compile's custom layers, per die)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("base")
def base_group():
    """The base die: the prefabricated chip under the two custom layers."""


@base_group.command("build")
@click.argument("base_name", metavar="BASE")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for base.gds and manifest.json (replaced as a whole).")
@click.option("--force", is_flag=True, help="Replace a base folder built from other inputs.")
def build_cmd(base_name: str, out_dir: Path, force: bool):
    """Draw the base die of BASE (a built-in name or a base-array YAML): boundary, seal ring,
    supply rings, power grid, and per weight tile a landing under the custom via's two slots
    of every bit site; where the PDK's standard cells are installed (sky130), the cell rows
    too, one gate per bit site with its input carried up to its landing."""
    from taalasc.base.build import write_base_folder
    from taalasc.commands.common import print_table
    from taalasc.config import load_base_array

    base = load_base_array(base_name)
    manifest = write_base_folder(base, out_dir, force=force)
    print_table(f"taalasc base build → {out_dir}", summary_rows(base, manifest))


def summary_rows(base, manifest: dict) -> list[tuple[str, str]]:
    g, t = base.tile_grid, manifest["tile"]
    out = manifest["outputs"][manifest["file"]]
    if t is None:
        under = "landings, tie pads and rails only (no standard-cell package for this PDK)"
    else:
        under = (f"each {t['rows']} cell rows ({t['gate_rows']} with gates) of "
                 f"{t['row_sites']} sites")
    rows = [("base array", f"{base.name} ({base.pdk.name})"),
            ("die", f"{base.die.width_nm / 1e6:g} × {base.die.height_nm / 1e6:g} mm"),
            ("tiles", f"{g.columns} × {g.rows}, {under}"),
            ("file", f"{manifest['file']}: {out['bytes']:,} bytes, top cell "
                     f"{manifest['top_cell']}"),
            ("build time", f"{manifest['seconds']:.2f} s")]
    area = transistors = count = 0
    for c in manifest["cells"]:
        rows.append((c["name"], f"{c['count']:,} cells, {c['area_um2'] / 1e6:.4f} mm², "
                                f"{c['transistors']:,} transistors"))
        area += c["area_um2"]
        transistors += c["transistors"]
        count += c["count"]
    if manifest["cells"]:
        rows.append(("all cells", f"{count:,} cells, {area / 1e6:.4f} mm², {transistors:,} "
                                  "transistors (LEF sizes, SPICE devices)"))
    return rows


@click.command("merge")
@click.argument("compile_dir", metavar="OUT", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the merged dies (die0.gds, die0.oas, ...; replaced as a whole). "
                   "Not inside OUT (`taalasc compile --merge` writes OUT/merged).")
@click.option("--base-dir", type=click.Path(path_type=Path), default=None,
              help="A `taalasc base build` folder of the compile's base array (default: build "
                   "the base die here).")
@click.option("--base", "base_name", default=None,
              help="The compile's base array, when the name or path it recorded no longer "
                   "resolves (must be the same YAML, byte for byte).")
@click.option("--format", "fmt", type=click.Choice(["gds", "oas", "both"]), default=None,
              help="Merged file format(s)  [default: those the compile wrote]")
@click.option("--force", is_flag=True, help="Replace a merge folder of other inputs.")
def merge_cmd(compile_dir: Path, out_dir: Path, base_dir: Path | None, base_name: str | None,
              fmt: str | None, force: bool):
    """Merge the base die with the custom layers of every die of the compile in OUT: one
    GDSII and/or OASIS file per die, a new top cell placing both, byte-reproducible."""
    from taalasc.base.merge import merge_compile
    from taalasc.commands.common import print_table

    formats = None if fmt is None else ("gds", "oas") if fmt == "both" else (fmt,)
    manifest = merge_compile(compile_dir, out_dir, base_dir=base_dir, force=force,
                             base_name=base_name, formats=formats)
    rows = [(name, f"{out['bytes']:,} bytes, top cell {manifest['top_cells'][name]}")
            for name, out in sorted(manifest["outputs"].items())]
    rows.append(("time", f"{manifest['seconds']:.2f} s"))
    print_table(f"taalasc merge {compile_dir} → {out_dir}", rows)
