"""Top-metal dataflow routes in the channels between weight tiles.

Both custom layers are single layers, so routes must be planar: a route may never cross
or touch another one. Routes live on *tracks* ``w = route_width`` wide at a pitch of
``w + top_metal_space``:

* vertical channel c is the gap right of tile column c (c = -1: the gap left of column 0,
  used only when it lies on the die); its tracks run the grid's full height, track 0 being
  ``top_metal_space`` from the tile on its left;
* horizontal channel r is the gap above tile row r (r = -1: below row 0), tracks likewise,
  track 0 nearest the tile below;
* two *port rows* per tile row cross each vertical channel only, at y = tile_y + H/2 (row A,
  floored to the grid) and one pitch below (row B); two *port columns* per tile column cross
  each horizontal channel only, at x = tile_x + W/2 (column A) and one pitch left (column B).

Ports (fixed places; the base chip has a pin on the metal below at each, and the tile's
dataflow input/output can use any of its four sides):

  side   channel, track                 OUT port   IN port
  east   right channel, track 0         row A      row B
  west   left channel, last track       row B      row A
  north  channel above, track 0         column A   column B
  south  channel below, last track      column B   column A

so a route between neighbouring tiles is one straight rung across the channel between them
(east OUT -> west IN on row A, west OUT -> east IN on row B, and likewise vertically).

Coordinates of a node are the lower-left corner of its ``w x w`` square. A route is the
cheapest path (A*, length + a penalty per bend and per unused port passed over) over free
nodes from any free OUT port of the source tile to any free IN port of the sink; every node
of a route is then taken. Adjacent nodes are one track pitch apart, so distinct routes keep
the spacing rule and never touch. A route that cannot be drawn raises MaskError.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from taalasc.config.base_array import BaseArray
from taalasc.custom.geometry import centred
from taalasc.errors import MaskError

_DIRS = ((1, 0), (-1, 0), (0, 1), (0, -1))


@dataclass(frozen=True)
class RoutedNet:
    """One drawn route: wire rectangles and its two via rectangles (die coordinates, nm)."""
    wires: np.ndarray  # [n, 4]
    vias: np.ndarray   # [2, 4]
    length_nm: int


class ChannelRouter:
    """Track graph of one die's routing channels; routes are added one at a time."""

    def __init__(self, base: BaseArray):
        rules, grid, tile = base.pdk.rules, base.tile_grid, base.weight_tile
        self.g = base.pdk.grid_nm
        self.w = base.datapath.route_width_nm
        self.s = rules.top_metal_space_nm
        self.via = rules.via_size_nm
        self.pitch = self.w + self.s
        self.via_offset = centred(self.w // 2, self.via, self.g)[0]
        enclosure = min(self.via_offset, self.w - self.via - self.via_offset)
        if enclosure < rules.via_enclosure_top_nm:
            raise MaskError(f"datapath.route_width_nm: {self.w} nm encloses a {self.via} nm via "
                            f"by {enclosure} nm; {base.pdk.name} needs "
                            f"{rules.via_enclosure_top_nm} nm (via_enclosure_top_nm)")
        W, H = tile.width_nm, tile.height_nm
        half = lambda n: (n // 2 // self.g) * self.g  # noqa: E731
        # X levels: (x, kind, channel or column, track or A/B); kind "v" track, "p" port column.
        xs: list[tuple[int, str, int, int]] = []
        ys: list[tuple[int, str, int, int]] = []
        self.vchannels: dict[int, tuple[int, int]] = {}
        self.hchannels: dict[int, tuple[int, int]] = {}
        self.tracks: dict[tuple[str, int], int] = {}
        for kind, count, origin, pitch, size, chans, levels in (
                ("v", grid.columns, grid.origin_nm[0], grid.pitch_x_nm, W, self.vchannels, xs),
                ("h", grid.rows, grid.origin_nm[1], grid.pitch_y_nm, H, self.hchannels, ys)):
            for c in range(-1, count):
                lo, hi = origin + c * pitch + size, origin + (c + 1) * pitch
                if lo < 0:
                    continue
                n = (hi - lo - self.s) // self.pitch
                if n < 2:
                    raise MaskError(f"tile_grid: the {hi - lo} nm routing channels hold {n} "
                                    f"route track(s); taalasc routes need 2 (route width "
                                    f"{self.w} nm + spacing {self.s} nm each)")
                chans[c] = (lo, hi)
                self.tracks[(kind, c)] = n
                levels += [(lo + self.s + k * self.pitch, kind, c, k) for k in range(n)]
        self.port_x: dict[int, tuple[int, int]] = {}  # column -> (B, A)
        self.port_y: dict[int, tuple[int, int]] = {}  # row -> (B, A)
        for c in range(grid.columns):
            a = grid.tile_origin_nm(c, 0)[0] + half(W)
            self.port_x[c] = (a - self.pitch, a)
            xs += [(a - self.pitch, "p", c, 1), (a, "p", c, 0)]
        for r in range(grid.rows):
            a = grid.tile_origin_nm(0, r)[1] + half(H)
            self.port_y[r] = (a - self.pitch, a)
            ys += [(a - self.pitch, "p", r, 1), (a, "p", r, 0)]
        xs.sort()
        ys.sort()
        self.X = [x for x, *_ in xs]
        self.Y = [y for y, *_ in ys]
        self.Xtrack = [kind == "v" for _, kind, _, _ in xs]
        self.Ytrack = [kind == "h" for _, kind, _, _ in ys]
        self.Xchan = [c for _, _, c, _ in xs]
        self.Ychan = [c for _, _, c, _ in ys]
        self._xi = {(kind, c, k): i for i, (_, kind, c, k) in enumerate(xs)}
        self._yi = {(kind, c, k): i for i, (_, kind, c, k) in enumerate(ys)}
        self.used: set[tuple[int, int]] = set()
        self.ports: set[tuple[int, int]] = set()
        for c in range(grid.columns):
            for r in range(grid.rows):
                for kind in ("out", "in"):
                    self.ports.update(self._ports(c, r, kind).values())

    def _ports(self, c: int, r: int, kind: str) -> dict[str, tuple[int, int]]:
        """Port nodes of tile (c, r) by side; sides whose channel is off the die are absent."""
        a_out = kind == "out"
        AB = {True: 0, False: 1}  # track key of port row/column A and B
        found = {}
        for side, (chan_kind, chan, first, row_a) in {
                "east": ("v", c, True, True), "west": ("v", c - 1, False, False),
                "north": ("h", r, True, True), "south": ("h", r - 1, False, False)}.items():
            n = self.tracks.get((chan_kind, chan))
            if n is None:
                continue
            track = 0 if first else n - 1
            use_a = row_a == a_out
            if chan_kind == "v":
                found[side] = (self._xi[("v", chan, track)], self._yi[("p", r, AB[use_a])])
            else:
                found[side] = (self._xi[("p", c, AB[use_a])], self._yi[("h", chan, track)])
        return found

    def _valid(self, xi: int, yi: int) -> bool:
        return self.Xtrack[xi] or self.Ytrack[yi]  # a port column never meets a port row

    def _neighbours(self, xi: int, yi: int):
        for d, (dx, dy) in enumerate(_DIRS):
            nx, ny = xi + dx, yi + dy
            if not (0 <= nx < len(self.X) and 0 <= ny < len(self.Y)) or not self._valid(nx, ny):
                continue
            # Off a full track, stay inside one channel (never run over a tile).
            if dx and not self.Ytrack[yi] and self.Xchan[nx] != self.Xchan[xi]:
                continue
            if dy and not self.Xtrack[xi] and self.Ychan[ny] != self.Ychan[yi]:
                continue
            if dx and not self.Ytrack[yi] and not (self.Xtrack[nx] and self.Xtrack[xi]):
                continue
            if dy and not self.Xtrack[xi] and not (self.Ytrack[ny] and self.Ytrack[yi]):
                continue
            yield d, nx, ny

    def port_centres_nm(self, column: int, row: int, kind: str) -> dict[str, tuple[int, int]]:
        """Centres of a tile's port vias by side, ``kind`` 'in' or 'out' (die coordinates)."""
        return {side: (self.X[xi] + self.w // 2, self.Y[yi] + self.w // 2)
                for side, (xi, yi) in self._ports(column, row, kind).items()}

    def route(self, a: tuple[int, int], b: tuple[int, int]) -> RoutedNet:
        """Route a free OUT port of tile ``a`` to a free IN port of tile ``b``; reserve it."""
        srcs = sorted(n for n in self._ports(*a, "out").values() if n not in self.used)
        dsts = sorted(n for n in self._ports(*b, "in").values() if n not in self.used)
        if not srcs or not dsts:
            which = f"OUT ports of tile {a}" if not srcs else f"IN ports of tile {b}"
            raise MaskError(f"cannot route tile {a} -> {b}: all {which} are already taken")
        path = self._search(srcs, set(dsts))
        if path is None:
            raise MaskError(f"cannot route tile {a} -> {b}: no free track path in the routing "
                            "channels (single-layer routes may not cross)")
        self.used.update(path)
        return self._draw(path)

    def _search(self, srcs, dsts):
        bend = 2 * self.pitch
        over_port = 8 * self.pitch
        targets = [(self.X[x], self.Y[y]) for x, y in dsts]

        def h(xi, yi):
            return min(abs(self.X[xi] - tx) + abs(self.Y[yi] - ty) for tx, ty in targets)

        best: dict = {}
        parent: dict = {}
        heap = []
        for x, y in srcs:
            best[(x, y, -1)] = 0
            heap.append((h(x, y), 0, (x, y, -1)))
        heapq.heapify(heap)
        while heap:
            _, cost, state = heapq.heappop(heap)
            xi, yi, d0 = state
            if cost > best.get(state, 1 << 62):
                continue
            if (xi, yi) in dsts:
                path = [(xi, yi)]
                while state in parent:
                    state = parent[state]
                    path.append(state[:2])
                return path[::-1]
            for d, nx, ny in self._neighbours(xi, yi):
                node = (nx, ny)
                if node in self.used:
                    continue
                step = abs(self.X[nx] - self.X[xi]) + abs(self.Y[ny] - self.Y[yi])
                step += bend if d0 not in (-1, d) else 0
                step += over_port if node in self.ports and node not in dsts else 0
                new = (nx, ny, d)
                if cost + step < best.get(new, 1 << 62):
                    best[new] = cost + step
                    parent[new] = state
                    heapq.heappush(heap, (cost + step + h(nx, ny), cost + step, new))
        return None

    def _draw(self, path: list[tuple[int, int]]) -> RoutedNet:
        pts = [(self.X[xi], self.Y[yi]) for xi, yi in path]
        corners = [pts[0]]
        for i in range(1, len(pts) - 1):
            (x0, _), (x1, _), (x2, _) = pts[i - 1], pts[i], pts[i + 1]
            if (x1 - x0 != 0) != (x2 - x1 != 0):  # direction changes here
                corners.append(pts[i])
        corners.append(pts[-1])
        w = self.w
        wires = []
        for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
            wires.append((min(x0, x1), min(y0, y1), max(x0, x1) + w, max(y0, y1) + w))
        if len(corners) == 1:  # source and sink on one node cannot happen (distinct ports)
            wires.append((pts[0][0], pts[0][1], pts[0][0] + w, pts[0][1] + w))
        o = self.via_offset
        vias = [(x + o, y + o, x + o + self.via, y + o + self.via) for x, y in (pts[0], pts[-1])]
        length = sum(abs(x1 - x0) + abs(y1 - y0) for (x0, y0), (x1, y1) in zip(pts, pts[1:]))
        return RoutedNet(np.array(wires, dtype=np.int64), np.array(vias, dtype=np.int64), length)
