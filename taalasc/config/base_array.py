"""Base chip descriptions (base_array/*.yaml): the prefabricated grid every model shares.

Geometry is in integer nanometres (one database unit = 1 nm in the mask files). The default
weight-tile encoding is DESIGN.md's: each bit site owns two via slots under two top-metal
straps, tie-high and tie-low, and a programmed bit is exactly one via.

``weight_tile.encoding`` chooses how a site stores a weight (ENCODINGS). Every site is a
via pitch wide along x and holds ``lines_per_site`` custom-metal lines along y, one via
choosing one of them:
  tie-high-low  2 lines (tie-high, tie-low) per site, one bit per site, one via per bit;
  zero-skip     1 line per site, one bit per site: a 1 is a via, a 0 is no via (the base
                holds an unconnected site at 0), so vias follow the nonzero bits;
  select        2^s lines per site, s = bits_per_site: one via picks one of the 2^s product
                lines of a shared bank that holds activation × every s-bit code value; a
                b-bit weight takes ceil(b / s) sites (digits);
  ternary       3 lines (+x, 0, −x) per site, one weight {−1, 0, +1} per site (a 2-bit code,
                bits_per_site 2), BitNet-style with per-group scales.
The mask writer draws all four (custom/geometry.py: the lines, and the via of each site on
the line its digit picks); `taalasc estimate` models their area, cycles and energy
(taalasc/report/encoding.py). The base die (`taalasc base build`, merge, sign-off) is drawn
for tie-high-low only (BASE_DIE_ENCODINGS): the others need the base's product-bank and
activation ports under their lines, which no recipe draws yet.

Site layout inside a weight tile (tile origin at its lower-left corner):
  site (i, j), i < sites_x along x, j < sites_y along y, at
  (i * site_pitch_x_nm, j * site_pitch_y_nm) from the tile origin.
  The high strap of site row j is centred at y = j*site_pitch_y_nm + site_pitch_y_nm/4,
  the low strap at y = j*site_pitch_y_nm + 3*site_pitch_y_nm/4; both run the tile's width.
  A via is centred at x = i*site_pitch_x_nm + site_pitch_x_nm/2 on the strap of its value.
  (tie-high-low; the other encodings' lines run the tile's width too, lines_per_site of
  them side by side in a site row.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taalasc.config.pdk import Pdk
from taalasc.config.records import build
from taalasc.config.schema import INT32_MAX, Field, check_identifier, validate
from taalasc.errors import ConfigError


def _pos(kind: str = "int", doc: str = "", required: bool = True, default=None) -> Field:
    return Field(kind, min=0, min_exclusive=True, doc=doc, required=required, default=default)


# Sizes a base array may claim. A YAML file of a few lines can describe a 2 m die with 10**12
# tiles that validates by every other rule; these bounds keep what taalasc builds from it
# (a curve over every tile of a die, the arrays of one tile's sites) to megabytes.
#
# A die is printed in one exposure field: step-and-scan scanners (ASML NXT/NXE, Nikon NSR-S,
# Canon FPA) expose at most 26 x 33 mm on the wafer, the "reticle limit" of 858 mm² that the
# largest dies (NVIDIA H100/B200: ~814 mm² each) are made to fit. The check bounds the area
# and the longer side; it does not ask for the 26 mm short side, because the hc1-n6 estimate
# base models HC1's published 815 mm² as a 28.55 mm square (HC1's real outline is not public).
RETICLE_FIELD_NM = (26_000_000, 33_000_000)
# Placement walks a space-filling curve over every tile of a die: ~150 bytes and ~10 us a
# tile (measured: 2**20 tiles take 150 MB and 10 s), so 2**18 tiles cost ~40 MB and ~3 s.
# The densest built-in base, hc1-n6, has 39,000 tiles.
MAX_TILES_PER_DIE = 1 << 18
# The sites of a tile are drawn together as numpy arrays; the largest built-in tile (hc1-n6)
# has 2**20 sites (1 Mbit).
MAX_SITES_PER_TILE = 1 << 22
# 65,536 full-reticle dies are ~56 m² of silicon, ~800 300-mm wafers; no model is printed on
# more. --die selections are bounded by the same number before the placement is known.
MAX_DIES = 1 << 16


ENCODINGS = ("tie-high-low", "zero-skip", "select", "ternary")
BASE_DIE_ENCODINGS = ("tie-high-low",)
# A select site holds 2^s lines; 16 (4-bit digits) is the widest bank the patent reading
# calls tractable ("16 products to broadcast is tractable, 256 is not").
MAX_SELECT_BITS = 4


def _check_power_of_two(value: int) -> str | None:
    if value & (value - 1):
        return f"must be a power of two, not {value!r}"
    return None


BASE_ARRAY_SCHEMA: dict[str, Field] = {
    "name": Field("str", check=check_identifier),
    "description": Field("str"),
    "pdk": Field("str", doc="a name from pdk_configs/ or a path to a PDK YAML"),
    "max_dies": Field("int", min=0, min_exclusive=True, max=MAX_DIES,
                      doc="how many dies a model may spill onto"),
    "die": Field("map", schema={
        "width_nm": _pos(),
        "height_nm": _pos(),
    }),
    "tile_grid": Field("map", schema={
        "origin_nm": Field("list", items=Field("int", min=0), doc="[x, y] of tile (0, 0)"),
        "columns": _pos(),
        "rows": _pos(),
        "pitch_x_nm": _pos(),
        "pitch_y_nm": _pos(),
    }),
    "weight_tile": Field("map", schema={
        "encoding": Field("str", choices=ENCODINGS,
                          doc="how a site stores a weight (see the module docstring)"),
        "sites_x": _pos(),
        "sites_y": _pos(),
        "site_pitch_x_nm": _pos(),
        "site_pitch_y_nm": _pos(),
        "slots_per_bit": Field("int", required=False, default=None, choices=(1, 2),
                               doc="via slots per bit: 2 for tie-high-low, 1 for zero-skip; "
                                   "absent for select and ternary (one via per site)"),
        "bits_per_site": Field("int", min=1, max=MAX_SELECT_BITS,
                               doc="1 for tie-high-low and zero-skip, the digit width s for "
                                   "select (2^s lines), 2 for ternary"),
        "strap_width_nm": _pos(),
        "input_lanes": _pos(doc="activations entering the tile per cycle (adder-tree inputs)"),
        "max_weight_bits": Field("int", min=2, max=8),
        "tie_columns": Field("int", required=False, default=1, min=1, max=8,
                             doc="site columns right of the bit sites: the tie vias, and the "
                                 "base's two supply rails under them"),
    }),
    "datapath": Field("map", schema={
        "activation_bits": Field("int", min=2, max=16),
        "accumulator_bits": Field("int", min=8, max=64),
        "activity_factor": Field("float", min=0, max=1, min_exclusive=True,
                                 doc="average toggle probability of datapath nodes"),
        "route_width_nm": _pos(doc="top-metal dataflow route width"),
        "route_bus_bits": _pos(doc="wires per inter-tile dataflow bus"),
        "activation_group_size": Field(
            "int", required=False, default=None, min=8, check=_check_power_of_two,
            doc="inputs that share one activation scale: the chip quantizes each group of this "
                "many consecutive inputs with its own absmax scale; absent or null = one scale "
                "per token vector"),
    }),
    "clock": Field("map", schema={
        "target_period_ps": _pos(),
        "pipeline_stages_per_layer": _pos(),
    }),
    "frame": Field("map", required=False, default=None, schema={
        "seal_ring_nm": _pos(doc="width of the seal ring along the die edge"),
        "pad_ring_nm": _pos(doc="width of the pad ring inside the seal ring: pads, I/O cells "
                                "and the supply ring, all on the top metal too"),
    }, doc="the die's edge structures, kept clear of the custom layers (fill included)"),
    "keep_outs": Field("list", required=False, default=[],
                       items=Field("list", items=Field("int", min=0)),
                       doc="further [x0, y0, x1, y1] nm areas the custom layers leave empty"),
    "sram": Field("list", items=Field("map", schema={
        "name": Field("str"),
        "purpose": Field("str", choices=("kv_cache", "lora", "scratch")),
        "capacity_bytes": _pos(),
    })),
}


@dataclass(frozen=True)
class Die:
    width_nm: int
    height_nm: int

    @property
    def area_mm2(self) -> float:
        return self.width_nm * self.height_nm * 1e-12


@dataclass(frozen=True)
class TileGrid:
    origin_nm: tuple[int, int]
    columns: int
    rows: int
    pitch_x_nm: int
    pitch_y_nm: int

    @property
    def tiles(self) -> int:
        return self.columns * self.rows

    def tile_origin_nm(self, column: int, row: int) -> tuple[int, int]:
        return (self.origin_nm[0] + column * self.pitch_x_nm,
                self.origin_nm[1] + row * self.pitch_y_nm)


@dataclass(frozen=True)
class WeightTile:
    encoding: str
    sites_x: int
    sites_y: int
    site_pitch_x_nm: int
    site_pitch_y_nm: int
    slots_per_bit: int | None
    bits_per_site: int
    strap_width_nm: int
    input_lanes: int
    max_weight_bits: int
    tie_columns: int = 1   # site columns right of the bit sites that hold the tie vias

    @property
    def sites(self) -> int:
        return self.sites_x * self.sites_y

    @property
    def capacity_bits(self) -> int:
        return self.sites * self.bits_per_site

    @property
    def lines_per_site(self) -> int:
        """Custom-metal lines crossing one site; its one via lands on one of them."""
        return {"tie-high-low": 2, "zero-skip": 1, "ternary": 3}.get(
            self.encoding, 2 ** self.bits_per_site)

    def sites_per_weight(self, bits: int) -> int:
        """Sites one weight of ``bits`` bits takes: one per bit (tie-high-low, zero-skip),
        one per s-bit digit (select), one (ternary)."""
        if self.encoding == "select":
            return -(-bits // self.bits_per_site)
        return 1 if self.encoding == "ternary" else bits

    @property
    def site_bits(self) -> int:
        """Width d of the digit one site stores: 1 (tie-high-low, zero-skip), 2 (ternary: the
        2-bit code -1, 0 or +1), s (select). A stored value of b bits takes ceil(b / d) sites,
        digit k being its bits d*k .. d*k + d - 1, least significant digit first."""
        return {"tie-high-low": 1, "zero-skip": 1}.get(self.encoding, self.bits_per_site)

    def digit_bits(self, kind: str) -> int:
        """Digit width of a segment ``kind``: codes use ``site_bits``; constants (scales,
        mins, vectors) use ``constant_bits_per_site`` (one bit per ternary site)."""
        return self.site_bits if kind == "codes" else self.constant_bits_per_site

    @property
    def line_of_value(self) -> tuple[int, ...]:
        """The line a site's via lands on, per digit value 0 .. 2**site_bits - 1; -1 = no via
        (zero-skip's 0), -2 = a value the encoding cannot store (ternary's code -2).
        Lines are numbered from the bottom of the site row (``line_y_nm``):
          tie-high-low  bit 1 on line 0 (tie-high, VPWR), bit 0 on line 1 (tie-low, VGND);
          zero-skip     bit 1 on line 0 (VPWR), bit 0 no via;
          select        digit j on line j (the product line x * j of the site row's lane);
          ternary       +1 on line 0 (+x), 0 on line 1 (0, VGND), -1 (code 3) on line 2 (-x).
        A constant's digit on a ternary site is one bit: its values 0 and 1 use the same lines."""
        if self.encoding == "tie-high-low":
            return (1, 0)
        if self.encoding == "zero-skip":
            return (-1, 0)
        if self.encoding == "ternary":
            return (1, 0, -2, 2)
        return tuple(range(1 << self.bits_per_site))

    @property
    def line_nets(self) -> tuple[str, ...]:
        """The net of each line of a site row, line 0 first: the supply rails, or the ports
        of the tile's product bank (select) and activation drivers (ternary) in the base."""
        if self.encoding == "tie-high-low":
            return ("VPWR", "VGND")
        if self.encoding == "zero-skip":
            return ("VPWR",)
        if self.encoding == "ternary":
            return ("XP", "VGND", "XN")
        return tuple(f"P{j}" for j in range(1 << self.bits_per_site))

    @property
    def chunk_sites(self) -> int:
        """Sites per chunk cell of the writer: 8 // site_bits, so a chunk's digits are at most
        8 bits and its patterns at most 256 (custom/tiles.py numbers them)."""
        return 8 // self.site_bits

    @property
    def constant_bits_per_site(self) -> int:
        """Bits of a constant (norms, biases, scales) one site stores: a ternary site's three
        lines hold one bit (floor(log2 3)); the others hold bits_per_site."""
        return 1 if self.encoding == "ternary" else self.bits_per_site

    @property
    def width_nm(self) -> int:
        """Bit sites plus the tie columns (see ``tie_slot_x_nm``)."""
        return (self.sites_x + self.tie_columns) * self.site_pitch_x_nm

    @property
    def height_nm(self) -> int:
        return self.sites_y * self.site_pitch_y_nm

    def line_y_nm(self, site_row: int, line: int) -> int:
        """Centre of line ``line`` (0 at the bottom) of a site row, tile-relative: the
        lines_per_site lines split the site pitch evenly."""
        lines = self.lines_per_site
        return site_row * self.site_pitch_y_nm + (2 * line + 1) * self.site_pitch_y_nm // (2 * lines)

    def strap_y_nm(self, site_row: int, high: bool) -> int:
        """Centre line of the high (bit 1) or low (bit 0) strap of a tie-high-low site row."""
        return self.line_y_nm(site_row, 0 if high else 1)

    def slot_x_nm(self, site_column: int) -> int:
        return site_column * self.site_pitch_x_nm + self.site_pitch_x_nm // 2

    @property
    def tie_slot_x_nm(self) -> int:
        """Centre of the tie vias: one column right of the last bit site, where every strap
        (extended over it) gets one via down to its rail, VPWR under the high strap and VGND
        under the low one. Without it a strap is an isolated bar: the top metal can reach
        the base chip only through the custom via layer. One tie per strap, at one end, so
        a strap cut in two leaves a floating piece that extraction can find."""
        return self.slot_x_nm(self.sites_x)


@dataclass(frozen=True)
class Datapath:
    activation_bits: int
    accumulator_bits: int
    activity_factor: float
    route_width_nm: int
    route_bus_bits: int
    # Inputs per activation scale (a power of two >= 8); None = one scale per token vector.
    activation_group_size: int | None = None


@dataclass(frozen=True)
class Clock:
    target_period_ps: int
    pipeline_stages_per_layer: int


@dataclass(frozen=True)
class SramBlock:
    name: str
    purpose: str
    capacity_bytes: int


@dataclass(frozen=True)
class Frame:
    seal_ring_nm: int
    pad_ring_nm: int

    def rects_nm(self, die: Die) -> list[tuple[int, int, int, int]]:
        """The ring (seal + pad) as four rectangles: bottom, top, left, right."""
        w, W, H = self.seal_ring_nm + self.pad_ring_nm, die.width_nm, die.height_nm
        return [(0, 0, W, w), (0, H - w, W, H), (0, w, w, H - w), (W - w, w, W, H - w)]


@dataclass(frozen=True)
class BaseArray:
    name: str
    description: str
    pdk: Pdk
    max_dies: int
    die: Die
    tile_grid: TileGrid
    weight_tile: WeightTile
    datapath: Datapath
    clock: Clock
    sram: tuple[SramBlock, ...]
    frame: Frame | None = None
    keep_outs: tuple[tuple[int, int, int, int], ...] = ()
    path: str = ""
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sram_bytes(self, purpose: str) -> int:
        return sum(b.capacity_bytes for b in self.sram if b.purpose == purpose)

    @property
    def keep_out_rects_nm(self) -> list[tuple[int, int, int, int]]:
        """Where the custom layers draw nothing: the frame's ring plus the ``keep_outs``."""
        return (self.frame.rects_nm(self.die) if self.frame else []) + list(self.keep_outs)


def _with_default_slots(tile: dict) -> dict:
    """slots_per_bit left out: 2 for tie-high-low, 1 for zero-skip (one via per site for
    select and ternary, where it does not apply)."""
    if tile.get("slots_per_bit") is None:
        tile = {**tile, "slots_per_bit": {"tie-high-low": 2, "zero-skip": 1}.get(
            tile.get("encoding"))}
    return tile


def base_array_from_mapping(data: object, source: str, resolve_pdk) -> BaseArray:
    """Validate a base-array mapping. ``resolve_pdk(name_or_path, key_path)`` loads its PDK."""
    values, problems = validate(data, BASE_ARRAY_SCHEMA)
    if values is None:
        raise ConfigError(source, problems)
    grid = values["tile_grid"]
    if len(grid["origin_nm"]) != 2:
        raise ConfigError(source, ["tile_grid.origin_nm: must be [x, y], "
                                   f"not a list of {len(grid['origin_nm'])}"])
    pdk = resolve_pdk(values["pdk"], "pdk")
    base = BaseArray(
        name=values["name"], description=values["description"], pdk=pdk,
        max_dies=values["max_dies"], die=Die(**values["die"]),
        tile_grid=TileGrid(origin_nm=(grid["origin_nm"][0], grid["origin_nm"][1]),
                           columns=grid["columns"], rows=grid["rows"],
                           pitch_x_nm=grid["pitch_x_nm"], pitch_y_nm=grid["pitch_y_nm"]),
        weight_tile=build(WeightTile, _with_default_slots(values["weight_tile"])),
        datapath=build(Datapath, values["datapath"]),
        clock=build(Clock, values["clock"]),
        sram=tuple(SramBlock(**b) for b in values["sram"]),
        frame=None if values["frame"] is None else Frame(**values["frame"]),
        keep_outs=tuple(tuple(k) for k in values["keep_outs"]),
        path=source,
    )
    problems = [f"keep_outs[{k}]: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, not "
                f"{list(r)}" for k, r in enumerate(base.keep_outs)
                if len(r) != 4 or not (r[0] < r[2] and r[1] < r[3])]
    if problems:
        raise ConfigError(source, problems)
    # Keep-outs are judged against a grid that fits: a broken grid is reported alone.
    problems = physical_problems(base) or keep_out_problems(base)
    if problems:
        raise ConfigError(source, problems)
    return base


def keep_out_problems(base: BaseArray) -> list[str]:
    """A keep-out (or the frame) may not overlap the tile grid: tiles hold the weights."""
    grid, tile, die, rules = base.tile_grid, base.weight_tile, base.die, base.pdk.rules
    # The grid's extent with the routing channels on every side (the router also uses the
    # channel left of column 0 and below row 0), grown by the spacing rule.
    cx, cy = grid.pitch_x_nm - tile.width_nm, grid.pitch_y_nm - tile.height_nm
    x0, y0 = grid.origin_nm[0] - cx, grid.origin_nm[1] - cy
    x1 = grid.origin_nm[0] + grid.columns * grid.pitch_x_nm
    y1 = grid.origin_nm[1] + grid.rows * grid.pitch_y_nm
    s = rules.top_metal_space_nm
    problems = []
    named = ([("frame", r) for r in base.frame.rects_nm(die)] if base.frame else []) \
        + [(f"keep_outs[{k}]", r) for k, r in enumerate(base.keep_outs)]
    for key, (a, b, c, d) in named:
        if any(p.startswith(key + ":") for p in problems):
            continue   # the frame's four sides: one problem is enough
        if c > die.width_nm or d > die.height_nm:
            problems.append(f"{key}: [{a}, {b}, {c}, {d}] nm reaches beyond the "
                            f"{die.width_nm} x {die.height_nm} nm die")
        elif a < x1 + s and c > x0 - s and b < y1 + s and d > y0 - s:
            problems.append(f"{key}: [{a}, {b}, {c}, {d}] nm overlaps the tile grid and its "
                            f"routing channels [{x0}, {y0}, {x1}, {y1}] nm (or comes within "
                            f"the {s} nm top-metal spacing of them)")
    return problems


def encoding_problems(tile: WeightTile) -> list[str]:
    """The weight-tile fields each encoding fixes (see the module docstring)."""
    enc, problems = tile.encoding, []
    bits = {"tie-high-low": 1, "zero-skip": 1, "ternary": 2}.get(enc)
    if bits is not None and tile.bits_per_site != bits:
        problems.append(f"weight_tile.bits_per_site: must be {bits} for encoding {enc!r}, not "
                        f"{tile.bits_per_site}")
    slots = {"tie-high-low": 2, "zero-skip": 1}.get(enc)
    if tile.slots_per_bit != slots:
        problems.append(f"weight_tile.slots_per_bit: must be {slots} for encoding {enc!r}, not "
                        f"{tile.slots_per_bit}" if slots else
                        f"weight_tile.slots_per_bit: does not apply to encoding {enc!r} (one "
                        "via per site); leave it out")
    if enc == "ternary" and tile.max_weight_bits != 2:
        problems.append("weight_tile.max_weight_bits: must be 2 for encoding 'ternary' (one "
                        f"weight {{−1, 0, +1}} per site), not {tile.max_weight_bits}")
    if enc == "select" and tile.max_weight_bits < tile.bits_per_site:
        problems.append(f"weight_tile.max_weight_bits: {tile.max_weight_bits} is below "
                        f"bits_per_site {tile.bits_per_site}: a select digit wider than any "
                        "weight")
    return problems


def require_base_die_encoding(base: BaseArray) -> None:
    """One error line where a base die would be drawn for an encoding no recipe draws."""
    enc = base.weight_tile.encoding
    if enc not in BASE_DIE_ENCODINGS:
        raise ConfigError(base.path or base.name, [
            f"weight_tile.encoding: the base die is drawn for {' and '.join(BASE_DIE_ENCODINGS)} "
            f"sites only, not {enc!r} (its lines need product-bank and activation ports in "
            "the base); compile draws the custom masks without it"])


def physical_problems(base: BaseArray) -> list[str]:
    """Derive the geometry and check it against the PDK rules and the die. All problems."""
    pdk, rules, tile, grid, die = base.pdk, base.pdk.rules, base.weight_tile, base.tile_grid, base.die
    problems: list[str] = encoding_problems(tile)
    if problems:
        return problems   # the geometry checks below read the encoding's lines per site

    def on_grid(key: str, value: int) -> None:
        if value % pdk.grid_nm:
            problems.append(f"{key}: {value} nm is not on the {pdk.name} manufacturing grid "
                            f"({pdk.grid_nm} nm)")

    for key, value in (("die.width_nm", die.width_nm), ("die.height_nm", die.height_nm),
                       ("tile_grid.origin_nm[0]", grid.origin_nm[0]),
                       ("tile_grid.origin_nm[1]", grid.origin_nm[1]),
                       ("tile_grid.pitch_x_nm", grid.pitch_x_nm),
                       ("tile_grid.pitch_y_nm", grid.pitch_y_nm),
                       ("weight_tile.site_pitch_x_nm", tile.site_pitch_x_nm),
                       ("weight_tile.site_pitch_y_nm", tile.site_pitch_y_nm),
                       ("weight_tile.strap_width_nm", tile.strap_width_nm),
                       ("datapath.route_width_nm", base.datapath.route_width_nm)):
        on_grid(key, value)
    # Slot centres sit at pitch/2 and straps at pitch/4: keep them on the grid too.
    if tile.site_pitch_x_nm % (2 * pdk.grid_nm):
        problems.append(f"weight_tile.site_pitch_x_nm: {tile.site_pitch_x_nm} nm must be a multiple "
                        f"of 2 × grid ({2 * pdk.grid_nm} nm) so via centres fall on the grid")
    lines = tile.lines_per_site
    if tile.site_pitch_y_nm % (2 * lines * pdk.grid_nm):
        problems.append(f"weight_tile.site_pitch_y_nm: {tile.site_pitch_y_nm} nm must be a multiple "
                        f"of {2 * lines} × grid ({2 * lines * pdk.grid_nm} nm) so "
                        f"{'strap' if lines == 2 else 'line'} centres fall on the grid")

    via_pitch = rules.via_size_nm + max(rules.via_space_nm, rules.via_array_space_nm or 0)
    if tile.site_pitch_x_nm < via_pitch:
        problems.append(f"weight_tile.site_pitch_x_nm: {tile.site_pitch_x_nm} nm is below the via "
                        f"pitch {via_pitch} nm (via size {rules.via_size_nm} + spacing "
                        f"{via_pitch - rules.via_size_nm}, {pdk.name} rules)")
    min_strap = max(rules.top_metal_width_nm, rules.via_size_nm + 2 * rules.via_enclosure_top_nm)
    if tile.strap_width_nm < min_strap:
        problems.append(f"weight_tile.strap_width_nm: {tile.strap_width_nm} nm is below "
                        f"{min_strap} nm (top-metal width, or via {rules.via_size_nm} nm + 2 × "
                        f"enclosure {rules.via_enclosure_top_nm} nm)")
    strap_pitch = tile.site_pitch_y_nm // lines
    line_pitch = tile.strap_width_nm + rules.top_metal_space_nm
    if lines != 2 and max(line_pitch, via_pitch) * lines > tile.site_pitch_y_nm:
        # the drawing rule of every encoding: its lines side by side at the custom-metal
        # pitch (line width + spacing), and vias on neighbouring lines a via pitch apart
        problems.append(f"weight_tile.site_pitch_y_nm: {tile.site_pitch_y_nm} nm cannot hold the "
                        f"{lines} lines of a{'n' if tile.encoding[0] in 'aeiou' else ''} "
                        f"{tile.encoding} site at the {pdk.name} pitch: {lines} × "
                        f"{max(line_pitch, via_pitch)} nm (line {tile.strap_width_nm} + space "
                        f"{rules.top_metal_space_nm}, via pitch {via_pitch}) = "
                        f"{lines * max(line_pitch, via_pitch)} nm")
    elif strap_pitch - tile.strap_width_nm < rules.top_metal_space_nm:
        problems.append(f"weight_tile.site_pitch_y_nm: {tile.site_pitch_y_nm} nm leaves "
                        f"{strap_pitch - tile.strap_width_nm} nm between straps; top-metal "
                        f"spacing needs {rules.top_metal_space_nm} nm")
    elif strap_pitch < via_pitch:
        problems.append(f"weight_tile.site_pitch_y_nm: {tile.site_pitch_y_nm} nm puts the two via "
                        f"slots of a site closer than the via pitch {via_pitch} nm")
    channel_x = grid.pitch_x_nm - tile.width_nm
    channel_y = grid.pitch_y_nm - tile.height_nm
    route_pitch = base.datapath.route_width_nm + rules.top_metal_space_nm
    for key, channel in (("tile_grid.pitch_x_nm", channel_x), ("tile_grid.pitch_y_nm", channel_y)):
        if channel < rules.top_metal_space_nm + route_pitch:
            problems.append(f"{key}: leaves a {channel} nm routing channel between weight tiles "
                            f"({tile.width_nm} × {tile.height_nm} nm); at least "
                            f"{rules.top_metal_space_nm + route_pitch} nm is needed for one route")
    if base.datapath.route_width_nm < rules.top_metal_width_nm:
        problems.append(f"datapath.route_width_nm: {base.datapath.route_width_nm} nm is below the "
                        f"top-metal minimum width {rules.top_metal_width_nm} nm")
    right = grid.origin_nm[0] + grid.columns * grid.pitch_x_nm
    top = grid.origin_nm[1] + grid.rows * grid.pitch_y_nm
    if right > die.width_nm:
        problems.append(f"tile_grid.columns: {grid.columns} columns at {grid.pitch_x_nm} nm end at "
                        f"x = {right} nm, beyond the die width {die.width_nm} nm")
    if top > die.height_nm:
        problems.append(f"tile_grid.rows: {grid.rows} rows at {grid.pitch_y_nm} nm end at "
                        f"y = {top} nm, beyond the die height {die.height_nm} nm")
    if max(right, top) > INT32_MAX:
        problems.append(f"tile_grid: {max(right, top)} nm does not fit a 32-bit GDS coordinate "
                        f"(max {INT32_MAX} at 1 nm per database unit)")
    # The exposure field also keeps every coordinate of the die inside 32-bit GDS coordinates.
    long_nm, short_nm = max(die.width_nm, die.height_nm), min(die.width_nm, die.height_nm)
    field_nm2 = RETICLE_FIELD_NM[0] * RETICLE_FIELD_NM[1]
    if long_nm > RETICLE_FIELD_NM[1]:
        key = "die.width_nm" if die.width_nm >= die.height_nm else "die.height_nm"
        problems.append(f"{key}: {long_nm} nm is longer than the {RETICLE_FIELD_NM[1]} nm side "
                        "of the largest exposure field (26 x 33 mm reticle limit); a die is "
                        "printed in one field")
    elif long_nm * short_nm > field_nm2:
        problems.append(f"die: {die.area_mm2:.0f} mm² is larger than the {field_nm2 * 1e-12:.0f} "
                        "mm² exposure field (26 x 33 mm reticle limit); a die is printed in "
                        "one field")
    if grid.tiles > MAX_TILES_PER_DIE:
        problems.append(f"tile_grid: {grid.columns} x {grid.rows} = {grid.tiles:,} tiles per "
                        f"die; at most {MAX_TILES_PER_DIE:,} (placement walks every tile)")
    if tile.sites > MAX_SITES_PER_TILE:
        problems.append(f"weight_tile: {tile.sites_x} x {tile.sites_y} = {tile.sites:,} sites "
                        f"per tile; at most {MAX_SITES_PER_TILE:,} (a tile's sites are drawn "
                        "together)")
    row_sites = tile.input_lanes * tile.sites_per_weight(tile.max_weight_bits)
    if row_sites > tile.sites:
        problems.append(f"weight_tile: {tile.sites} sites cannot hold one row of "
                        f"{tile.input_lanes} weights at {tile.max_weight_bits} bits "
                        f"({row_sites} sites)")
    if base.datapath.accumulator_bits < base.datapath.activation_bits + tile.max_weight_bits:
        problems.append(f"datapath.accumulator_bits: {base.datapath.accumulator_bits} is narrower "
                        f"than one product ({base.datapath.activation_bits} + "
                        f"{tile.max_weight_bits} bits)")
    names = [b.name for b in base.sram]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"sram: block name {name!r} is used more than once")
    # SRAM macros share the die with the tile grid: check the area budget.
    sram_area_nm2 = sum(b.capacity_bytes * 8 for b in base.sram) * \
        base.pdk.sram.bitcell_area_um2 / base.pdk.sram.array_efficiency * 1e6
    grid_area_nm2 = grid.columns * grid.pitch_x_nm * grid.rows * grid.pitch_y_nm
    if grid_area_nm2 + sram_area_nm2 > die.width_nm * die.height_nm:
        problems.append(f"sram: {sram_area_nm2 * 1e-12:.3f} mm² of SRAM and "
                        f"{grid_area_nm2 * 1e-12:.3f} mm² of tiles exceed the die "
                        f"({die.area_mm2:.3f} mm²)")
    return problems
