"""Stretches of OASIS records decoded by numpy, for the OASIS reader (formats/oasparse.py).

A stretch is a run of records whose fields are all varints: PAD, XYABSOLUTE, XYRELATIVE, a
PLACEMENT of a cell by reference number (or of the last cell), a RECTANGLE; none repeated.
Its *layout* says, per record, its id and info byte and, per field, where its bytes are.
Two ways to find one without a Python loop over records:

* ``scan`` a CBLOCK once; its ``Template`` then tells in one numpy comparison whether another
  CBLOCK has the same layout (record and info bytes equal, every varint byte's continuation
  bit equal: so every field has the same place and length);
* ``run_layout``: records that all have one record id and info byte each end a fixed number
  of varints, so the bytes below 0x80 mark their fields.

``decode`` then gathers every field of many copies of a layout at once and fills in OASIS's
modal variables (spec section 10): an absolute x sets the modal value, a relative one adds
to it, an absent one keeps it; an absent layer, width or cell is the last one given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from taalasc.formats.oasread import Cursor

COORD_LIMIT = 1 << 40      # database units; sums of 2**20 such values stay inside int64
_FIELD_BYTES = 6           # varints decoded by numpy: < 2**42, sums of 2**20 of them fit
LAYOUT_RECORDS = 1 << 20   # records of one stretch
# The modal values a stretch starts from and ends with, in this order (-1: not set).
MODAL = ("px", "py", "pcell", "gx", "gy", "layer", "datatype", "w", "h")

# Field slots: PLACEMENT (17) cell, x, y; RECTANGLE (20) layer, datatype, width, height, x, y.
_SLOTS = 6
_PLACEMENT_BITS = ((0, 0xC0), (1, 0x20), (2, 0x10))     # (slot, info bits that mean present)
_RECTANGLE_BITS = ((0, 0x01), (1, 0x02), (2, 0x40), (3, 0x20), (4, 0x10), (5, 0x08))


def simple_slots(rid: int, info: int) -> tuple[int, ...] | None:
    """Field slots of a record numpy may decode (varints only: a PLACEMENT of a cell by
    reference number or of the last cell, a RECTANGLE; neither repeated), else None."""
    if rid == 17:
        if info & 0x08 or info & 0xC0 == 0x80:       # repeated, or a cell by name
            return None
        return tuple(s for s, bits in _PLACEMENT_BITS if info & bits == bits)
    if rid == 20:
        if info & 0x04 or info & 0xA0 == 0xA0:       # repeated, or a square with a height
            return None
        return tuple(s for s, bits in _RECTANGLE_BITS if info & bits)
    return None


@dataclass(frozen=True)
class Layout:
    """The record layout of a stretch of records numpy decodes (PAD, XYABSOLUTE, XYRELATIVE
    and simple_slots records): per record its id and info byte; per varint field its
    record, slot, first byte (from the stretch's start) and length."""
    rid: np.ndarray
    info: np.ndarray
    field_rec: np.ndarray
    field_slot: np.ndarray
    field_start: np.ndarray
    field_len: np.ndarray
    length: int                 # bytes

    @classmethod
    def of(cls, rid, info, fields, length: int) -> "Layout":
        f = np.array(fields, np.int64).reshape(-1, 4)
        return cls(np.asarray(rid, np.int64), np.asarray(info, np.int64), f[:, 0], f[:, 1],
                   f[:, 2], f[:, 3], length)

    def values(self, rows: np.ndarray) -> np.ndarray:
        """Field values of the stretch in each row of ``rows`` (uint8 [n, length]): int64
        [n, records, _SLOTS], x and y zigzag-decoded, 0 where a field is absent."""
        vals = np.empty((len(rows), len(self.field_len)), np.int64)
        for length in np.unique(self.field_len).tolist():   # fields of one length at once
            which = np.flatnonzero(self.field_len == length)
            at = self.field_start[which]
            v = rows[:, at].astype(np.int64) & 0x7F
            for k in range(1, length):
                v |= (rows[:, at + k].astype(np.int64) & 0x7F) << (7 * k)
            vals[:, which] = v
        signed = ((self.rid[self.field_rec] == 17) & (self.field_slot >= 1)) | \
            ((self.rid[self.field_rec] == 20) & (self.field_slot >= 4))
        vals = np.where(signed, np.where(vals & 1, -(vals >> 1), vals >> 1), vals)
        out = np.zeros((len(rows), len(self.rid), _SLOTS), np.int64)
        out[:, self.field_rec, self.field_slot] = vals
        return out

    @property
    def present(self) -> np.ndarray:
        has = np.zeros((len(self.rid), _SLOTS), bool)
        has[self.field_rec, self.field_slot] = True
        return has


@dataclass(frozen=True)
class Template:
    """A CBLOCK's record layout, and the bytes that must match for another CBLOCK to have it:
    record and info bytes exactly, the continuation bit of every varint byte."""
    layout: Layout
    expect: np.ndarray          # uint8 [length]
    mask: np.ndarray            # 0xFF at record/info bytes, 0x80 at varint bytes
    absolute: bool              # xy mode at the CBLOCK's start

    def matches(self, data: np.ndarray) -> bool:
        return not ((data ^ self.expect) & self.mask).any()


def scan(data: bytes, absolute: bool) -> Template | None:
    """The template of a CBLOCK made only of records numpy decodes, else None (it is then read
    record by record, which reports any damage)."""
    c = Cursor(data)
    rids, infos, fields = [], [], []
    mask = np.full(len(data), 0xFF, np.uint8)
    try:
        while c.pos < len(data):
            p = c.pos
            rid = data[p]
            if len(rids) >= LAYOUT_RECORDS:
                return None
            if rid in (0, 15, 16):
                rids.append(rid)
                infos.append(0)
                c.pos += 1
                continue
            info = data[p + 1]
            slots = simple_slots(rid, info)
            if slots is None:
                return None
            c.pos = p + 2
            for slot in slots:
                q = c.pos
                c.uint()
                if c.pos - q > _FIELD_BYTES:
                    return None
                fields.append((len(rids), slot, q, c.pos - q))
                mask[q:c.pos] = 0x80
            rids.append(rid)
            infos.append(info)
    except (IndexError, ValueError):
        return None
    expect = np.frombuffer(data, np.uint8).copy()
    return Template(Layout.of(rids, infos, fields, len(data)), expect, mask, absolute)


def run_layout(seg: np.ndarray, rid: int, info: int, slots: tuple[int, ...]
                ) -> tuple[Layout, bool] | None:
    """The longest run of records at the start of ``seg`` with record id ``rid``, info byte
    ``info`` and varint fields only, found from the bytes that end varints: each record is
    then a fixed number of them. (layout, whether the run may go on past ``seg``); None if
    shorter than 2."""
    k = len(slots)
    per = k + 2 if info < 0x80 else k + 1   # an info byte >= 0x80 joins the first field
    if per < 2 or (info >= 0x80 and k == 0):
        return None
    ends = np.flatnonzero(seg < 0x80)
    n = len(ends) // per
    if n < 2:
        return None
    ends = ends[:n * per]
    starts = np.concatenate([[0], ends[:-1] + 1]).reshape(n, per)
    ends = ends.reshape(n, per)
    ok = (starts[:, 0] == ends[:, 0]) & (seg[ends[:, 0]] == rid) & (seg[starts[:, 1]] == info)
    first = 2
    if info < 0x80:
        ok &= starts[:, 1] == ends[:, 1]
    else:                                   # the first field: the rest of token 1
        starts[:, 1] += 1
        first = 1
    lengths = ends[:, first:] - starts[:, first:] + 1
    ok &= (lengths <= _FIELD_BYTES).all(axis=1)
    good = n if ok.all() else int(np.argmin(ok))
    if good < 2:
        return None
    starts, lengths = starts[:good, first:], lengths[:good]
    records = np.repeat(np.arange(good), k)
    fields = np.stack([records, np.tile(np.array(slots), good), starts.reshape(-1),
                       lengths.reshape(-1)], axis=1)
    layout = Layout.of(np.full(good, rid), np.full(good, info), fields,
                        int(ends[good - 1, -1]) + 1)
    return layout, good == n


def _fill(vals: np.ndarray, setters: np.ndarray, init: np.ndarray, name: str) -> np.ndarray:
    """A modal variable along a stretch: each record's value is that of the last record up
    to it that sets it, else ``init`` (int64 [n], -1 when not set: an error if needed)."""
    m = vals.shape[1]
    last = np.maximum.accumulate(np.where(setters, np.arange(m), -1))
    out = vals[:, np.maximum(last, 0)]
    if (last < 0).any():
        if (init < 0).any():
            raise ValueError(f"a record uses modal variable {name} before it is set")
        out[:, last < 0] = init[:, None]
    return out


def _coords(vals: np.ndarray, has: np.ndarray, absolute: np.ndarray, init: np.ndarray
            ) -> np.ndarray:
    """x (or y) of each record: an absolute value sets it, a relative one adds to it, an
    absent one keeps it."""
    m = vals.shape[1]
    add = np.where(has & ~absolute, vals, 0)
    total = np.cumsum(add, axis=1)
    last = np.maximum.accumulate(np.where(has & absolute, np.arange(m), -1))
    at = np.maximum(last, 0)
    base = np.where(last >= 0, vals[:, at] - total[:, at], init[:, None])
    out = base + total
    if len(out) and out.size and np.abs(out).max() >= COORD_LIMIT:
        raise ValueError(f"a coordinate beyond ±{COORD_LIMIT} database units")
    return out


@dataclass(frozen=True)
class Stretch:
    """What ``decode`` found in n copies of a layout of m placements and k rectangles."""
    child: np.ndarray       # int64 [n, m] cell ids
    origin: np.ndarray      # int64 [n, m, 2]
    reflect: np.ndarray     # bool [m]
    quarter: np.ndarray     # int64 [m]
    keys: np.ndarray        # int64 [n, k]: layer << 32 | datatype
    boxes: np.ndarray       # int64 [n, k, 4]
    end: list[int]          # the modal values (MODAL) after the last copy
    absolute: bool          # the xy mode after it


def decode(layout: Layout, rows: np.ndarray, absolute: bool, start: np.ndarray,
           ids_of: Callable[[np.ndarray], np.ndarray]) -> Stretch:
    """The placements and rectangles of each row of ``rows`` (uint8 [n, layout.length]: one
    copy of the stretch each), starting from modal values ``start`` (int64 [n, len(MODAL)])
    and xy mode ``absolute``; ``ids_of`` turns reference numbers into cell ids. ValueError
    for a modal variable used before it is set or a coordinate beyond COORD_LIMIT."""
    vals, has = layout.values(rows), layout.present
    sets_mode = (layout.rid == 15) | (layout.rid == 16)
    last = np.maximum.accumulate(np.where(sets_mode, np.arange(len(layout.rid)), -1))
    mode = np.where(last >= 0, layout.rid[np.maximum(last, 0)] == 15, absolute)
    end = start[-1].tolist()
    place = np.flatnonzero(layout.rid == 17)
    v, h, info = vals[:, place], has[place], layout.info[place]
    cell_ids = v[:, :, 0].copy()
    if h[:, 0].any():
        cell_ids[:, h[:, 0]] = ids_of(v[:, h[:, 0], 0])
    child = _fill(cell_ids, h[:, 0], start[:, 2], "placement-cell")
    x = _coords(v[:, :, 1], h[:, 1], mode[place], start[:, 0])
    y = _coords(v[:, :, 2], h[:, 2], mode[place], start[:, 1])
    if len(place):
        end[0], end[1], end[2] = int(x[-1, -1]), int(y[-1, -1]), int(child[-1, -1])
    origin = np.stack([x, y], axis=2)
    reflect, quarter = (info & 1) != 0, (info >> 1) & 3
    rect = np.flatnonzero(layout.rid == 20)
    v, h, info = vals[:, rect], has[rect], layout.info[rect]
    layer = _fill(v[:, :, 0], h[:, 0], start[:, 5], "layer")
    datatype = _fill(v[:, :, 1], h[:, 1], start[:, 6], "datatype")
    w = _fill(v[:, :, 2], h[:, 2], start[:, 7], "geometry-w")
    square = (info & 0x80) != 0              # a square's height is its width
    height = _fill(np.where(square, w, v[:, :, 3]), h[:, 3] | square, start[:, 8], "geometry-h")
    x = _coords(v[:, :, 4], h[:, 4], mode[rect], start[:, 3])
    y = _coords(v[:, :, 5], h[:, 5], mode[rect], start[:, 4])
    boxes = np.stack([x, y, x + w, y + height], axis=2)
    if boxes.size and boxes[..., 2:].max() >= COORD_LIMIT:
        raise ValueError(f"a coordinate beyond ±{COORD_LIMIT} database units")
    if len(rect):
        end[3:] = (int(x[-1, -1]), int(y[-1, -1]), int(layer[-1, -1]), int(datatype[-1, -1]),
                   int(w[-1, -1]), int(height[-1, -1]))
    return Stretch(child, origin, reflect, quarter, layer << 32 | datatype, boxes, end,
                   bool(mode[-1]) if len(mode) else absolute)
