"""Placement: split every tensor into tile-sized segments and lay them along a curve.

Rules (the decisions, in one place):
  * A quantized 2-D tensor [out, in] at b bits becomes a "codes" stream split into blocks of
    cols = min(input_lanes, in) columns (a tile multiplies input_lanes activations per output
    per cycle) and rows = sites // (cols * ceil(b / d)) rows, d the tile's digit width
    (WeightTile.digit_bits: 1 but for select and ternary); partial blocks at the ends.
    Blocks go row block by row block, column blocks inner, so the tiles that add into the
    same outputs sit next to each other on the curve.
  * Right after its codes comes the tensor's "scales" stream ([out, n_groups] fp16), then,
    for asymmetric codes, its "mins" stream ([out, n_groups] fp16); a 1-D tensor is a
    "vector" stream ([1, n] fp16); streams use the same blocking with
    cols = min(sites // ceil(16 / d), width), d = WeightTile.constant_bits_per_site.
  * One segment per tile. Packing the small scale/vector streams of a layer into shared
    tiles would save the tail of their last tile, but every tile would then need a site
    offset per segment and a mask diff could no longer name one tensor per tile. The
    measured waste is small (``placement_stats`` reports it: under 1 % of tiles on a
    50 M-parameter Llama), so we keep the simple layout.
  * Segments follow the tensors' dataflow order; tiles are visited along ``curve`` over the
    tile grid, filling die 0, then die 1, ... Each die uses the same visiting order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from taalasc.config.base_array import BaseArray
from taalasc.errors import PlacementError
from taalasc.place.curve import curve_order

FP16_BITS = 16
KINDS = ("codes", "scales", "mins", "vector")
_FIELDS = ("die", "column", "row", "tensor", "kind", "bits", "row0", "row1", "col0", "col1")


@dataclass(frozen=True, order=True)
class TileSlot:
    """One weight tile: die index, grid column, grid row."""

    die: int
    column: int
    row: int


@dataclass(frozen=True)
class Segment:
    """The content of one weight tile: a rectangle of one source array.

    Layout inside the tile: element (r, c) -> e = (r - r0) * (c1 - c0) + (c - c0); its
    value's bits (LSB first; two's complement for codes, IEEE fp16 pattern for scales/vectors)
    in digits of ``digit_bits`` bits (WeightTile.digit_bits: 1 for tie-high-low and
    zero-skip, so a digit is a bit) -> digit k at site s = e * sites_per_element + k, site
    column s % sites_x, site row s // sites_x. Sites from used_sites on are unused (no via).
    """

    tensor: str
    kind: str
    bits: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    digit_bits: int = 1

    @property
    def sites_per_element(self) -> int:
        return -(-self.bits // self.digit_bits)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows[1] - self.rows[0], self.cols[1] - self.cols[0])

    @property
    def elements(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def used_sites(self) -> int:
        return self.elements * self.sites_per_element


@dataclass(frozen=True)
class TensorSpec:
    """What placement needs to know about one tensor (from the header and its QuantSpec).

    bits None: not quantized, stored as an fp16 vector (1-D tensors only).
    """

    name: str
    shape: tuple[int, ...]
    bits: int | None
    group_size: int | None
    layer: int | None
    asymmetric: bool = False   # codes with an fp16 minimum per group: a "mins" stream too

    @property
    def n_groups(self) -> int:
        inp = self.shape[1]
        gs = self.group_size
        return 1 if gs is None or gs >= inp else inp // gs


def tensor_specs(ckpt: Any, specs: Mapping[str, Any]) -> list[TensorSpec]:
    """TensorSpecs of a checkpoint in its dataflow order; ``specs`` maps name -> QuantSpec.

    Tensors missing from ``specs`` are taken as unquantized (fp16 vectors).
    """
    out = []
    for name, info in ckpt.tensors.items():
        q = specs.get(name)
        out.append(TensorSpec(name=name, shape=tuple(int(d) for d in info.shape),
                              bits=None if q is None else q.bits,
                              group_size=None if q is None else q.group_size,
                              layer=ckpt.layer_of(name),
                              asymmetric=bool(getattr(q, "asymmetric", False))))
    return out


def _blocks(spec: TensorSpec, kind: str, bits: int, height: int, width: int,
            max_cols: int, tile) -> list[Segment]:
    digit = tile.digit_bits(kind)
    per_element = -(-bits // digit)
    cols = min(max_cols, width)
    rows = tile.sites // (cols * per_element)
    if rows == 0:
        raise PlacementError(
            f"tensor {spec.name!r}: one {kind} row of {cols} elements at {bits} bits needs "
            f"{cols * per_element} sites, but a weight tile has {tile.sites}")
    return [Segment(spec.name, kind, bits, (r0, min(r0 + rows, height)),
                    (c0, min(c0 + cols, width)), digit)
            for r0 in range(0, height, rows) for c0 in range(0, width, cols)]


def segments_of(spec: TensorSpec, base: BaseArray) -> list[Segment]:
    """The segments of one tensor, in placement order (codes blocks, scales, then mins)."""
    tile = base.weight_tile
    stream_cols = max(1, tile.sites // -(-FP16_BITS // tile.constant_bits_per_site))
    shape = tuple(spec.shape)
    if any(d <= 0 for d in shape):
        raise PlacementError(f"tensor {spec.name!r}: cannot place an empty tensor of shape {shape}")
    if spec.bits is None:
        if len(shape) > 1:
            raise PlacementError(f"tensor {spec.name!r}: a {len(shape)}-D tensor of shape {shape} "
                                 "must be quantized (bits must be set, not None)")
        n = shape[0] if shape else 1
        return _blocks(spec, "vector", FP16_BITS, 1, n, stream_cols, tile)
    if len(shape) != 2:
        raise PlacementError(f"tensor {spec.name!r}: only 2-D tensors are quantized, "
                             f"not shape {shape} at {spec.bits} bits")
    if isinstance(spec.bits, bool) or not isinstance(spec.bits, int) or spec.bits < 2:
        raise PlacementError(f"tensor {spec.name!r}: bits must be an integer >= 2, not {spec.bits!r}")
    if spec.bits > tile.max_weight_bits:
        raise PlacementError(
            f"tensor {spec.name!r}: bits must be at most {tile.max_weight_bits} "
            f"(weight_tile.max_weight_bits of {base.name}), not {spec.bits}")
    out, inp = shape
    gs = spec.group_size
    if gs is not None and gs < inp and (gs <= 0 or inp % gs):
        raise PlacementError(f"tensor {spec.name!r}: group size {gs} does not divide "
                             f"in_features {inp}")
    mins = (_blocks(spec, "mins", FP16_BITS, out, spec.n_groups, stream_cols, tile)
            if spec.asymmetric else [])
    return (_blocks(spec, "codes", spec.bits, out, inp, tile.input_lanes, tile)
            + _blocks(spec, "scales", FP16_BITS, out, spec.n_groups, stream_cols, tile) + mins)


@dataclass(frozen=True)
class Placement:
    """Which segment sits on which tile, in dataflow order, and the on-die links between them."""

    base_name: str
    dies: int
    assignments: tuple[tuple[TileSlot, Segment], ...]
    links: tuple[tuple[TileSlot, TileSlot], ...]
    curve: str = "gilbert"
    layers: tuple[tuple[str, int | None], ...] = field(default=(), compare=True)

    def tiles_of(self, tensor: str) -> list[tuple[TileSlot, Segment]]:
        """The (tile, segment) pairs of one tensor, codes first then scales, in order."""
        return list(self._by_tensor.get(tensor, ()))

    @cached_property
    def _by_tensor(self) -> dict[str, list[tuple[TileSlot, Segment]]]:
        # Built once: the emitter asks for every tensor of models with 10^5 tiles.
        index: dict[str, list[tuple[TileSlot, Segment]]] = {}
        for slot, seg in self.assignments:
            index.setdefault(seg.tensor, []).append((slot, seg))
        return index

    def layer_of(self, tensor: str) -> int | None:
        """Transformer layer of a tensor as given in its TensorSpec (None: not in a layer)."""
        return dict(self.layers).get(tensor)

    @property
    def tiles_used(self) -> int:
        return len(self.assignments)

    @property
    def sites_used(self) -> int:
        return sum(seg.used_sites for _, seg in self.assignments)

    @property
    def cross_die_links(self) -> int:
        """Dataflow hand-offs between consecutive segments on different dies (not drawn)."""
        return sum(1 for (a, _), (b, _) in zip(self.assignments, self.assignments[1:])
                   if a.die != b.die)

    def to_json(self) -> dict:
        """A JSON-ready dict. Assignments are compact rows named by ``assignment_fields``."""
        return {
            "base_name": self.base_name,
            "dies": self.dies,
            "curve": self.curve,
            "tiles_used": self.tiles_used,
            "sites_used": self.sites_used,
            "assignment_fields": list(_FIELDS),
            "assignments": [[s.die, s.column, s.row, g.tensor, g.kind, g.bits,
                             g.rows[0], g.rows[1], g.cols[0], g.cols[1]]
                            for s, g in self.assignments],
            "links": [[a.die, a.column, a.row, b.die, b.column, b.row] for a, b in self.links],
            "layers": [[name, layer] for name, layer in self.layers],
        } | ({"digit_bits": self.digit_bits} if self.digit_bits else {})

    @cached_property
    def digit_bits(self) -> dict[str, int]:
        """Digit width per segment kind where it is not 1 (select and ternary tiles); {}
        for tie-high-low and zero-skip, whose manifests leave the key out."""
        return {seg.kind: seg.digit_bits for _, seg in self.assignments if seg.digit_bits != 1}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Placement:
        """Inverse of ``to_json``; PlacementError on a malformed dict."""
        try:
            if list(d["assignment_fields"]) != list(_FIELDS):
                raise PlacementError(f"placement JSON: assignment_fields must be {list(_FIELDS)}, "
                                     f"not {d['assignment_fields']!r}")
            digits = {str(k): int(v) for k, v in d.get("digit_bits", {}).items()}
            assignments = tuple(
                (TileSlot(int(a[0]), int(a[1]), int(a[2])),
                 Segment(str(a[3]), str(a[4]), int(a[5]), (int(a[6]), int(a[7])),
                         (int(a[8]), int(a[9])), digits.get(str(a[4]), 1)))
                for a in d["assignments"])
            links = tuple((TileSlot(*(int(v) for v in x[:3])), TileSlot(*(int(v) for v in x[3:6])))
                          for x in d["links"])
            layers = tuple((str(n), None if v is None else int(v)) for n, v in d.get("layers", []))
            return cls(base_name=str(d["base_name"]), dies=int(d["dies"]),
                       assignments=assignments, links=links, curve=str(d.get("curve", "gilbert")),
                       layers=layers)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PlacementError(f"placement JSON: malformed ({type(exc).__name__}: {exc})") from None


def plan_placement(tensors: Sequence[TensorSpec], base: BaseArray, *, max_dies: int | None = None,
                   curve: str = "gilbert") -> Placement:
    """Place every tensor of ``tensors`` (in dataflow order) on the tiles of ``base``.

    Raises PlacementError, before anything is written, when a tensor cannot be placed or the
    model needs more than ``max_dies`` (default ``base.max_dies``) dies.
    """
    allowed = base.max_dies if max_dies is None else max_dies
    if isinstance(allowed, bool) or not isinstance(allowed, int) or allowed < 1:
        raise PlacementError(f"max_dies must be a positive integer, not {allowed!r}")
    names = [t.name for t in tensors]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlacementError(f"tensor {dup[0]!r} is listed more than once")
    if not tensors:
        raise PlacementError("no tensors to place")
    segments = [seg for t in tensors for seg in segments_of(t, base)]
    grid = base.tile_grid
    per_die = grid.tiles
    order = curve_order(curve, grid.columns, grid.rows, grid.pitch_x_nm, grid.pitch_y_nm)
    dies = -(-len(segments) // per_die)
    if dies > allowed:
        from taalasc.place.fit import fit_hint  # the other built-in bases: on this path only

        bits = sum(s.used_sites for s in segments)
        raise PlacementError(
            f"model needs {bits:,} bits in {len(segments):,} weight tiles, but base array "
            f"{base.name} has {per_die:,} tiles per die and allows {allowed} dies "
            f"({allowed * per_die:,} tiles); {dies} dies would be needed; "
            f"{fit_hint(tensors, base, max_dies)}")
    slots = [TileSlot(i // per_die, *order[i % per_die]) for i in range(len(segments))]
    links = tuple((a, b) for a, b in zip(slots, slots[1:]) if a.die == b.die and a != b)
    return Placement(base_name=base.name, dies=dies, assignments=tuple(zip(slots, segments)),
                     links=links, curve=curve,
                     layers=tuple((t.name, t.layer) for t in tensors))
