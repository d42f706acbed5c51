"""`taalasc configs`: list, show and check the PDK and base-array YAML files.

The library work (flattening a loaded config into rows with sources, detecting whether a file
is a PDK or a base array, checking many files and collecting every problem) lives in plain
functions here so tests and other commands can call them without click.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

KINDS = ("auto", "pdk", "base")
# Keys only a base array has at its top level: how `auto` tells the two kinds apart.
_BASE_KEYS = frozenset({"pdk", "max_dies", "die", "tile_grid", "weight_tile", "datapath",
                        "clock"})
_PDK_SECTIONS = ("rules", "electrical", "cells", "sram", "cost")


# -- library part ------------------------------------------------------------------------------
def pdk_rows(pdk) -> list[tuple[str, object, str]]:
    """(key path, value, source) for every number and layer of a loaded PDK, in file order."""
    rows: list[tuple[str, object, str]] = [
        ("name", pdk.name, ""), ("title", pdk.title, ""),
        ("mask_capable", pdk.mask_capable, ""),
        ("node_nm", pdk.node_nm, pdk.source("node_nm")),
        ("grid_nm", pdk.grid_nm, pdk.source("grid_nm")),
    ]
    if pdk.layers is not None:
        for role in ("via", "top_metal", "below_metal"):
            layer = getattr(pdk.layers, role)
            rows.append((f"layers.{role}", f"{layer.name} {layer.gds_layer}/{layer.gds_datatype}",
                         layer.source))
    for section in _PDK_SECTIONS:
        holder = getattr(pdk, section)
        for f in dataclasses.fields(holder):
            if f.name == "sources":
                continue
            value = getattr(holder, f.name)
            if value is None:
                continue
            rows.append((f"{section}.{f.name}", value, holder.sources.get(f.name, "")))
    return rows


def base_rows(base) -> list[tuple[str, object, str]]:
    """(key path, value, source) for a loaded base array; derived values say 'derived: ...'."""
    here = Path(base.path).name if base.path else "base array"
    rows: list[tuple[str, object, str]] = [
        ("name", base.name, here), ("description", base.description, here),
        ("pdk", base.pdk.name, base.pdk.path or "built-in"), ("max_dies", base.max_dies, here),
    ]
    for section in ("die", "tile_grid", "weight_tile", "datapath", "clock"):
        holder = getattr(base, section)
        for f in dataclasses.fields(holder):
            if f.name == "sources":
                continue
            value = getattr(holder, f.name)
            if isinstance(value, tuple):
                value = list(value)
            source = here
            if section == "datapath" and f.name == "activation_group_size" and value is None:
                source = f"{here} (absent: one activation scale per token vector)"
            if section == "weight_tile" and f.name == "slots_per_bit" and value is None:
                source = f"{here} (does not apply: one via per site)"
            rows.append((f"{section}.{f.name}", value, source))
    for i, block in enumerate(base.sram):
        rows.append((f"sram[{i}]", f"{block.name} {block.purpose} {block.capacity_bytes} B", here))
    tile, grid = base.weight_tile, base.tile_grid
    rows += [
        ("derived.die_area_mm2", round(base.die.area_mm2, 6), "derived: die.width_nm × die.height_nm"),
        ("derived.tiles", grid.tiles, "derived: tile_grid.columns × tile_grid.rows"),
        ("derived.tile_capacity_bits", tile.capacity_bits,
         "derived: sites_x × sites_y × bits_per_site"),
        ("derived.tile_width_nm", tile.width_nm, "derived: (sites_x + 1 tie column) × site_pitch_x_nm"),
        ("derived.tile_height_nm", tile.height_nm, "derived: sites_y × site_pitch_y_nm"),
        ("derived.lines_per_site", tile.lines_per_site,
         f"derived: encoding {tile.encoding} (tie-high-low 2, zero-skip 1, select "
         "2^bits_per_site, ternary 3)"),
        ("derived.die_capacity_bits", grid.tiles * tile.capacity_bits,
         "derived: tiles × tile_capacity_bits"),
    ]
    return rows


def detect_kind(path: Path) -> str:
    """'base' when the YAML mapping has a base-array key at its top, else 'pdk'."""
    from taalasc.config.yamlio import load_yaml_file

    data = load_yaml_file(path)
    if isinstance(data, dict) and _BASE_KEYS & set(k for k in data if isinstance(k, str)):
        return "base"
    return "pdk"


def load_config(name_or_path: str, kind: str = "auto"):
    """Load a PDK or base array by built-in name or path; returns (kind, loaded object)."""
    from taalasc.config import builtin_names, load_base_array, load_pdk
    from taalasc.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(name_or_path, [f"kind must be one of {', '.join(KINDS)}, not {kind!r}"])
    if kind == "auto":
        if name_or_path in builtin_names("pdk"):
            kind = "pdk"
        elif name_or_path in builtin_names("base"):
            kind = "base"
        elif Path(name_or_path).is_file():
            kind = detect_kind(Path(name_or_path))
        else:
            import difflib

            names = builtin_names("pdk") + builtin_names("base")
            hint = difflib.get_close_matches(name_or_path, names, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(name_or_path, [f"no built-in PDK or base array and no file named "
                                             f"{name_or_path!r}{extra}; built-in: "
                                             f"{', '.join(sorted(names))}"])
    return kind, (load_pdk(name_or_path) if kind == "pdk" else load_base_array(name_or_path))


def check_paths(paths: list[Path], kind: str = "auto") -> list[tuple[str, str, list[str]]]:
    """Validate every file; returns (path, kind or '?', problems) per file, in the given order."""
    from taalasc.errors import ConfigError

    results = []
    for path in paths:
        found = "?"
        try:
            found = detect_kind(path) if kind == "auto" else kind
            load_config(str(path), found)
        except ConfigError as exc:
            problems = [p if str(exc.source) == str(path) else f"{exc.source}: {p}"
                        for p in exc.problems]
            results.append((str(path), found, problems))
            continue
        results.append((str(path), found, []))
    return results


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- click part --------------------------------------------------------------------------------
@click.group("configs")
def configs() -> None:
    """List, show and check PDK (pdk_configs/) and base-array (base_array/) YAML files."""


@configs.command("list")
def list_cmd() -> None:
    """List the built-in PDKs and base arrays with one-line summaries."""
    from taalasc.config import builtin_names, load_base_array, load_pdk

    click.echo("PDKs:")
    for name in builtin_names("pdk"):
        pdk = load_pdk(name)
        use = "masks+estimate" if pdk.mask_capable else "estimate only"
        click.echo(f"  {name:<12} {pdk.node_nm:>4} nm  {use:<14}  {pdk.title}")
    click.echo("Base arrays:")
    for name in builtin_names("base"):
        base = load_base_array(name)
        bits = base.tile_grid.tiles * base.weight_tile.capacity_bits
        click.echo(f"  {name:<16} pdk {base.pdk.name:<11} {base.die.area_mm2:8.2f} mm²  "
                   f"{base.tile_grid.tiles:>6} tiles  {bits / 8e6:10.3f} MB of weight bits")


@configs.command("show")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="Whether NAME is a PDK or a base array (auto: built-in name, else file content).")
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text",
              show_default=True, help="Output format.")
def show_cmd(name: str, kind: str, fmt: str) -> None:
    """Print every resolved value of a PDK or base array with its source.

    NAME is a built-in name (see `taalasc configs list`) or a YAML path.
    """
    kind, obj = load_config(name, kind)
    rows = pdk_rows(obj) if kind == "pdk" else base_rows(obj)
    if fmt == "json":
        import json

        click.echo(json.dumps({"kind": kind, "path": obj.path, "values": [
            {"key": k, "value": v, "source": s} for k, v, s in rows]}, indent=2))
        return
    from taalasc.errors import safe_text

    # names, values and sources come from the YAML file: escaped
    click.echo(safe_text(f"{'PDK' if kind == 'pdk' else 'base array'} {obj.name} ({obj.path})"))
    width = max(len(k) for k, _, _ in rows)
    vwidth = min(24, max(len(_fmt(v)) for _, v, _ in rows))
    for key, value, source in rows:
        click.echo(safe_text(f"  {key:<{width}}  {_fmt(value):<{vwidth}}  {source}".rstrip()))


@configs.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="Check every PATH as this kind (auto: decide per file from its keys).")
def check_cmd(paths: tuple[Path, ...], kind: str) -> None:
    """Validate YAML files: exit 0 when all are valid, else 1 listing every problem.

    Each PATH is a PDK or base-array YAML file; with --kind auto the kind is read from its keys.
    """
    from taalasc.errors import safe_text

    results = check_paths(list(paths), kind)
    bad = 0
    for path, found, problems in results:
        if not problems:
            click.echo(safe_text(f"ok  {path} ({found})"))
            continue
        bad += 1
        for problem in problems:  # problems quote keys and values of the file: escaped
            click.echo(safe_text(f"{path}: {problem}"), err=True)
    if bad:
        # Raised, not ctx.exit(1): the CLI entry point turns it into "error: ..." and exit 1.
        from taalasc.errors import ConfigError

        raise ConfigError("configs check", [f"{bad} of {len(results)} file(s) have problems "
                                            "(listed above)"])
