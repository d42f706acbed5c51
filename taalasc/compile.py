"""The compile flow: load → quantize → place → emit masks → report, as plain steps.

Each step takes typed input and returns typed output; this module only joins them and owns
the output folder (staged, then installed atomically). Weights stream tensor by tensor: the
placement is planned from the checkpoint header alone, then each tensor is read, quantized,
packed into its tiles and drawn, and dropped before the next one is read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from taalasc import __version__
from taalasc.config import BaseArray, load_base_array
from taalasc.errors import CheckFailed, ModelError, PlacementError
from taalasc.outdir import MANIFEST, sha256_file, staged_output

FORMATS = ("gds", "oas")


@dataclass(frozen=True)
class CompileOptions:
    base: str = "sky130-demo"
    default_bits: int = 4
    rules: tuple[str, ...] = ()           # 'GLOB=BITS'
    group_size: int | None = 32           # None: one scale per output channel
    auto: bool = False                    # HC1-style 3/6-bit automatic policy
    budget_bits_per_weight: float = 3.5
    formats: tuple[str, ...] = FORMATS
    max_dies: int | None = None
    curve: str = "gilbert-runs"           # tile visiting order, see taalasc.place.curve
    force: bool = False

    def to_json(self) -> dict:
        return {"base": self.base, "default_bits": self.default_bits, "rules": list(self.rules),
                "group_size": self.group_size, "auto": self.auto,
                "budget_bits_per_weight": self.budget_bits_per_weight,
                "formats": list(self.formats), "max_dies": self.max_dies, "curve": self.curve}


@dataclass
class CompileResult:
    out_dir: Path
    manifest: dict
    summary: list[tuple[str, str]] = field(default_factory=list)


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _policy(options: CompileOptions):
    from taalasc.quant import AutoMixed, BitPolicy, parse_rule

    auto = AutoMixed(budget_bits_per_weight=options.budget_bits_per_weight) if options.auto else None
    return BitPolicy(default_bits=options.default_bits,
                     rules=tuple(parse_rule(r) for r in options.rules),
                     group_size=options.group_size, auto=auto)


def _inputs(ckpt, base: BaseArray, options: CompileOptions) -> dict:
    files = [{"name": Path(f).name, "bytes": Path(f).stat().st_size, "sha256": sha256_file(Path(f))}
             for f in ckpt.files]
    config = None if ckpt.config is None else hashlib.sha256(
        json.dumps(ckpt.config, sort_keys=True).encode()).hexdigest()
    return {
        "model": {"files": files, "config_sha256": config, "architecture": ckpt.architecture},
        "base_array": {"name": base.name, "sha256": sha256_file(Path(base.path))},
        "pdk": {"name": base.pdk.name, "sha256": sha256_file(Path(base.pdk.path))},
        "options": options.to_json(),
        "tool": {"name": "taalasc", "version": __version__},
    }


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def plan(model: Path, options: CompileOptions):
    """Header-only steps: base array, checkpoint, bits per tensor, placement. Writes nothing."""
    from taalasc.model import open_checkpoint
    from taalasc.place.plan import TensorSpec, plan_placement
    from taalasc.quant import assign_bits

    base = load_base_array(options.base)
    if not base.pdk.mask_capable:
        raise PlacementError(f"base array {base.name!r} is on {base.pdk.name}, an estimation-only "
                             "PDK with no public mask layers; use `taalasc estimate` for it")
    for fmt in options.formats:
        if fmt not in FORMATS:
            raise PlacementError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    ckpt = open_checkpoint(model)
    specs = assign_bits(ckpt, _policy(options))
    tensors = []
    for name, info in ckpt.tensors.items():
        if len(info.shape) not in (1, 2) or info.numel == 0:
            raise ModelError(f"{name}: shape {list(info.shape)} cannot be placed; taalasc places "
                             "non-empty 1-D vectors and 2-D weight matrices")
        spec = specs.get(name)
        tensors.append(TensorSpec(name=name, shape=tuple(info.shape),
                                  bits=spec.bits if spec else None,
                                  group_size=spec.group_size if spec else None,
                                  layer=ckpt.layer_of(name)))
    placement = plan_placement(tensors, base, max_dies=options.max_dies, curve=options.curve)
    return base, ckpt, specs, tensors, placement


def compile_model(model: Path, out_dir: Path, options: CompileOptions,
                  progress: Progress | None = None) -> CompileResult:
    """Compile ``model`` onto ``options.base`` and install the mask set in ``out_dir``."""
    from taalasc.emit.writer import DieMaskWriter, layer_properties_lyp
    from taalasc.place.metrics import placement_stats, rowmajor_wirelength_nm
    from taalasc.place.overview import overview_png
    from taalasc.place.pack import pack_segment
    from taalasc.quant import quantize_tensor

    base, ckpt, specs, tensors, placement = plan(Path(model), options)
    inputs = _inputs(ckpt, base, options)
    digest = _digest(inputs)
    tick = progress or (lambda stage, done, total: None)

    with staged_output(Path(out_dir), inputs_digest=digest, force=options.force) as stage:
        writers = {die: DieMaskWriter(base, die, stage, stem=f"die{die}", formats=options.formats)
                   for die in range(placement.dies)}
        quant_stats: dict[str, dict] = {}
        names = list(ckpt.tensors)
        for done, name in enumerate(names):
            values = ckpt.read(name)
            spec = specs.get(name)
            if spec is not None:
                source = quantize_tensor(name, values, spec)
                quant_stats[name] = {"bits": source.bits, "group_size": source.group_size,
                                     "sqnr_db": _json_float(source.sqnr_db)}
            else:
                source = _as_fp16_vector(name, values)
            del values
            for slot, segment in placement.tiles_of(name):
                writers[slot.die].add_tile(slot.column, slot.row, pack_segment(segment, source))
            tick("tensors", done + 1, len(names))
        for a, b in placement.links:
            writers[a.die].add_route((a.column, a.row), (b.column, b.row))
        dies = [writers[d].close() for d in sorted(writers)]
        _rule_check(base, dies, tick)
        (stage / f"{base.pdk.name}.lyp").write_text(layer_properties_lyp(base.pdk))
        legend = overview_png(placement, base, stage / "overview.png")
        report = _report(base, ckpt, specs, placement, dies)
        report.write(stage / "report.json")
        (stage / "report.md").write_text(report.to_markdown())
        manifest = _manifest(inputs, digest, placement, quant_stats, dies, legend, stage)
        manifest["placement_stats"] = placement_stats(placement, base) | {
            "place__wirelength_rowmajor_nm": rowmajor_wirelength_nm(
                tensors, base, max_dies=options.max_dies)}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return CompileResult(out_dir=Path(out_dir), manifest=manifest, summary=_summary(manifest))


def _rule_check(base: BaseArray, dies, tick: Progress) -> None:
    """Read every written die back and check it against the PDK rules; any violation fails."""
    from taalasc.emit.drc import check_file

    die_nm = (base.die.width_nm, base.die.height_nm)
    for done, die in enumerate(dies):
        path = die.files.get("oas", die.files.get("gds"))
        violations = check_file(path, base.pdk, die_nm)
        if violations:
            first = violations[0]
            raise CheckFailed(f"die {die.die}: {len(violations)} rule violations in the emitted "
                              f"masks, first: {first.rule} at ({first.x_nm}, {first.y_nm}) nm: "
                              f"{first.message}")
        tick("rule check", done + 1, len(dies))


def longest_link_nm(placement, base: BaseArray) -> int:
    """Longest dataflow link, tile centre to tile centre, Manhattan (the drawn route's span)."""
    grid = base.tile_grid
    return max((abs(a.column - b.column) * grid.pitch_x_nm + abs(a.row - b.row) * grid.pitch_y_nm
                for a, b in placement.links), default=0)


def _report(base: BaseArray, ckpt, specs, placement, dies):
    from taalasc.report import PlacementFacts, report_for_compile

    facts = PlacementFacts(
        tiles_used=placement.tiles_used, dies=placement.dies,
        longest_route_nm=longest_link_nm(placement, base),
        via_count=sum(d.via_count for d in dies),
        top_metal_shape_count=sum(d.top_metal_shapes + d.fill_shapes for d in dies))
    shapes = {name: tuple(info.shape) for name, info in ckpt.tensors.items()}
    return report_for_compile(base, shapes, specs, facts, config=ckpt.config,
                              name=Path(ckpt.path).name)


def _as_fp16_vector(name: str, values: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values.ravel()))[0])
        raise ModelError(f"{name}: element {bad} is {values.ravel()[bad]}; weights must be finite")
    vector = values.astype(np.float16)
    if not np.all(np.isfinite(vector)):
        bad = int(np.flatnonzero(~np.isfinite(vector.ravel()))[0])
        raise ModelError(f"{name}: element {bad} = {values.ravel()[bad]:g} overflows fp16, "
                         "the format the chip stores vectors in")
    return vector.reshape(1, -1)


def _json_float(value: float):
    return None if not np.isfinite(value) else round(float(value), 4)


def _manifest(inputs, digest, placement, quant_stats, dies, legend, stage: Path) -> dict:
    files = {}
    for path in sorted(p for p in stage.iterdir() if p.is_file() and p.name != MANIFEST):
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {
        "format": "taalasc-manifest/1",
        "inputs": inputs,
        "inputs_digest": digest,
        "placement": placement.to_json(),
        "quantization": quant_stats,
        "dies": [{"die": d.die, "via_count": d.via_count, "bit_vias": d.bit_vias,
                  "route_vias": d.route_vias, "top_metal_shapes": d.top_metal_shapes,
                  "fill_shapes": d.fill_shapes,
                  "density_min_pct": round(d.density_min_pct, 3),
                  "density_max_pct": round(d.density_max_pct, 3),
                  "files": {fmt: Path(p).name for fmt, p in sorted(d.files.items())}}
                 for d in dies],
        "overview_legend": [[list(map(int, colour)), label] for colour, label in legend],
        "outputs": files,
    }


def _summary(manifest: dict) -> list[tuple[str, str]]:
    dies = manifest["dies"]
    bits = sum(d["bit_vias"] for d in dies)
    rows = [("dies", str(len(dies))),
            ("tiles used", str(len(manifest["placement"]["assignments"]))),
            ("programmed bits (vias)", f"{bits:,}"),
            ("route vias", f"{sum(d['route_vias'] for d in dies):,}")]
    for name, info in manifest["outputs"].items():
        if name.endswith((".gds", ".oas")):
            rows.append((name, f"{info['bytes']:,} bytes ({info['bytes'] / max(bits, 1):.3f} B/bit)"))
    return rows
