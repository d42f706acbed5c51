"""Process descriptions (pdk_configs/*.yaml).

Every number in a PDK file is written ``{value: X, source: "..."}``: the public document or
repository path it was read from, or an explicit ``estimate: ...`` with its reasoning for
advanced nodes whose rules are not public. Units are in the key names.

A PDK with ``mask_capable: true`` has public GDS layer numbers and design rules, so taalasc
can draw masks on it; the others (ASAP7, the N6-class entry) are for ``estimate`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from taalasc.config.records import build
from taalasc.config.schema import Field, check_identifier, validate
from taalasc.config.yamlio import load_yaml_file
from taalasc.errors import ConfigError


def _num(kind: str = "float", *, min: float | None = 0.0, exclusive: bool = True,
         required: bool = True, doc: str = "", max: float | None = None) -> Field:
    return Field(kind, min=min, min_exclusive=exclusive, max=max, sourced=True,
                 required=required, doc=doc)


LAYER_SCHEMA = {
    "name": Field("str", doc="the PDK's own layer name, e.g. via4"),
    "gds_layer": Field("int", min=0, max=65535),
    "gds_datatype": Field("int", min=0, max=65535),
    "source": Field("str"),
    "note": Field("str", required=False),
}

PDK_SCHEMA: dict[str, Field] = {
    "name": Field("str", doc="short identifier, e.g. sky130", check=check_identifier),
    "title": Field("str"),
    "mask_capable": Field("bool", doc="true when public layer numbers and rules allow drawing masks"),
    "node_nm": _num("int"),
    "grid_nm": _num("int", doc="manufacturing grid"),
    "layers": Field("map", required=False, schema={
        "via": Field("map", schema=LAYER_SCHEMA, doc="the custom top via layer"),
        "top_metal": Field("map", schema=LAYER_SCHEMA, doc="the custom top metal layer"),
        "below_metal": Field("map", schema=LAYER_SCHEMA, doc="the prefabricated metal under the via"),
        "top_metal_fill": Field("map", schema=LAYER_SCHEMA,
                                doc="the top metal's fill (dummy) layer: density fill goes "
                                    "there, so extraction and foundry fill flows know it"),
        "boundary": Field("map", schema=LAYER_SCHEMA,
                          doc="the die (place-and-route) boundary merge tools align to"),
        "top_metal_label": Field("map", schema=LAYER_SCHEMA, required=False,
                                 doc="the top metal's label (text) layer: the straps' nets "
                                     "and the die name are written there when it is given"),
    }),
    "rules": Field("map", schema={
        "via_size_nm": _num("int"),
        "via_space_nm": _num("int"),
        "via_array_space_nm": _num("int", required=False,
                                   doc="larger spacing inside big via arrays, where the PDK has one"),
        "via_enclosure_below_nm": _num("int", min=0, exclusive=False),
        "via_enclosure_top_nm": _num("int", min=0, exclusive=False),
        "top_metal_width_nm": _num("int"),
        "top_metal_space_nm": _num("int"),
        "top_metal_min_area_um2": _num(min=0, exclusive=False),
        "top_metal_density_min_pct": _num(min=0, exclusive=False, max=100),
        "top_metal_density_max_pct": _num(max=100),
        "density_window_um": _num(),
        "density_step_um": _num(),
        # Fill (dummy) shapes on the fill datatype, where the PDK rules them apart from drawn
        # metal (IHP TopMetal2:filler); absent: fill follows the drawn metal's rules.
        "fill_width_min_nm": _num("int", required=False, doc="smallest fill shape side"),
        "fill_width_max_nm": _num("int", required=False,
                                  doc="largest fill shape extent (its bounding box)"),
        "fill_space_nm": _num("int", required=False, doc="fill to fill spacing"),
        "fill_to_metal_space_nm": _num("int", required=False,
                                       doc="fill to drawn top metal spacing"),
        # Wide-metal spacing (IHP TM2.bR): a line at least this wide needs more space to a
        # neighbour it runs beside for longer than the run length.
        "top_metal_wide_width_nm": _num("int", required=False),
        "top_metal_wide_run_nm": _num("int", required=False),
        "top_metal_wide_space_nm": _num("int", required=False),
    }),
    "electrical": Field("map", schema={
        "supply_v": _num(),
        "below_metal_sheet_res_ohm_per_sq": _num(),
        "top_metal_sheet_res_ohm_per_sq": _num(),
        "via_res_ohm": _num(),
        "top_metal_cap_ff_per_um": _num(),
    }),
    "cells": Field("map", schema={
        "nand2_area_um2": _num(),
        "full_adder_area_um2": _num(),
        "full_adder_delay_ps": _num(),
        "full_adder_switched_cap_ff": _num(doc="effective capacitance switched per full-adder toggle"),
        "full_adder_leakage_nw": _num(min=0, exclusive=False),
        "full_adder_transistors": _num("int"),
        "dff_area_um2": _num(),
        "dff_clk_to_q_ps": _num(),
        "dff_setup_ps": _num(),
        "dff_switched_cap_ff": _num(),
        "dff_leakage_nw": _num(min=0, exclusive=False),
        "dff_transistors": _num("int"),
    }),
    "sram": Field("map", schema={
        "bitcell_area_um2": _num(),
        "array_efficiency": _num(max=1.0, doc="bit-cell area / macro area"),
        "bitcell_leakage_pw": _num(min=0, exclusive=False),
        "read_energy_fj_per_bit": _num(),
        "bitcell_transistors": _num("int"),
    }),
    "cost": Field("map", schema={
        "wafer_diameter_mm": _num(),
        "edge_exclusion_mm": _num(min=0, exclusive=False),
        "scribe_um": _num(min=0, exclusive=False, doc="saw street added to each die edge"),
        "wafer_cost_usd": _num(),
        "defect_density_per_cm2": _num(min=0, exclusive=False),
        "cluster_alpha": _num(doc="negative-binomial clustering parameter"),
        "mask_count": _num("int", doc="masks in a full set"),
        "mask_set_cost_usd": _num(),
        "via_mask_cost_usd": _num(),
        "top_metal_mask_cost_usd": _num(),
    }),
}


@dataclass(frozen=True)
class Layer:
    name: str
    gds_layer: int
    gds_datatype: int
    source: str
    note: str | None = None


@dataclass(frozen=True)
class Layers:
    via: Layer
    top_metal: Layer
    below_metal: Layer
    top_metal_fill: Layer
    boundary: Layer
    top_metal_label: Layer | None = None   # texts only: strap nets and the die name


@dataclass(frozen=True)
class Rules:
    via_size_nm: int
    via_space_nm: int
    via_array_space_nm: int | None
    via_enclosure_below_nm: int
    via_enclosure_top_nm: int
    top_metal_width_nm: int
    top_metal_space_nm: int
    top_metal_min_area_um2: float
    top_metal_density_min_pct: float
    top_metal_density_max_pct: float
    density_window_um: float
    density_step_um: float
    fill_width_min_nm: int | None = None
    fill_width_max_nm: int | None = None
    fill_space_nm: int | None = None
    fill_to_metal_space_nm: int | None = None
    top_metal_wide_width_nm: int | None = None
    top_metal_wide_run_nm: int | None = None
    top_metal_wide_space_nm: int | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fill_space(self) -> int:
        """Fill to fill spacing, nm (the drawn metal's where the PDK has no fill rule)."""
        return self.fill_space_nm or self.top_metal_space_nm

    @property
    def fill_clearance(self) -> int:
        """Fill to drawn top metal (and to the base's metal in keep-outs) spacing, nm."""
        return self.fill_to_metal_space_nm or self.top_metal_space_nm


@dataclass(frozen=True)
class Electrical:
    supply_v: float
    below_metal_sheet_res_ohm_per_sq: float
    top_metal_sheet_res_ohm_per_sq: float
    via_res_ohm: float
    top_metal_cap_ff_per_um: float
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Cells:
    nand2_area_um2: float
    full_adder_area_um2: float
    full_adder_delay_ps: float
    full_adder_switched_cap_ff: float
    full_adder_leakage_nw: float
    full_adder_transistors: int
    dff_area_um2: float
    dff_clk_to_q_ps: float
    dff_setup_ps: float
    dff_switched_cap_ff: float
    dff_leakage_nw: float
    dff_transistors: int
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Sram:
    bitcell_area_um2: float
    array_efficiency: float
    bitcell_leakage_pw: float
    read_energy_fj_per_bit: float
    bitcell_transistors: int
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Cost:
    wafer_diameter_mm: float
    edge_exclusion_mm: float
    scribe_um: float
    wafer_cost_usd: float
    defect_density_per_cm2: float
    cluster_alpha: float
    mask_count: int
    mask_set_cost_usd: float
    via_mask_cost_usd: float
    top_metal_mask_cost_usd: float
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Pdk:
    name: str
    title: str
    mask_capable: bool
    node_nm: int
    grid_nm: int
    layers: Layers | None
    rules: Rules
    electrical: Electrical
    cells: Cells
    sram: Sram
    cost: Cost
    path: str = ""
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, dotted: str) -> str:
        """The public source of a number, by key path (``rules.via_size_nm``)."""
        section, _, key = dotted.rpartition(".")
        holder = getattr(self, section) if section else self
        return holder.sources.get(key, "")


def pdk_from_mapping(data: object, source: str) -> Pdk:
    values, problems = validate(data, PDK_SCHEMA)
    if values is not None:
        problems = _consistency(values)
    if problems:
        raise ConfigError(source, problems)
    assert values is not None
    layers = None
    if values["layers"] is not None:
        layers = Layers(**{k: Layer(**v) for k, v in values["layers"].items() if v is not None})
    return build(
        Pdk, values, path=source, layers=layers,
        rules=build(Rules, values["rules"]),
        electrical=build(Electrical, values["electrical"]),
        cells=build(Cells, values["cells"]),
        sram=build(Sram, values["sram"]),
        cost=build(Cost, values["cost"]),
    )


def _consistency(values: dict) -> list[str]:
    problems = []
    if values["mask_capable"] and values["layers"] is None:
        problems.append("layers: is required when mask_capable is true")
    owner: dict[tuple[int, int], str] = {}
    for key, layer in (values["layers"] or {}).items():
        if layer is None:
            continue
        pair = (layer["gds_layer"], layer["gds_datatype"])
        if pair in owner:   # one layer/datatype read back as two roles cannot be told apart
            problems.append(f"layers.{key}: {pair[0]}/{pair[1]} is also layers.{owner[pair]}'s; "
                            "each layer key needs its own layer/datatype")
        owner.setdefault(pair, key)
    rules = values["rules"]
    grid = values["grid_nm"].value
    for key in ("via_size_nm", "via_space_nm", "top_metal_width_nm", "top_metal_space_nm",
                "via_enclosure_below_nm", "via_enclosure_top_nm", "via_array_space_nm"):
        item = rules.get(key)
        if item is not None and item.value % grid:
            problems.append(f"rules.{key}: {item.value} nm is not on the {grid} nm grid")
    lo, hi = rules["top_metal_density_min_pct"].value, rules["top_metal_density_max_pct"].value
    if lo >= hi:
        problems.append(f"rules.top_metal_density_min_pct: {lo} must be below "
                        f"top_metal_density_max_pct {hi}")
    if rules["density_step_um"].value > rules["density_window_um"].value:
        problems.append("rules.density_step_um: must not exceed density_window_um")
    cost = values["cost"]
    if cost["edge_exclusion_mm"].value * 2 >= cost["wafer_diameter_mm"].value:
        problems.append("cost.edge_exclusion_mm: leaves no usable wafer")
    return problems


def load_pdk_file(path: Path) -> Pdk:
    return pdk_from_mapping(load_yaml_file(path), str(path))
