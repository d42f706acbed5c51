"""Pictures of a placement: the overview of every die and a map of one die.

Tiles are coloured by the tensor's role in its block (q_proj, mlp.down_proj, …; the
embedding and head have their own): a dozen fixed colours that mean the same thing on every
die, whatever the number of layers. The layer is written instead: over each die the blocks it
holds ("die 4 · L6–8"), and on the tiles the tensor's name ("L7 q_proj") wherever the name
fits inside that tensor's own tiles. A lighter shade of a colour is the same tensor's fp16
scales (and minimums); fp16 vectors (norms, biases) are dark grey; unused tiles light grey.
Dark lines join the centres of consecutive tiles of the dataflow on a die (drawn when a tile
is at least 3 pixels on its short side). Row 0 of the tile grid is at the bottom, as on the
die.

The overview lays the dies out in a grid of the aspect that makes them largest; at 100+
dies each die is small but keeps its number. Everything is integer arithmetic on a numpy
array (taalasc/draw.py): the same placement gives the same bytes on every machine, which
``verify`` relies on when it rebuilds these files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taalasc import draw
from taalasc.config.base_array import BaseArray
from taalasc.model.arch import block_role
from taalasc.place.plan import KINDS, Placement
from taalasc.png import write_png

Colour = tuple[int, int, int]
BACKGROUND: Colour = (255, 255, 255)
UNUSED: Colour = (222, 222, 222)
VECTORS: Colour = (105, 105, 105)
OTHER: Colour = (170, 150, 120)   # roles past the palette (a model with unusual blocks)
LINK: Colour = (20, 20, 20)
DIE_EDGE: Colour = (120, 120, 120)
# Distinct hues in role order (embedding, then a block's tensors in dataflow order, then
# the head): Tableau/Kelly-style colours, none near the greys above.
PALETTE: tuple[Colour, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (0, 0, 128),
    (255, 200, 0), (128, 0, 64))
MARGIN, GAP_PX = 12, 10
_MAP_MAX_PX = 900                   # a die map's longer side at most
SEAM_MIN_PX, LINK_MIN_PX = 5, 6     # tile sizes from which seams and dataflow lines are drawn
_GRID_MAX_W, _GRID_MAX_H = 1400, 1100  # the overview's die grid at most


def _light(colour: Colour) -> Colour:
    """Halfway to white: the same tensor's fp16 scales and minimums."""
    return tuple(int(round(0.45 * c + 0.55 * 255)) for c in colour)  # type: ignore[return-value]


@dataclass(frozen=True)
class TileColours:
    """Every tile's colour code and tensor, and what the codes mean.

    ``codes[die, row, column]``: 0 unused, 1 background, 2 + 2·class + light, row 0 the top
    row of the picture (the die's highest row). ``tensor[die, row, column]``: index into
    ``names`` + 1, 0 for an unused tile. ``classes``: (colour, label) per class.
    """
    codes: np.ndarray
    tensor: np.ndarray
    classes: list[tuple[Colour, str]]
    names: list[str]       # tensors in dataflow order
    labels: list[str]      # their short names on the map ("L3 q_proj", "embed_tokens")
    layers: list[int | None]

    def lut(self) -> np.ndarray:
        lut = np.zeros((2 + 2 * len(self.classes), 3), dtype=np.uint8)
        lut[0], lut[1] = UNUSED, BACKGROUND
        for i, (colour, _) in enumerate(self.classes):
            lut[2 + 2 * i], lut[3 + 2 * i] = colour, _light(colour)
        return lut


def _short_names(roles: list[str]) -> dict[str, str]:
    """The fewest trailing dotted parts that tell each role apart (q_proj,
    attention.output.dense)."""
    out = {}
    for role in roles:
        parts = role.split(".")
        for k in range(1, len(parts) + 1):
            tail = ".".join(parts[-k:])
            if k == len(parts) or sum(r == tail or r.endswith("." + tail) for r in roles) == 1:
                out[role] = tail
                break
    return out


def tile_colours(placement: Placement, base: BaseArray) -> TileColours:
    """Colour class of every tile (vectorised: models with 10^5 tiles made a Python loop over
    tiles the slow part)."""
    grid = base.tile_grid
    dies = max(placement.dies, 1)
    rows = placement.rows
    names = placement.tensors   # dataflow order; rows["tensor"] indexes it
    layers = [layer for _, layer in placement.layers]
    vector = {names[t] for t in np.unique(rows["tensor"][rows["kind"] == KINDS.index("vector")])}
    roles = list(dict.fromkeys(block_role(n) for n in names if n not in vector))
    short = _short_names(roles)
    palette_roles = roles[:len(PALETTE)]
    classes = [(PALETTE[i], short[r]) for i, r in enumerate(palette_roles)]
    vectors_class, other_class = len(classes), len(classes) + 1
    classes += [(VECTORS, "fp16 vectors (norms, biases)"), (OTHER, "other tensors")]
    role_class = {r: i for i, r in enumerate(palette_roles)}
    klass = [vectors_class if n in vector else role_class.get(block_role(n), other_class)
             for n in names]
    labels = [short.get(block_role(n), block_role(n)) for n in names]
    labels = [lab if la is None else f"L{la} {lab}" for lab, la in zip(labels, layers)]

    tid = rows["tensor"].astype(np.int64)
    light = np.isin(rows["kind"], [KINDS.index("scales"), KINDS.index("mins")]).astype(np.int64)
    die, col, row = (rows[f].astype(np.int64) for f in ("die", "column", "row"))
    inside = ((die >= 0) & (die < dies) & (col >= 0) & (col < grid.columns)
              & (row >= 0) & (row < grid.rows))
    codes = np.zeros((dies, grid.rows, grid.columns), dtype=np.int64)
    tensor = np.zeros_like(codes)
    at = (die[inside], grid.rows - 1 - row[inside], col[inside])
    codes[at] = 2 + 2 * np.asarray(klass, dtype=np.int64)[tid[inside]] + light[inside]
    tensor[at] = tid[inside] + 1
    return TileColours(codes, tensor, classes, names, labels, layers)


def legend_items(colours: TileColours, links_drawn: bool) -> list[tuple[Colour, str]]:
    """(colour, label) of every class that occurs, unused tiles, and the dataflow lines."""
    used = {int(c - 2) // 2 for c in np.unique(colours.codes) if c >= 2}
    items = [colours.classes[i] for i in sorted(used)]
    items.append((UNUSED, "unused tile"))
    if links_drawn:
        items.append((LINK, "dataflow link (same die)"))
    return items


def _manifest_legend(colours: TileColours, items) -> list[tuple[Colour, str]]:
    """The drawn legend and the lighter shades that occur (recorded in the manifest)."""
    present = {int(c) for c in np.unique(colours.codes)}
    light = [(_light(colour), f"{label}: fp16 scales and minimums")
             for i, (colour, label) in enumerate(colours.classes) if 3 + 2 * i in present]
    return list(items) + light


# --- die rasters -------------------------------------------------------------------------------

def cell_px(base: BaseArray, width_px: float, height_px: float) -> tuple[int, int]:
    """Whole pixels per tile (width, height) for a die at most ``width_px`` × ``height_px``,
    keeping the tile pitch ratio; (0, 0) when a tile would be under one pixel."""
    grid = base.tile_grid
    short = min(grid.pitch_x_nm, grid.pitch_y_nm)
    ax, ay = grid.pitch_x_nm / short, grid.pitch_y_nm / short
    unit = int(min(width_px / (grid.columns * ax), height_px / (grid.rows * ay)))
    if unit < 1:
        return 0, 0
    return max(1, round(unit * ax)), max(1, round(unit * ay))


def die_size_px(base: BaseArray, width_px: float, height_px: float) -> tuple[int, int, int, int]:
    """(die width, die height, tile width, tile height) in pixels; tiles of 0 pixels when
    the die is drawn by sampling (more tiles than pixels)."""
    grid = base.tile_grid
    cw, ch = cell_px(base, width_px, height_px)
    if cw:
        return grid.columns * cw, grid.rows * ch, cw, ch
    die_w_nm, die_h_nm = grid.columns * grid.pitch_x_nm, grid.rows * grid.pitch_y_nm
    s = min(width_px / die_w_nm, height_px / die_h_nm)
    return max(1, int(die_w_nm * s)), max(1, int(die_h_nm * s)), 0, 0


def die_pixels(cells: np.ndarray, width: int, height: int, cw: int, ch: int) -> np.ndarray:
    """Index image [height, width] of a die's ``cells`` [rows, columns]: each pixel shows the
    tile under it (tiles of cw × ch pixels, or sampled when cw == 0); with tiles of at least
    SEAM_MIN_PX pixels each, the last pixel row and column of a tile is the seam (1,
    background)."""
    rows, columns = cells.shape
    py, px = np.arange(height), np.arange(width)
    out = cells[(py * rows // height)[:, None], (px * columns // width)[None, :]]
    if cw and min(cw, ch) >= SEAM_MIN_PX:
        out = out.copy()
        out[py % ch == ch - 1] = 1
        out[:, px % cw == cw - 1] = 1
    return out


# Line pixels are made for at most this many points at a time (bounded memory on huge models).
_LINE_CHUNK_POINTS = 1 << 21


def _rounded_points(lo: np.ndarray, hi: np.ndarray, steps: np.ndarray, i: np.ndarray,
                    which: np.ndarray, last: np.ndarray) -> np.ndarray:
    """One coordinate of every point, in linspace's float64 arithmetic, rounded to pixels."""
    v = i * ((hi - lo).astype(np.float64) / steps)[which] + lo.astype(np.float64)[which]
    v[last] = hi  # linspace sets the end point exactly
    return np.rint(v).astype(np.intp)


def _lines(img: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
           y1: np.ndarray) -> None:
    """Draw straight lines (x0, y0) -> (x1, y1) in LINK, all at once.

    Each line has max(|dx|, |dy|, 1) + 1 points, rounded to the pixel as
    ``np.rint(np.linspace(x0, x1, steps + 1))`` would round them: point i is
    ``i * ((x1 - x0) / steps) + x0`` in float64 and the last point is exactly the end, so the
    pixels are the same as drawing the lines one by one with linspace.
    """
    steps = np.maximum(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0)), 1)
    counts = steps + 1
    ends = np.cumsum(counts)
    first = 0
    while first < len(steps):
        # Whole lines per chunk, at least one, about _LINE_CHUNK_POINTS points.
        done = int(ends[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(ends, done + _LINE_CHUNK_POINTS, side="right")))
        sl = slice(first, last)
        n = counts[sl]
        which = np.repeat(np.arange(len(n)), n)
        starts = np.cumsum(n) - n
        i = (np.arange(int(n.sum())) - np.repeat(starts, n)).astype(np.float64)
        xs = _rounded_points(x0[sl], x1[sl], steps[sl], i, which, starts + n - 1)
        ys = _rounded_points(y0[sl], y1[sl], steps[sl], i, which, starts + n - 1)
        img[ys, xs] = LINK
        first = last


def _links_shown(cw: int, ch: int) -> bool:
    return cw > 0 and min(cw, ch) >= LINK_MIN_PX


def _links_of(placement: Placement) -> np.ndarray:
    """[n, 6] (die, column, row) of both ends of every dataflow link on one die."""
    return placement.link_ends()


def draw_die(img: np.ndarray, x: int, y: int, colours: TileColours, die: int,
             size: tuple[int, int, int, int], lut: np.ndarray, links: np.ndarray | None,
             base: BaseArray) -> None:
    """Die ``die``'s tiles with their top-left corner at (x, y); its dataflow links when the
    tiles are at least LINK_MIN_PX on their short side (under that they hide the colours)."""
    width, height, cw, ch = size
    img[y:y + height, x:x + width] = lut[die_pixels(colours.codes[die], width, height, cw, ch)]
    if links is not None and _links_shown(cw, ch):
        mine = links[links[:, 0] == die]
        if len(mine):
            rows = base.tile_grid.rows
            xa, ya = x + mine[:, 1] * cw + cw // 2, y + (rows - 1 - mine[:, 2]) * ch + ch // 2
            xb, yb = x + mine[:, 4] * cw + cw // 2, y + (rows - 1 - mine[:, 5]) * ch + ch // 2
            _lines(img, xa, ya, xb, yb)


def label_tensors(img: np.ndarray, x: int, y: int, colours: TileColours, die: int,
                  size: tuple[int, int, int, int], lut: np.ndarray) -> None:
    """Each tensor's short name on the die, centred on its tile nearest the middle of its
    tiles, where the whole name lies on that tensor's own tiles."""
    width, height, cw, ch = size
    if not cw:
        return
    tensor = colours.tensor[die]
    ids = die_pixels(tensor, width, height, cw, 0)  # tensor under each pixel, no seams
    tiles = np.bincount(tensor.ravel())  # tiles of each tensor on this die
    present = np.nonzero(tiles)[0]
    for t in present[present > 0]:
        label = colours.labels[t - 1]
        w, h = draw.text_width(label) + 2, draw.CHAR_H + 2
        if tiles[t] * cw * ch < w * h:  # too few tiles for the name, whatever their shape
            continue
        rr, cc = np.nonzero(tensor == t)
        k = int(np.argmin((rr - rr.mean()) ** 2 * ch * ch + (cc - cc.mean()) ** 2 * cw * cw))
        cx, cy = int(cc[k]) * cw + cw // 2, int(rr[k]) * ch + ch // 2
        x0 = min(max(cx - w // 2, 0), width - w)
        y0 = min(max(cy - h // 2, 0), height - h)
        if x0 < 0 or y0 < 0 or not (ids[y0:y0 + h, x0:x0 + w] == t).all():
            continue
        # on a box of the tile's own colour: seams and dataflow lines do not cross the name
        background = tuple(int(v) for v in lut[colours.codes[die][rr[k], cc[k]]])
        draw.fill(img, x + x0, y + y0, x + x0 + w, y + y0 + h, background)
        draw.draw_text(img, x + x0 + 1, y + y0 + 1, label, draw.readable_on(background))


def _layer_span(colours: TileColours, die: int) -> str:
    """The blocks on a die: "embed, L0–2", "L3–5", "L29, head"."""
    found = np.unique(colours.tensor[die])
    layers = sorted({colours.layers[t - 1] for t in found[found > 0]} - {None})
    unlayered = [t - 1 for t in found[found > 0] if colours.layers[t - 1] is None]
    first = min((la for la in colours.layers if la is not None), default=None)
    parts = []
    before = [t for t in unlayered if first is None or t < colours.layers.index(first)]
    if before:
        parts.append("embed")
    if layers:
        parts.append(f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}–{layers[-1]}")
    if len(before) < len(unlayered):
        parts.append("head")
    return ", ".join(parts)


def _header(img: np.ndarray, title: str, lines: list[str], width: int) -> int:
    y = MARGIN
    draw.draw_text(img, MARGIN, y, draw.fit_text(title, width), bold=True)
    y += draw.LINE_H + 2
    for line in lines:
        for part in draw.wrap(line, width):
            draw.draw_text(img, MARGIN, y, part, draw.MUTED)
            y += draw.LINE_H
    return y + 6


def _header_height(title: str, lines: list[str], width: int) -> int:
    return MARGIN + draw.LINE_H + 2 + sum(len(draw.wrap(s, width)) for s in lines) * draw.LINE_H + 6


def _grid_shape(base: BaseArray, dies: int, label_h: int) -> tuple[int, tuple[int, int, int, int]]:
    """(dies per row, die size) that makes the dies largest within the grid limits."""
    best = None
    for across in range(1, dies + 1):
        down = math.ceil(dies / across)
        w = (_GRID_MAX_W - (across - 1) * GAP_PX) / across
        h = (_GRID_MAX_H - down * (label_h + GAP_PX)) / down
        size = die_size_px(base, min(w, _MAP_MAX_PX), min(h, _MAP_MAX_PX))
        if best is None or size[0] * size[1] > best[1][0] * best[1][1]:
            best = (across, size)
        if down == 1:
            break
    return best


def overview_image(placement: Placement, base: BaseArray, model: str = "",
                   colours: TileColours | None = None
                   ) -> tuple[np.ndarray, list[tuple[Colour, str]]]:
    """Every die in a grid with its number and blocks, a title and a legend; the RGB uint8
    image and the legend [(colour, label), ...] (lighter shades included). ``colours``:
    ``tile_colours(placement, base)``, when the caller has it."""
    grid = base.tile_grid
    dies = max(placement.dies, 1)
    colours = colours or tile_colours(placement, base)
    lut = colours.lut()
    spans = [_layer_span(colours, d) for d in range(dies)]
    heads = [f"die {d} · {span}" if span else f"die {d}" for d, span in enumerate(spans)]
    across, size = _grid_shape(base, dies, draw.LINE_H)
    lines = 1
    if max(draw.text_width(h) for h in heads) > size[0]:  # the blocks on a line of their own
        lines = 2
        across, size = _grid_shape(base, dies, 2 * draw.LINE_H)
    label_h = lines * draw.LINE_H
    down = math.ceil(dies / across)
    die_w, die_h, cw, ch = size
    links = _links_of(placement) if len(placement.link_rows) else None
    links_drawn = links is not None and len(links) > 0 and _links_shown(cw, ch)
    items = legend_items(colours, links_drawn)
    grid_w = across * die_w + (across - 1) * GAP_PX
    title = (f"{model} on {base.name}" if model else base.name) + \
        f": {dies:,} {'die' if dies == 1 else 'dies'}, {placement.tiles_used:,} of " \
        f"{dies * grid.tiles:,} tiles used"
    notes = [f"Each die: {grid.columns} × {grid.rows} tiles of "
             f"{grid.pitch_x_nm / 1000:g} × {grid.pitch_y_nm / 1000:g} µm, row 0 at the bottom; "
             "over it its number and the blocks it holds (L = layer). Colour = the tensor's "
             "role in its block; a lighter shade = its fp16 scales."]
    inner = max(grid_w, 480)
    header_h = _header_height(title, notes, inner)
    grid_h = down * (label_h + die_h + GAP_PX)
    width = inner + 2 * MARGIN
    height = header_h + grid_h + draw.legend_height(items, inner) + MARGIN + 4
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    y = _header(img, title, notes, inner)
    for d in range(dies):
        x0 = MARGIN + (d % across) * (die_w + GAP_PX)
        y0 = y + (d // across) * (label_h + die_h + GAP_PX)
        if lines == 1:
            draw.draw_text(img, x0, y0, heads[d], bold=True)
        else:
            draw.draw_text(img, x0, y0, draw.fit_text(f"die {d}", die_w) or f"{d}", bold=True)
            draw.draw_text(img, x0, y0 + draw.LINE_H, draw.fit_text(spans[d], die_w), draw.MUTED)
        top = y0 + label_h
        draw_die(img, x0, top, colours, d, size, lut, links, base)
        draw.frame(img, x0 - 1, top - 1, x0 + die_w + 1, top + die_h + 1, DIE_EDGE)
        label_tensors(img, x0, top, colours, d, size, lut)
    draw.draw_legend(img, MARGIN, y + grid_h + 4, items, inner)
    return img, _manifest_legend(colours, items)


def die_map_image(placement: Placement, base: BaseArray, die: int, model: str = "",
                  colours: TileColours | None = None, links: np.ndarray | None = None
                  ) -> np.ndarray:
    """One die at up to 900 pixels: its tiles, tensor names, the tile grid's column and row
    numbers, a title and a legend. ``colours``, ``links``: ``tile_colours`` and ``_links_of``
    of the placement, made once for many dies (an 8 B model has ~2 M links on ~1,000 dies)."""
    grid = base.tile_grid
    dies = max(placement.dies, 1)
    colours = colours or tile_colours(placement, base)
    size = die_size_px(base, _MAP_MAX_PX, _MAP_MAX_PX)
    die_w, die_h, cw, ch = size
    if links is None and len(placement.link_rows):
        links = _links_of(placement)
    links_drawn = links is not None and bool((links[:, 0] == die).any()) and _links_shown(cw, ch)
    only = TileColours(colours.codes[die:die + 1], colours.tensor[die:die + 1], colours.classes,
                       colours.names, colours.labels, colours.layers)
    items = legend_items(only, links_drawn)
    used = int((colours.codes[die] >= 2).sum())
    span = _layer_span(colours, die)
    title = (f"{model} on {base.name}, " if model else f"{base.name}, ") + f"die {die} of {dies}"
    notes = [f"{used:,} of {grid.tiles:,} tiles used" + (f", blocks {span}" if span else "")
             + f"; tile {grid.pitch_x_nm / 1000:g} × {grid.pitch_y_nm / 1000:g} µm. "
             "Colour = the tensor's role in its block; a lighter shade = its fp16 scales."]
    axis_w = draw.text_width(str(grid.rows - 1)) + 6   # row numbers left of the die
    inner = max(axis_w + die_w, 480)
    header_h = _header_height(title, notes, inner)
    height = header_h + die_h + draw.LINE_H + 8 + draw.legend_height(items, inner) + MARGIN
    img = np.full((height, inner + 2 * MARGIN, 3), 255, dtype=np.uint8)
    y = _header(img, title, notes, inner)
    x = MARGIN + axis_w
    lut = colours.lut()
    draw_die(img, x, y, colours, die, size, lut, links, base)
    draw.frame(img, x - 1, y - 1, x + die_w + 1, y + die_h + 1, DIE_EDGE)
    label_tensors(img, x, y, colours, die, size, lut)
    if cw:  # column and row numbers where they do not crowd each other
        step = _tick_step(cw, draw.text_width(str(grid.columns - 1)) + 6)
        for c in range(0, grid.columns, step):
            text = str(c)
            draw.draw_text(img, x + c * cw + cw // 2 - draw.text_width(text) // 2,
                           y + die_h + 3, text, draw.MUTED)
        step = _tick_step(ch, draw.LINE_H)
        for r in range(0, grid.rows, step):
            text = str(r)
            draw.draw_text(img, x - 4 - draw.text_width(text),
                           y + (grid.rows - 1 - r) * ch + ch // 2 - draw.CHAR_H // 2, text,
                           draw.MUTED)
    draw.draw_legend(img, MARGIN, y + die_h + draw.LINE_H + 8, items, inner)
    return img


def _tick_step(cell_px: int, label_px: int) -> int:
    """Every 1, 2, 5, 10, 20, 50, … tiles: the first step whose labels do not overlap."""
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        if step * cell_px >= label_px:
            return step
    return 1000


def overview_png(placement: Placement, base: BaseArray, path: str | Path,
                 model: str = "") -> list[tuple[Colour, str]]:
    """Write the overview PNG to ``path``; return its legend [(rgb, label), ...]."""
    img, legend = overview_image(placement, base, model)
    write_png(path, img)
    return legend


def write_pictures(placement: Placement, base: BaseArray, folder: Path, dies, model: str = ""
                   ) -> list[tuple[Colour, str]]:
    """A compile's pictures: ``overview.png`` and ``die{N}.png`` for each of ``dies``, in
    ``folder``; returns the overview's legend."""
    colours = tile_colours(placement, base)
    img, legend = overview_image(placement, base, model, colours)
    write_png(Path(folder) / "overview.png", img)
    links = _links_of(placement) if len(placement.link_rows) else None
    for die in dies:
        write_png(Path(folder) / f"die{die}.png",
                  die_map_image(placement, base, die, model, colours, links))
    return legend


def die_map_png(placement: Placement, base: BaseArray, die: int, path: str | Path,
                model: str = "") -> None:
    """Write the map of die ``die`` to ``path``."""
    write_png(path, die_map_image(placement, base, die, model))
