"""Our own rule check of the two custom layers, on flattened rectangles (numpy, no KLayout).

Rules (names as in the PDK YAML): via size exact (``via.size``), via spacing
(``via.space``, Euclidean edge distance, overlap counts too), via enclosed by one top-metal
rectangle by ``via_enclosure_top_nm`` on every side (``via.enclosure``), top-metal width
(``metal.width``), spacing between rectangles that do not touch (``metal.space``; catches
notches too), minimum area of a rectangle touching no other (``metal.area``), every edge on
the manufacturing grid (``grid``) and, when the die size is given, window density
(``density``). Near pairs are found by bucketing rectangles on a uniform grid, so ~1e6 vias
check in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taalasc.config.pdk import Pdk
from taalasc.custom.fill import window_density_pct
from taalasc.formats.readback import custom_layers, mask_layers, read_rects


@dataclass(frozen=True)
class Violation:
    rule: str
    x_nm: int
    y_nm: int
    message: str


def _near_pairs(a: np.ndarray, b: np.ndarray | None, reach: int, cell: int) -> np.ndarray:
    """Index pairs (i in a, j in b) whose rectangles come within ``reach`` nm of each other.

    With ``b`` None, pairs within ``a`` with i < j. Rectangles are registered in every bucket
    their grown box covers; a pair may be listed more than once.
    """
    same = b is None
    b = a if same else b

    def buckets(r, grow):
        bx0, by0 = (r[:, 0] - grow) // cell, (r[:, 1] - grow) // cell
        bx1, by1 = (r[:, 2] + grow) // cell, (r[:, 3] + grow) // cell
        nx, ny = bx1 - bx0 + 1, by1 - by0 + 1
        count = nx * ny
        idx = np.repeat(np.arange(len(r)), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        kx, ky = bx0[idx] + k // ny[idx], by0[idx] + k % ny[idx]
        return (kx << 32) + ky, idx

    ka, ia = buckets(a, reach)
    kb, ib = buckets(b, 0)
    order = np.argsort(kb, kind="stable")
    kb, ib = kb[order], ib[order]
    lo, hi = np.searchsorted(kb, ka, "left"), np.searchsorted(kb, ka, "right")
    n = hi - lo
    i = np.repeat(ia, n)
    j = ib[np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
    keep = i < j if same else np.ones(len(i), bool)
    # Pairs sharing several buckets repeat; callers only OR results or dedupe violations.
    return np.stack([i[keep], j[keep]], axis=1)


def _gaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.maximum(a[:, 0], b[:, 0]) - np.minimum(a[:, 2], b[:, 2])
    gy = np.maximum(a[:, 1], b[:, 1]) - np.minimum(a[:, 3], b[:, 3])
    return gx, gy


def check_rects(vias: np.ndarray, metal: np.ndarray, pdk: Pdk, *,
                die_nm: tuple[int, int] | None = None, max_per_rule: int = 20,
                keep_outs=()) -> list[Violation]:
    """All violations (empty list = clean), at most ``max_per_rule`` listed per rule plus one
    summary entry when a rule has more."""
    r, g = pdk.rules, pdk.grid_nm
    vias = np.asarray(vias, np.int64).reshape(-1, 4)
    metal = np.asarray(metal, np.int64).reshape(-1, 4)
    found: dict[str, list[tuple[int, int, str]]] = {}

    def report(rule: str, rects: np.ndarray, mask: np.ndarray, text, pairs=None) -> None:
        ks = np.flatnonzero(mask)
        if pairs is not None and len(ks):  # one entry per distinct pair
            _, first = np.unique(pairs[ks, 0] * (len(allr) + 1) + pairs[ks, 1], return_index=True)
            ks = ks[np.sort(first)]
        for k in ks:
            found.setdefault(rule, []).append((int(rects[k, 0]), int(rects[k, 1]), text(k)))

    allr = np.concatenate([vias, metal])
    report("grid", allr, np.any(allr % g != 0, axis=1), lambda k: f"edge off the {g} nm grid")
    vw, vh = vias[:, 2] - vias[:, 0], vias[:, 3] - vias[:, 1]
    report("via.size", vias, (vw != r.via_size_nm) | (vh != r.via_size_nm),
           lambda k: f"via is {vw[k]} x {vh[k]} nm, must be {r.via_size_nm} x {r.via_size_nm}")
    pitch = r.via_size_nm + r.via_space_nm
    p = _near_pairs(vias, None, r.via_space_nm, 2 * pitch)
    if len(p):
        gx, gy = _gaps(vias[p[:, 0]], vias[p[:, 1]])
        d2 = np.maximum(gx, 0) ** 2 + np.maximum(gy, 0) ** 2
        bad = (d2 < r.via_space_nm ** 2) | ((gx <= 0) & (gy <= 0))
        report("via.space", vias[p[:, 0]], bad,
               lambda k: f"vias {np.sqrt(d2[k]):.0f} nm apart, need {r.via_space_nm}", p)
    # Enclosure: the via grown by the enclosure must fit inside one metal rectangle.
    e = r.via_enclosure_top_nm
    grown = vias + np.array([-e, -e, e, e])
    enclosed = np.zeros(len(vias), bool)
    cell = 2 * (r.top_metal_width_nm + r.top_metal_space_nm)
    if len(vias) and len(metal):
        p = _near_pairs(vias, metal, 0, cell)
        m, v = metal[p[:, 1]], grown[p[:, 0]]
        inside = (m[:, 0] <= v[:, 0]) & (m[:, 1] <= v[:, 1]) & (m[:, 2] >= v[:, 2]) & (m[:, 3] >= v[:, 3])
        enclosed[p[inside, 0]] = True
    report("via.enclosure", vias, ~enclosed,
           lambda k: f"via not enclosed by {e} nm of one top-metal rectangle")
    mw = np.minimum(metal[:, 2] - metal[:, 0], metal[:, 3] - metal[:, 1])
    report("metal.width", metal, mw < r.top_metal_width_nm,
           lambda k: f"top metal {mw[k]} nm wide, need {r.top_metal_width_nm}")
    touching = np.zeros(len(metal), bool)
    if len(metal):
        p = _near_pairs(metal, None, r.top_metal_space_nm, 2 * cell)
        gx, gy = _gaps(metal[p[:, 0]], metal[p[:, 1]])
        d2 = np.maximum(gx, 0) ** 2 + np.maximum(gy, 0) ** 2
        touch = (gx <= 0) & (gy <= 0)
        touching[p[touch].ravel()] = True
        bad = ~touch & (d2 < r.top_metal_space_nm ** 2)
        report("metal.space", metal[p[:, 0]], bad,
               lambda k: f"top metal {np.sqrt(d2[k]):.0f} nm apart, need {r.top_metal_space_nm}",
               p)
    area_um2 = (metal[:, 2] - metal[:, 0]) * (metal[:, 3] - metal[:, 1]) * 1e-6
    report("metal.area", metal, ~touching & (area_um2 < r.top_metal_min_area_um2),
           lambda k: f"top metal area {area_um2[k]:.3f} um², need {r.top_metal_min_area_um2}")
    if die_nm is not None and len(metal):
        dens = window_density_pct(metal, die_nm, int(round(r.density_window_um * 1000)),
                                  int(round(r.density_step_um * 1000)), g, exclude=keep_outs)
        lo, hi = r.top_metal_density_min_pct, r.top_metal_density_max_pct
        for name, mask in (("density", (dens < lo) | (dens > hi)),):
            for ix, iy in zip(*np.nonzero(mask)):
                found.setdefault(name, []).append(
                    (int(ix), int(iy), f"window ({ix}, {iy}) density {dens[ix, iy]:.1f}% "
                                       f"outside {lo}..{hi}%"))
    out: list[Violation] = []
    for rule in sorted(found):
        items = found[rule]
        out += [Violation(rule, x, y, text) for x, y, text in items[:max_per_rule]]
        if len(items) > max_per_rule:
            out.append(Violation(rule, 0, 0, f"... and {len(items) - max_per_rule} more"))
    return out


def check_file(path: Path, pdk: Pdk, die_nm: tuple[int, int] | None = None,
               keep_outs=()) -> list[Violation]:
    """Read a mask file (flattened; only the two custom layers allowed) and check it.

    Density assumes the top-metal rectangles do not overlap, which holds for taalasc masks
    except at route corners (a few w x w squares counted twice).
    """
    via, metal = custom_layers(pdk)
    fill = (pdk.layers.top_metal_fill.gds_layer, pdk.layers.top_metal_fill.gds_datatype)
    rects = read_rects(Path(path), mask_layers(pdk))
    empty = np.zeros((0, 4), np.int64)
    # Fill is top metal to the rules (spacing, width, density): checked as one layer; and,
    # where the PDK rules fill apart (IHP TopMetal2:filler), against its own rules too.
    drawn, filled = rects.get(metal, empty), rects.get(fill, empty)
    top = np.concatenate([drawn, filled])
    found = check_rects(rects.get(via, empty), top, pdk, die_nm=die_nm, keep_outs=keep_outs)
    return found + fill_violations(filled, drawn, pdk) + wide_metal_violations(drawn, pdk)


def fill_violations(filled: np.ndarray, drawn: np.ndarray, pdk: Pdk,
                    max_per_rule: int = 20) -> list[Violation]:
    """Fill shapes against the PDK's fill rules: clearance to drawn metal, size limits, and
    spacing between fill shapes (only what differs from the drawn metal's rules)."""
    return (fill_clearance(filled, drawn, pdk, max_per_rule)
            + fill_sizes(filled, pdk, max_per_rule) + fill_spacing(filled, pdk, max_per_rule))


def fill_clearance(filled: np.ndarray, drawn: np.ndarray, pdk: Pdk,
                   max_per_rule: int = 20) -> list[Violation]:
    """Fill closer to drawn metal than the fill's clearance (where it exceeds the metal
    spacing, which check_rects already holds every top-metal shape to)."""
    r = pdk.rules
    c = r.fill_clearance
    if c <= r.top_metal_space_nm or not len(filled) or not len(drawn):
        return []
    p = _near_pairs(filled, drawn, c, max(4 * c, 1))
    gap = _gap2(filled[p[:, 0]], drawn[p[:, 1]])
    return [Violation("fill.clearance", int(filled[i, 0]), int(filled[i, 1]),
                      f"fill within {c} nm of drawn top metal")
            for i in np.unique(p[gap < c ** 2, 0])[:max_per_rule].tolist()]


def fill_sizes(filled: np.ndarray, pdk: Pdk, max_per_rule: int = 20) -> list[Violation]:
    """Fill shapes narrower or larger (bounding box) than the PDK's fill allows."""
    r = pdk.rules
    filled = np.asarray(filled, np.int64).reshape(-1, 4)
    w, h = filled[:, 2] - filled[:, 0], filled[:, 3] - filled[:, 1]
    bad = np.zeros(len(filled), bool)
    if r.fill_width_max_nm:
        bad |= np.maximum(w, h) > r.fill_width_max_nm
    if r.fill_width_min_nm:
        bad |= np.minimum(w, h) < r.fill_width_min_nm
    return [Violation("fill.size", int(filled[i, 0]), int(filled[i, 1]),
                      f"fill shape {w[i]} x {h[i]} nm outside "
                      f"{r.fill_width_min_nm or 0}..{r.fill_width_max_nm or 'any'} nm")
            for i in np.flatnonzero(bad)[:max_per_rule].tolist()]


def fill_spacing(filled: np.ndarray, pdk: Pdk, max_per_rule: int = 20) -> list[Violation]:
    """Fill shapes closer to each other than the fill spacing (where it exceeds the metal
    spacing)."""
    r = pdk.rules
    f = r.fill_space
    if f <= r.top_metal_space_nm or len(filled) < 2:
        return []
    p = _near_pairs(filled, None, f, max(4 * f, 1))
    gap = _gap2(filled[p[:, 0]], filled[p[:, 1]])
    return [Violation("fill.space", int(filled[i, 0]), int(filled[i, 1]),
                      f"fill shapes closer than {f} nm")
            for i in np.unique(p[gap < f ** 2, 0])[:max_per_rule].tolist()]


def wide_metal_violations(drawn: np.ndarray, pdk: Pdk, max_per_rule: int = 20
                          ) -> list[Violation]:
    """IHP TM2.bR and the like: a drawn top-metal rectangle at least ``wide_width`` wide
    needs ``wide_space`` to any drawn metal it runs beside for more than ``wide_run``."""
    r = pdk.rules
    width, run, space = r.top_metal_wide_width_nm, r.top_metal_wide_run_nm, \
        r.top_metal_wide_space_nm
    drawn = np.asarray(drawn, np.int64).reshape(-1, 4)
    if not (width and run and space) or not len(drawn):
        return []
    wide = np.flatnonzero(np.minimum(drawn[:, 2] - drawn[:, 0], drawn[:, 3] - drawn[:, 1])
                          >= width)
    if not len(wide):
        return []
    p = np.unique(_near_pairs(drawn[wide], drawn, space, max(4 * space, run)), axis=0)
    a, b = drawn[wide][p[:, 0]], drawn[p[:, 1]]
    gx, gy = _gaps(a, b)
    # Facing edges: apart in x with their y ranges overlapping for more than the run, or
    # apart in y with their x ranges overlapping for more than the run.
    bad = (wide[p[:, 0]] != p[:, 1]) & (
        ((gx > 0) & (gx < space) & (-gy > run)) | ((gy > 0) & (gy < space) & (-gx > run)))
    out = []
    for k in np.flatnonzero(bad)[:max_per_rule].tolist():
        out.append(Violation("metal.wide_space", int(a[k, 0]), int(a[k, 1]),
                             f"top metal at least {width} nm wide runs beside other metal "
                             f"for more than {run} nm only {int(max(gx[k], gy[k]))} nm away, "
                             f"need {space}"))
    return out


def _gap2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean gap between rectangle pairs (0 when they touch or overlap)."""
    gx, gy = _gaps(a, b)
    return np.maximum(gx, 0) ** 2 + np.maximum(gy, 0) ** 2
