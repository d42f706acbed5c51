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
  * A Placement keeps one numpy row per tile (ROW_DTYPE), not Python objects: an 8 B model
    has 2.2 M tiles, which as objects cost the compile gigabytes and as JSON rows made a
    432 MB manifest. The rows go to the compile folder's placement file (place/store.py);
    (TileSlot, Segment) pairs are made on access, a die or a tensor at a time.
"""


from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.errors import PlacementError
from taalasc.place.curve import curve_order

FP16_BITS = 16
KINDS = ("codes", "scales", "mins", "vector")
# One row per used weight tile, in dataflow order: the tile (die, column, row) and its
# segment (tensor: index into Placement.layers; kind: index into KINDS). Little-endian and
# packed, so the placement file is the same bytes on every machine.
ROW_DTYPE = np.dtype([("die", "<i4"), ("column", "<i4"), ("row", "<i4"), ("tensor", "<i4"),
                      ("kind", "u1"), ("bits", "u1"), ("row0", "<i4"), ("row1", "<i4"),
                      ("col0", "<i4"), ("col1", "<i4")])
_MAX_EXTENT = 2**31 - 1   # row0 .. col1 are int32
_ITER_ROWS = 1 << 16      # rows made into Python objects at a time when iterating


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


def _block_rows(spec: TensorSpec, kind: str, bits: int, height: int, width: int,
                max_cols: int, tile) -> np.ndarray:
    """The rows of one stream: blocks of ``cols`` columns and as many rows as a tile holds,
    row block by row block, column blocks inner (die, tile and tensor left 0)."""
    per_element = -(-bits // tile.digit_bits(kind))
    cols = min(max_cols, width)
    rows = tile.sites // (cols * per_element)
    if rows == 0:
        raise PlacementError(
            f"tensor {spec.name!r}: one {kind} row of {cols} elements at {bits} bits needs "
            f"{cols * per_element} sites, but a weight tile has {tile.sites}")
    row0 = np.arange(0, height, rows, dtype=np.int64)
    col0 = np.arange(0, width, cols, dtype=np.int64)
    out = np.zeros(len(row0) * len(col0), ROW_DTYPE)
    out["kind"], out["bits"] = KINDS.index(kind), bits
    out["row0"] = np.repeat(row0, len(col0))
    out["row1"] = np.minimum(np.repeat(row0, len(col0)) + rows, height)
    out["col0"] = np.tile(col0, len(row0))
    out["col1"] = np.minimum(np.tile(col0, len(row0)) + cols, width)
    return out


def tensor_rows(spec: TensorSpec, base: BaseArray) -> np.ndarray:
    """The placement rows (ROW_DTYPE) of one tensor's segments, in placement order (codes
    blocks, scales, then mins); die, tile and tensor index left 0. PlacementError when the
    tensor cannot be placed on ``base``."""
    tile = base.weight_tile
    stream_cols = max(1, tile.sites // -(-FP16_BITS // tile.constant_bits_per_site))
    shape = tuple(spec.shape)
    if any(d <= 0 for d in shape):
        raise PlacementError(f"tensor {spec.name!r}: cannot place an empty tensor of shape {shape}")
    if any(d > _MAX_EXTENT for d in shape):
        raise PlacementError(f"tensor {spec.name!r}: a dimension of shape {shape} is over "
                             f"{_MAX_EXTENT:,}, the largest a placement row holds")
    if spec.bits is None:
        if len(shape) > 1:
            raise PlacementError(f"tensor {spec.name!r}: a {len(shape)}-D tensor of shape {shape} "
                                 "must be quantized (bits must be set, not None)")
        n = shape[0] if shape else 1
        return _block_rows(spec, "vector", FP16_BITS, 1, n, stream_cols, tile)
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
    streams = [_block_rows(spec, "codes", spec.bits, out, inp, tile.input_lanes, tile),
               _block_rows(spec, "scales", FP16_BITS, out, spec.n_groups, stream_cols, tile)]
    if spec.asymmetric:
        streams.append(_block_rows(spec, "mins", FP16_BITS, out, spec.n_groups, stream_cols,
                                   tile))
    return np.concatenate(streams)


def segments_of(spec: TensorSpec, base: BaseArray) -> list[Segment]:
    """The segments of one tensor, in placement order (codes blocks, scales, then mins)."""
    digits = {kind: base.weight_tile.digit_bits(kind) for kind in KINDS}
    return [Segment(spec.name, KINDS[k], bits, (r0, r1), (c0, c1), digits[KINDS[k]])
            for _, _, _, _, k, bits, r0, r1, c0, c1 in tensor_rows(spec, base).tolist()]


class LazyRows(Sequence):
    """A read-only sequence whose items are made from placement rows on access:
    ``make(start, stop)`` gives the items start .. stop - 1."""

    def __init__(self, length: int, make: Callable[[int, int], list]):
        self._length, self._make = length, make

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            items = self._make(start, max(start, stop)) if step == 1 else [
                self[k] for k in range(start, stop, step)]
            return items
        k = index + self._length if index < 0 else index
        if not 0 <= k < self._length:
            raise IndexError(index)
        return self._make(k, k + 1)[0]

    def __iter__(self) -> Iterator:
        for start in range(0, self._length, _ITER_ROWS):
            yield from self._make(start, min(start + _ITER_ROWS, self._length))


@dataclass(frozen=True, eq=False)
class Placement:
    """Which segment sits on which tile, in dataflow order: ``rows`` (ROW_DTYPE), one per
    used tile, dies in order. The on-die links join consecutive rows of the same die."""

    base_name: str
    dies: int
    rows: np.ndarray
    layers: tuple[tuple[str, int | None], ...]   # every tensor, in order; rows index it
    curve: str = "gilbert"
    digit_bits: Mapping[str, int] = field(default_factory=dict)  # kinds whose digit is not 1

    @classmethod
    def of(cls, base_name: str, dies: int, assignments: Sequence[tuple[TileSlot, Segment]],
           layers: Sequence[tuple[str, int | None]], curve: str = "gilbert") -> Placement:
        """A placement from (TileSlot, Segment) pairs (hand-made ones, in tests)."""
        index = {name: k for k, (name, _) in enumerate(layers)}
        rows = np.zeros(len(assignments), ROW_DTYPE)
        for k, (s, g) in enumerate(assignments):
            if g.tensor not in index:
                raise PlacementError(f"tensor {g.tensor!r} is placed but not in the layers list")
            rows[k] = (s.die, s.column, s.row, index[g.tensor], KINDS.index(g.kind), g.bits,
                       *g.rows, *g.cols)
        return cls(base_name, dies, rows, tuple(layers), curve,
                   {g.kind: g.digit_bits for _, g in assignments if g.digit_bits != 1})

    @cached_property
    def tensors(self) -> tuple[str, ...]:
        """Tensor names by the index the rows hold."""
        return tuple(name for name, _ in self.layers)

    def layer_of(self, tensor: str) -> int | None:
        """Transformer layer of a tensor as given in its TensorSpec (None: not in a layer)."""
        return dict(self.layers).get(tensor)

    def _pairs(self, rows: np.ndarray) -> list[tuple[TileSlot, Segment]]:
        names, digits = self.tensors, [self.digit_bits.get(k, 1) for k in KINDS]
        return [(TileSlot(d, c, r), Segment(names[t], KINDS[k], b, (r0, r1), (c0, c1), digits[k]))
                for d, c, r, t, k, b, r0, r1, c0, c1 in rows.tolist()]

    @property
    def assignments(self) -> LazyRows:
        """(TileSlot, Segment) per row, made on access (a die at a time: ``on_die``)."""
        return LazyRows(len(self.rows), lambda a, b: self._pairs(self.rows[a:b]))

    @cached_property
    def _die_starts(self) -> np.ndarray:
        return np.searchsorted(self.rows["die"], np.arange(self.dies + 1))

    def die_rows(self, die: int) -> slice:
        """The rows of die ``die`` (rows are in die order)."""
        return slice(int(self._die_starts[die]), int(self._die_starts[die + 1]))

    def on_die(self, die: int) -> tuple[tuple[TileSlot, Segment], ...]:
        return tuple(self._pairs(self.rows[self.die_rows(die)]))

    def die_part(self, die: int) -> Placement:
        """This placement cut to die ``die``'s rows: what a die's job carries to a worker."""
        return dataclasses.replace(self, rows=self.rows[self.die_rows(die)].copy())

    @cached_property
    def link_rows(self) -> np.ndarray:
        """k for every link row k -> row k + 1: consecutive tiles on one die (the route the
        die draws); int64."""
        r = self.rows
        same_die = r["die"][1:] == r["die"][:-1]
        moved = (r["column"][1:] != r["column"][:-1]) | (r["row"][1:] != r["row"][:-1])
        return np.flatnonzero(same_die & moved)

    def link_ends(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[links, 6] int64: (die, column, row) of the two ends of links start .. stop - 1."""
        k = self.link_rows[start:stop]
        a, b = self.rows[k], self.rows[k + 1]
        return np.stack([a["die"], a["column"], a["row"], b["die"], b["column"], b["row"]],
                        axis=1).astype(np.int64)

    @property
    def links(self) -> LazyRows:
        """(TileSlot, TileSlot) per link, made on access."""
        def make(a: int, b: int) -> list:
            return [(TileSlot(*e[:3]), TileSlot(*e[3:])) for e in self.link_ends(a, b).tolist()]
        return LazyRows(len(self.link_rows), make)

    @cached_property
    def _slot_keys(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        key, span_c, span_r = _tile_keys(self.rows)
        order = np.argsort(key, kind="stable")
        return key[order], order, span_c, span_r

    def segment_at(self, die: int, column: int, row: int) -> Segment | None:
        """The segment on tile (die, column, row); None when the tile is not used."""
        keys, order, span_c, span_r = self._slot_keys
        if not (0 <= column < span_c and 0 <= row < span_r):
            return None
        key = (die * span_c + column) * span_r + row
        i = int(np.searchsorted(keys, key))
        if i == len(keys) or keys[i] != key:
            return None
        k = int(order[i])
        return self._pairs(self.rows[k:k + 1])[0][1]

    @cached_property
    def _tensor_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.rows["tensor"], kind="stable")
        starts = np.searchsorted(self.rows["tensor"][order], np.arange(len(self.layers) + 1))
        return order, starts

    def tensor_rows(self, tensor: str) -> np.ndarray:
        """The rows of one tensor, in placement order (empty when it is not placed)."""
        try:
            t = self.tensors.index(tensor)
        except ValueError:
            return self.rows[:0]
        order, starts = self._tensor_order
        return self.rows[order[starts[t]:starts[t + 1]]]

    def tiles_of(self, tensor: str) -> list[tuple[TileSlot, Segment]]:
        """The (tile, segment) pairs of one tensor, codes first then scales, in order."""
        return self._pairs(self.tensor_rows(tensor))

    def digit_bits_of(self, kind: np.ndarray) -> np.ndarray:
        """The digit width of each row whose ``kind`` column is given, int64."""
        return np.array([self.digit_bits.get(k, 1) for k in KINDS], np.int64)[kind]

    @cached_property
    def elements(self) -> np.ndarray:
        """Elements each tile stores (its segment's rows x columns), int64 per row."""
        r = self.rows
        return (r["row1"].astype(np.int64) - r["row0"]) * (r["col1"].astype(np.int64) - r["col0"])

    @cached_property
    def used_sites(self) -> np.ndarray:
        """Sites each tile uses (elements x digits per element), int64 per row."""
        bits = self.rows["bits"].astype(np.int64)
        return self.elements * -(-bits // self.digit_bits_of(self.rows["kind"]))

    @property
    def tiles_used(self) -> int:
        return len(self.rows)

    @property
    def sites_used(self) -> int:
        return int(self.used_sites.sum())

    @property
    def cross_die_links(self) -> int:
        """Dataflow hand-offs between consecutive segments on different dies (not drawn)."""
        die = self.rows["die"]
        return int(np.count_nonzero(die[1:] != die[:-1]))

    def to_json(self) -> dict:
        """The manifest's part: everything but the rows, which go to the placement file."""
        return {
            "base_name": self.base_name,
            "dies": self.dies,
            "curve": self.curve,
            "tiles_used": self.tiles_used,
            "sites_used": self.sites_used,
            "row_fields": list(ROW_DTYPE.names),
            "kinds": list(KINDS),
            "layers": [[name, layer] for name, layer in self.layers],
        } | ({"digit_bits": dict(sorted(self.digit_bits.items()))} if self.digit_bits else {})

    @classmethod
    def from_json(cls, d: Mapping[str, Any], rows: np.ndarray) -> Placement:
        """Inverse of ``to_json`` with the placement file's ``rows``; PlacementError on a
        malformed dict or rows that do not fit it."""
        try:
            for key, value in (("row_fields", list(ROW_DTYPE.names)), ("kinds", list(KINDS))):
                if d[key] != value:
                    raise PlacementError(f"placement {key} must be {value}, not {d[key]!r}")
            digits = {str(k): int(v) for k, v in d.get("digit_bits", {}).items()}
            layers = tuple((str(n), None if v is None else int(v)) for n, v in d["layers"])
            placement = cls(base_name=str(d["base_name"]), dies=int(d["dies"]), rows=rows,
                            layers=layers, curve=str(d["curve"]), digit_bits=digits)
            tiles_used, sites_used = int(d["tiles_used"]), int(d["sites_used"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise PlacementError(f"placement JSON: malformed ({type(exc).__name__}: {exc})") from None
        if len(set(placement.tensors)) != len(layers):
            raise PlacementError("placement layers must name each tensor once")
        if set(digits) - set(KINDS) or any(not 1 <= v <= 8 for v in digits.values()):
            raise PlacementError(f"placement digit_bits must map kinds to 1-8 bits, not {digits}")
        _check_rows(rows, placement.dies, len(layers), tiles_used)
        if placement.sites_used != sites_used:
            raise PlacementError(f"placement rows use {placement.sites_used:,} sites, not the "
                                 f"{sites_used:,} of sites_used")
        return placement


def _tile_keys(rows: np.ndarray) -> tuple[np.ndarray, int, int]:
    """One int64 per row naming its tile, and the column and row spans it is made with."""
    span_c = int(rows["column"].max()) + 1 if len(rows) else 1
    span_r = int(rows["row"].max()) + 1 if len(rows) else 1
    key = (rows["die"].astype(np.int64) * span_c + rows["column"]) * span_r + rows["row"]
    return key, span_c, span_r


def _check_rows(rows: np.ndarray, dies: int, tensors: int, tiles_used: int) -> None:
    """PlacementError unless ``rows`` are a placement's: ROW_DTYPE, ``tiles_used`` of them,
    dies in order and in range, one segment per tile, indices and extents in range."""
    if not isinstance(rows, np.ndarray) or rows.dtype != ROW_DTYPE or rows.ndim != 1:
        raise PlacementError(f"placement rows must be a 1-D array of {ROW_DTYPE.descr}")
    if len(rows) != tiles_used:
        raise PlacementError(f"placement has {len(rows):,} rows, not the {tiles_used:,} "
                             "of tiles_used")
    if not len(rows):
        return
    die = rows["die"]
    bad = [
        ("die", (die < 0) | (die >= dies)),
        ("die out of order", np.r_[False, die[1:] < die[:-1]]),
        ("column", rows["column"] < 0), ("row", rows["row"] < 0),
        ("tensor", (rows["tensor"] < 0) | (rows["tensor"] >= tensors)),
        ("kind", rows["kind"] >= len(KINDS)), ("bits", rows["bits"] < 1),
        ("rows", (rows["row0"] < 0) | (rows["row1"] <= rows["row0"])),
        ("cols", (rows["col0"] < 0) | (rows["col1"] <= rows["col0"])),
    ]
    for what, wrong in bad:
        if wrong.any():
            k = int(np.argmax(wrong))
            raise PlacementError(f"placement row {k}: {what} out of range ({rows[k].tolist()})")
    key, _, _ = _tile_keys(rows)
    order = np.argsort(key, kind="stable")
    twice = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(twice):
        k = int(order[twice[0] + 1])
        raise PlacementError(f"placement row {k}: tile ({die[k]}, {rows['column'][k]}, "
                             f"{rows['row'][k]}) already holds row {int(order[twice[0]])}'s "
                             "segment (one segment per tile)")


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
    parts = []
    for index, spec in enumerate(tensors):
        part = tensor_rows(spec, base)
        part["tensor"] = index
        parts.append(part)
    rows = np.concatenate(parts)
    tile, grid = base.weight_tile, base.tile_grid
    present = [KINDS[k] for k in np.unique(rows["kind"]).tolist()]
    digits = {k: tile.digit_bits(k) for k in present if tile.digit_bits(k) != 1}
    layers = tuple((t.name, t.layer) for t in tensors)
    per_die = grid.tiles
    dies = -(-len(rows) // per_die)
    if dies > allowed:
        from taalasc.place.fit import fit_hint  # the other built-in bases: on this path only

        bits = Placement(base.name, dies, rows, layers, curve, digits).sites_used
        raise PlacementError(
            f"model needs {bits:,} bits in {len(rows):,} weight tiles, but base array "
            f"{base.name} has {per_die:,} tiles per die and allows {allowed} dies "
            f"({allowed * per_die:,} tiles); {dies} dies would be needed; "
            f"{fit_hint(tensors, base, max_dies)}")
    order = np.asarray(curve_order(curve, grid.columns, grid.rows, grid.pitch_x_nm,
                                   grid.pitch_y_nm), dtype=np.int64).reshape(-1, 2)
    k = np.arange(len(rows), dtype=np.int64)
    rows["die"] = k // per_die
    rows["column"], rows["row"] = order[k % per_die, 0], order[k % per_die, 1]
    return Placement(base_name=base.name, dies=dies, rows=rows, layers=layers, curve=curve,
                     digit_bits=digits)
