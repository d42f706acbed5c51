"""Tile visiting orders over a W x H tile grid: the generalized Hilbert curve and baselines.

``gilbert`` is Jakub Červený's generalized Hilbert curve ("gilbert2d", public domain / BSD),
which covers any W x H rectangle. The reference starts at (0, 0) and walks its major axis
first; when that axis has an odd length and the other an even one, the bipartite colouring
of the grid forces one diagonal step. We avoid it by making the even side the major axis
(a Hamiltonian path from a corner always exists then), so every step is a unit step.
The tests check that for every W, H up to 40.

Tile pitches are often far from square (sky130-demo: 60 x 420 um), and a unit step along
the long pitch costs as much as several along the short one. ``gilbert-runs`` groups each
grid row into runs of about pitch_long / pitch_short tiles (physically square), walks the
runs along a gilbert curve, and crosses each run end to end, entering at the end nearer to
where the previous run was left. Steps are unit steps except where the coarse curve turns
against the run direction. On a square pitch it is exactly ``gilbert``.
"""

from __future__ import annotations

from collections.abc import Iterator

from taalasc.errors import PlacementError

CURVES = ("gilbert", "gilbert-runs", "serpentine", "rowmajor")


def _sgn(x: int) -> int:
    return (x > 0) - (x < 0)


def _generate(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    # Region spanned by vector a (major) and b (minor) from corner (x, y).
    w, h = abs(ax + ay), abs(bx + by)
    dax, day = _sgn(ax), _sgn(ay)
    dbx, dby = _sgn(bx), _sgn(by)
    if h == 1:
        for _ in range(w):
            yield x, y
            x, y = x + dax, y + day
        return
    if w == 1:
        for _ in range(h):
            yield x, y
            x, y = x + dbx, y + dby
        return
    # Floor division on negative components is intended (as in the reference).
    ax2, ay2 = ax // 2, ay // 2
    bx2, by2 = bx // 2, by // 2
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:
        if w2 % 2 and w > 2:  # prefer even halves so the sub-curves end on the right corner
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _generate(x, y, ax2, ay2, bx, by)
        yield from _generate(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:
        if h2 % 2 and h > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _generate(x, y, bx2, by2, ax2, ay2)
        yield from _generate(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _generate(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                             -bx2, -by2, -(ax - ax2), -(ay - ay2))


def gilbert(width: int, height: int) -> list[tuple[int, int]]:
    """Generalized Hilbert order of all (column, row) cells of a width x height grid."""
    x_major = width >= height
    if width % 2 != height % 2:  # one side even: it must be the major axis (see module doc)
        x_major = width % 2 == 0
    if x_major:
        return list(_generate(0, 0, width, 0, 0, height))
    return list(_generate(0, 0, 0, height, width, 0))


def rowmajor(width: int, height: int) -> list[tuple[int, int]]:
    """The naive baseline: row 0 left to right, then row 1 left to right, ..."""
    return [(c, r) for r in range(height) for c in range(width)]


def serpentine(width: int, height: int) -> list[tuple[int, int]]:
    """Boustrophedon rows: unit steps, all but one per row along x."""
    return [(c if r % 2 == 0 else width - 1 - c, r) for r in range(height) for c in range(width)]


def _runs(n: int, length: int) -> list[tuple[int, int]]:
    """[start, end) of about n / length near-equal runs covering 0..n-1."""
    m = max(1, round(n / length))
    q, r = divmod(n, m)
    edges = [0]
    for i in range(m):
        edges.append(edges[-1] + q + (1 if i < r else 0))
    return list(zip(edges, edges[1:]))


def gilbert_runs(width: int, height: int, pitch_x: int, pitch_y: int) -> list[tuple[int, int]]:
    """gilbert over physically square runs of tiles along the short pitch (module doc)."""
    if pitch_x > pitch_y:  # runs go along y: solve the transposed grid
        return [(c, r) for r, c in gilbert_runs(height, width, pitch_y, pitch_x)]
    runs = _runs(width, max(1, round(pitch_y / pitch_x)))
    order: list[tuple[int, int]] = []
    for cx, row in gilbert(len(runs), height):
        a, b = runs[cx]
        last = order[-1][0] if order else a
        xs = range(a, b) if abs(last - a) <= abs(last - (b - 1)) else range(b - 1, a - 1, -1)
        order.extend((x, row) for x in xs)
    return order


def curve_order(name: str, width: int, height: int, pitch_x: int = 1,
                pitch_y: int = 1) -> list[tuple[int, int]]:
    """The visiting order ``name`` (one of CURVES) over a width x height grid."""
    if name == "gilbert-runs":
        return gilbert_runs(width, height, pitch_x, pitch_y)
    try:
        fn = {"gilbert": gilbert, "serpentine": serpentine, "rowmajor": rowmajor}[name]
    except KeyError:
        raise PlacementError(f"curve must be one of {', '.join(CURVES)}, not {name!r}") from None
    return fn(width, height)
