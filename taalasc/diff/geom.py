"""Exact rectangle-set arithmetic for the diff: set difference, contact search, XOR polygons.

Count definition (what KLayout reports as ``(Region(A) ^ Region(B)).merged().count()``):
the XOR region of the two layers' unions, split into maximal connected pieces, where two
pieces touching along an edge or only at a corner are one polygon (KLayout's default
``min_coherence = false``); a piece with a hole is one polygon. For isolated vias that is
vias added + vias removed.

Why it is exact without a polygon engine: every point of A xor B lies in a rectangle present
on one side only (a "changed" rectangle). So the XOR is computed only inside changed
rectangles: changed rectangles that touch form a cluster, and a cluster is evaluated on the
compressed grid of its own edges and of the rectangles of the other side that overlap it.
A changed rectangle that touches nothing else (the usual case: one moved via) is one
polygon, found without building a grid.
"""

from __future__ import annotations

import numpy as np

from taalasc.errors import MaskError
from taalasc.formats.gdsflat import ragged

EMPTY = np.zeros((0, 4), np.int64)
MAX_CLUSTER_CELLS = 20_000_000   # compressed-grid cells of one cluster (memory guard)
_BIG_BUCKETS = 64                # a rectangle over more buckets is searched by x range
_PAIR_COST = 4                   # a candidate pair costs ~4 bucket entries (measured)
_NEAR_RATIO = 8                  # one side this many times the other's: filter it first


def unique_rows(rects: np.ndarray) -> np.ndarray:
    """Distinct rectangles, sorted (duplicates do not change a region)."""
    rects = np.asarray(rects, np.int64).reshape(-1, 4)
    return rects[distinct_index(rects)]


def distinct_index(rects: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct rectangle, in sorted-row order."""
    if len(rects) < 2:
        return np.arange(len(rects))
    keys = _row_keys(rects)
    order = np.lexsort(keys)
    return order[_starts([k[order] for k in keys])]


def sorted_rows(rects: np.ndarray) -> np.ndarray:
    """The order that sorts rectangles by (x0, y0, x1, y1) (stable)."""
    return np.lexsort(_row_keys(rects)) if len(rects) > 1 else np.arange(len(rects))


_FITS = (-(1 << 31), (1 << 31) - 1)


def _packed(rects: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Two int64 keys (size, corner) that order rectangles by (x0, y0, x1, y1) and tell them
    apart, when corners and sizes fit 32 bits (on any die they do); else None."""
    lo, size = rects[:, :2], rects[:, 2:] - rects[:, :2]
    if len(rects) and not (_FITS[0] <= lo.min() and lo.max() <= _FITS[1]
                           and 0 <= size.min() and size.max() <= _FITS[1]):
        return None
    return (size[:, 0] << 32) + size[:, 1], (lo[:, 0] << 32) + (lo[:, 1] - _FITS[0])


def _row_keys(*sets: np.ndarray) -> tuple[np.ndarray, ...]:
    """np.lexsort keys over the rows of ``sets`` (concatenated) that order the rectangles by
    (x0, y0, x1, y1) and tell them apart: two packed keys when every set packs, else the
    four columns. Two keys sort in about half the time of four (millions of rows for a
    changed die)."""
    packed = [_packed(r) for r in sets]
    if all(k is not None for k in packed):
        return tuple(np.concatenate(keys) for keys in zip(*packed))
    rows = np.concatenate(sets)
    return (rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0])


def _starts(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """True where a sorted row differs from the one before it (the first row included)."""
    start = np.zeros(len(sorted_keys[0]), bool)
    start[0] = True
    for k in sorted_keys:
        start[1:] |= k[1:] != k[:-1]
    return start


def common_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``a`` that are rows of ``b``, rows of ``b`` that are rows of ``a``), as two
    boolean masks, from one sort of both."""
    if not len(a) or not len(b):
        return np.zeros(len(a), bool), np.zeros(len(b), bool)
    keys = _row_keys(a, b)
    order = np.lexsort(keys)
    group = np.cumsum(_starts([k[order] for k in keys])) - 1
    del keys
    from_b = order >= len(a)
    has = np.zeros((2, group[-1] + 1), bool)
    has[0, group[~from_b]] = True
    has[1, group[from_b]] = True
    out = np.empty(len(order), bool)
    out[order] = np.where(from_b, has[0, group], has[1, group])   # the other side has it
    return out[:len(a)], out[len(a):]


def _hits(p: np.ndarray, q: np.ndarray, strict: bool) -> np.ndarray:
    if strict:  # overlap with positive area
        return (p[:, 0] < q[:, 2]) & (q[:, 0] < p[:, 2]) & (p[:, 1] < q[:, 3]) & (q[:, 1] < p[:, 3])
    return (p[:, 0] <= q[:, 2]) & (q[:, 0] <= p[:, 2]) & (p[:, 1] <= q[:, 3]) & (q[:, 1] <= p[:, 3])


def contact_pairs(p: np.ndarray, q: np.ndarray, strict: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with p[i] and q[j] touching (closed boxes) or, strict, overlapping.

    A uniform bucket grid joins the two sets (_join); the rectangles that span many buckets
    (long routes, straps, tile boxes) are checked against the other side's x range. Sorted by
    (i, j), each pair once.
    """
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not len(p) or not len(q):
        return none
    # A few changed shapes against a whole die's boxes (the diff's context search): the
    # bucket join would cost a pass per box, so the boxes far from every shape of the small
    # side are dropped first by a coarse grid, and the join runs on what is left.
    if len(q) > _NEAR_RATIO * len(p):
        near = _near(p, q)
        i, j = _join(p, q[near], strict)
        return i, near[j]
    if len(p) > _NEAR_RATIO * len(q):
        near = _near(q, p)
        i, j = _join(p[near], q, strict)
        return near[i], j
    return _join(p, q, strict)


def _near(p: np.ndarray, q: np.ndarray, cells: int = 1024) -> np.ndarray:
    """Indices of the boxes of ``q`` that may touch a box of ``p`` (closed boxes; a superset,
    in order): q must meet p's bounding box, and one of the cells of a coarse grid over it
    that a box of p covers. Closed boxes that touch share a point, whose cell both cover."""
    lo, hi = p[:, :2].min(axis=0), p[:, 2:].max(axis=0)
    shift = (int((hi - lo).max()) // cells).bit_length()   # cells of 2**shift nm: < cells a side
    n = int((hi - lo).max() >> shift) + 2

    def cells_of(r):   # cx0, cy0, cx1, cy1 of each box, clipped to p's bounding box
        return [(np.clip(r[:, k], lo[k % 2], hi[k % 2]) - lo[k % 2]) >> shift for k in range(4)]

    # cells covered by p: a 2-D difference array summed twice, then a summed-area table
    x0, y0, x1, y1 = cells_of(p)
    mark = np.zeros((n, n), np.int32)
    for ys, xs, sign in ((y0, x0, 1), (y0, x1 + 1, -1), (y1 + 1, x0, -1), (y1 + 1, x1 + 1, 1)):
        np.add.at(mark, (ys, xs), sign)
    table = np.zeros((n + 1, n + 1), np.int64)
    table[1:, 1:] = (mark.cumsum(axis=0).cumsum(axis=1) > 0).cumsum(axis=0).cumsum(axis=1)
    meets = ((q[:, 0] <= hi[0]) & (q[:, 2] >= lo[0]) & (q[:, 1] <= hi[1]) & (q[:, 3] >= lo[1]))
    x0, y0, x1, y1 = cells_of(q)
    covered = table[y1 + 1, x1 + 1] - table[y0, x1 + 1] - table[y1 + 1, x0] + table[y0, x0]
    return np.flatnonzero(meets & (covered > 0))


def _bucket_size(p: np.ndarray, q: np.ndarray, sample: int = 1 << 15) -> int:
    """The bucket side (nm) of the join that costs least by a uniform-density model: bucket
    entries of both sides, candidate pairs (entries of p times entries of q over the buckets
    of the bounding box, each ~_PAIR_COST entries' work), and for each rectangle over
    _BIG_BUCKETS buckets the other side's rectangles in its x range. A few vias against chunk
    boxes, a million changed vias against them, and long straps against vias each want
    another side; one percentile of both sets served only some. Rows are sampled at a fixed
    stride, so the choice is deterministic."""
    lo = np.minimum(p[:, :2].min(axis=0), q[:, :2].min(axis=0))
    hi = np.maximum(p[:, 2:].max(axis=0), q[:, 2:].max(axis=0))
    width, height = float(max(1, hi[0] - lo[0])), float(max(1, hi[1] - lo[1]))
    sides = []
    for r in (p, q):
        r = r[::max(1, len(r) // sample)]
        sides.append((r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]))
    ext = [float(np.percentile(np.maximum(w, h), 75)) for w, h in sides]
    best, best_cost = 1, None
    size = max(1, int(min(ext)) // 2)
    while True:
        per_side = []
        for (w, h), n, reach in zip(sides, (len(p), len(q)), ext[::-1]):
            buckets = (1 + w / size) * (1 + h / size)   # expected, at a random offset
            big = buckets > _BIG_BUCKETS
            x_range = np.minimum(1.0, (w + reach) / width)   # of the other side's rectangles
            per_side.append((n * float(np.mean(buckets * ~big)), n * float(np.mean(x_range * big))))
        (ep, bp), (eq, bq) = per_side
        cost = (ep + eq + _PAIR_COST * ep * eq * size * size / (width * height)
                + bp * len(q) + bq * len(p))
        if best_cost is None or cost < best_cost:
            best, best_cost = size, cost
        if size > 2 * max(ext):
            return best
        size *= 2


def _span(r: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lowest and highest bucket (x, y) of each closed rectangle, and its bucket count."""
    lo, hi = r[:, :2] // size, r[:, 2:] // size
    return lo, hi, (hi[:, 0] - lo[:, 0] + 1) * (hi[:, 1] - lo[:, 1] + 1)


def _bucket_key(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x << 32) + (y & 0xFFFFFFFF)


def _entries(r: np.ndarray, idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket key, row) for every bucket each rectangle ``idx`` of ``r`` covers."""
    lo, hi, n = _span(r[idx], size)
    nx = hi[:, 0] - lo[:, 0] + 1
    k = ragged(np.zeros(len(n), np.int64), n)   # each rectangle's buckets, 0, 1, ...
    return (_bucket_key(np.repeat(lo[:, 0], n) + k % np.repeat(nx, n),
                        np.repeat(lo[:, 1], n) + k // np.repeat(nx, n)), np.repeat(idx, n))


_JOIN_BLOCK = 1 << 20   # bucket entries of p joined at once (bounds the candidate pairs held)


def _join(p: np.ndarray, q: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """contact_pairs by a bucket join of both sides, sorted by (i, j).

    A pair of rectangles sharing several buckets is kept only in the bucket of the corner
    where their common part starts (the largest x0 and y0, inside both closed boxes), so no
    pair is found twice. Rectangles over more than _BIG_BUCKETS buckets are not entered;
    each is checked against the other side's rectangles in its x range (sorted by x0)."""
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not len(p) or not len(q):
        return none
    size = _bucket_size(p, q)
    big_p, big_q = _span(p, size)[2] > _BIG_BUCKETS, _span(q, size)[2] > _BIG_BUCKETS
    small_p, small_q = np.flatnonzero(~big_p), np.flatnonzero(~big_q)
    pi, qj = [], []
    kq, oq = _entries(q, small_q, size)
    order = np.argsort(kq, kind="stable")
    kq, oq = kq[order], oq[order]
    kp, op = _entries(p, small_p, size)
    for start in range(0, len(kp), _JOIN_BLOCK):
        k, o = kp[start:start + _JOIN_BLOCK], op[start:start + _JOIN_BLOCK]
        lo = np.searchsorted(kq, k, "left")
        n = np.searchsorted(kq, k, "right") - lo
        i = np.repeat(o, n)
        j = oq[ragged(lo, n)]
        bucket = np.repeat(k, n)
        hit = _hits(p[i], q[j], strict)
        i, j, bucket = i[hit], j[hit], bucket[hit]
        corner = np.maximum(p[i, :2], q[j, :2]) // size
        once = bucket == _bucket_key(corner[:, 0], corner[:, 1])
        pi.append(i[once])
        qj.append(j[once])
    for big, rects, small, other, flip in ((np.flatnonzero(big_p), p, small_q, q, False),
                                           (np.flatnonzero(big_q), q, small_p, p, True)):
        if not len(big):
            continue
        # against the other side's small rectangles in their x range (by x0; their width is
        # bounded), all big ones at once, in blocks of about _JOIN_BLOCK candidates ...
        by_x = small[np.argsort(other[small, 0], kind="stable")]
        x0 = other[by_x, 0]
        reach = int((other[small, 2] - other[small, 0]).max(initial=0))
        lo = np.searchsorted(x0, rects[big, 0] - reach, "left")
        n = np.searchsorted(x0, rects[big, 2], "right") - lo
        ends = np.cumsum(n)
        start = 0
        while start < len(big):
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] - n[start]
                                                      + _JOIN_BLOCK, "right")))
            k, m = big[start:stop], n[start:stop]
            cand = by_x[ragged(lo[start:stop], m)]
            k = np.repeat(k, m)
            hit = _hits(rects[k], other[cand], strict)
            pi.append(cand[hit] if flip else k[hit])
            qj.append(k[hit] if flip else cand[hit])
            start = stop
    # ... and big against big, once
    for k in np.flatnonzero(big_p).tolist():
        cand = np.flatnonzero(big_q)
        cand = cand[_hits(np.broadcast_to(p[k], (len(cand), 4)), q[cand], strict)]
        pi.append(np.full(len(cand), k))
        qj.append(cand)
    key = np.sort(_bucket_key(np.concatenate(pi).astype(np.int64),
                              np.concatenate(qj).astype(np.int64)))
    return key >> 32, key & 0xFFFFFFFF


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member index) of n nodes joined by edges (i, j)."""
    label = np.arange(n)
    if not len(i):
        return label
    for _ in range(n + 1):  # converges in O(log n) rounds with pointer jumping
        before = label.copy()
        np.minimum.at(label, i, label[j])
        np.minimum.at(label, j, label[i])
        label = label[label]
        if np.array_equal(label, before):
            return label
    raise AssertionError("component labelling did not converge")


def _grid_xor(removed: np.ndarray, added: np.ndarray, ctx_a: np.ndarray, ctx_b: np.ndarray
              ) -> tuple[int, np.ndarray]:
    """XOR polygons of one cluster on its compressed grid: (count, xor rectangles)."""
    cover_a = np.concatenate([removed, ctx_a])
    cover_b = np.concatenate([added, ctx_b])
    mine = np.concatenate([removed, added])
    allr = np.concatenate([cover_a, cover_b])
    xs, ys = np.unique(allr[:, [0, 2]]), np.unique(allr[:, [1, 3]])
    nx, ny = len(xs) - 1, len(ys) - 1
    if nx * ny > MAX_CLUSTER_CELLS:
        raise MaskError(f"a cluster of {len(mine)} changed shapes near ({mine[0, 0]}, "
                        f"{mine[0, 1]}) nm needs a {nx} x {ny} grid; too large to diff exactly")

    def paint(r):
        d = np.zeros((nx + 1, ny + 1), np.int32)
        x0, x1 = np.searchsorted(xs, r[:, 0]), np.searchsorted(xs, r[:, 2])
        y0, y1 = np.searchsorted(ys, r[:, 1]), np.searchsorted(ys, r[:, 3])
        for a, b, s in ((x0, y0, 1), (x1, y0, -1), (x0, y1, -1), (x1, y1, 1)):
            np.add.at(d, (a, b), s)
        return d.cumsum(0).cumsum(1)[:nx, :ny] > 0

    xor = (paint(cover_a) ^ paint(cover_b)) & paint(mine)
    cells = np.flatnonzero(xor.ravel())
    if not len(cells):
        return 0, EMPTY
    # 8-connected labelling: corner-touching pieces are one KLayout polygon.
    index = -np.ones(nx * ny, np.int64)
    index[cells] = np.arange(len(cells))
    cx, cy = cells // ny, cells % ny
    ei, ej = [], []
    for dx, dy in ((1, 0), (0, 1), (1, 1), (1, -1)):
        ok = (cx + dx < nx) & (cy + dy >= 0) & (cy + dy < ny)
        other = index[(cx[ok] + dx) * ny + cy[ok] + dy]
        hit = other >= 0
        ei.append(np.flatnonzero(ok)[hit]), ej.append(other[hit])
    labels = components(len(cells), np.concatenate(ei), np.concatenate(ej))
    count = len(np.unique(labels))
    rects = np.stack([xs[cx], ys[cy], xs[cx + 1], ys[cy + 1]], axis=1)
    return count, rects


def xor_polygons(removed: np.ndarray, added: np.ndarray, all_a: np.ndarray, all_b: np.ndarray
                 ) -> tuple[int, np.ndarray]:
    """Polygon count of (A xor B) after merging, and rectangles covering exactly that region.

    ``removed`` = rectangles of A not in B, ``added`` = of B not in A (both distinct rows);
    ``all_a`` / ``all_b`` = every rectangle of each side that may overlap them.
    """
    changed = np.concatenate([removed, added])
    m, nr = len(changed), len(removed)
    if not m:
        return 0, EMPTY
    i, j = contact_pairs(changed, changed)
    keep = i != j
    label = components(m, i[keep], j[keep])
    # Rectangles of the other side overlapping a changed one change its XOR shape.
    ri, rj = contact_pairs(removed, all_b, strict=True)
    ai, aj = contact_pairs(added, all_a, strict=True)
    touched = np.zeros(m, bool)
    touched[ri] = True
    touched[nr + ai] = True
    cluster_size = np.bincount(label, minlength=m)
    simple = (cluster_size[label] == 1) & ~touched
    count = int(simple.sum())
    rects = [changed[simple]]
    # Members and context pairs grouped by cluster with one sort each: a scan per cluster is
    # quadratic when a change touches everything (a moved fill cell: ~10^5 clusters).
    hard = np.flatnonzero(~simple)
    members_by, roots, starts, ends = _grouped(label[hard], hard)
    ctx_b_by, ctx_b_roots, ctx_b_starts, ctx_b_ends = _grouped(label[ri], rj)
    ctx_a_by, ctx_a_roots, ctx_a_starts, ctx_a_ends = _grouped(label[nr + ai], aj)
    for root, s, e in zip(roots.tolist(), starts.tolist(), ends.tolist()):
        members = members_by[s:e]
        rem = members[members < nr]
        add = members[members >= nr] - nr
        kb = np.searchsorted(ctx_b_roots, root)
        ka = np.searchsorted(ctx_a_roots, root)
        ctx_b = all_b[np.unique(ctx_b_by[ctx_b_starts[kb]:ctx_b_ends[kb]])] \
            if kb < len(ctx_b_roots) and ctx_b_roots[kb] == root else EMPTY
        ctx_a = all_a[np.unique(ctx_a_by[ctx_a_starts[ka]:ctx_a_ends[ka]])] \
            if ka < len(ctx_a_roots) and ctx_a_roots[ka] == root else EMPTY
        n, r = _grid_xor(removed[rem], added[add], ctx_a, ctx_b)
        count += n
        rects.append(r)
    return count, np.concatenate(rects)


def _grouped(keys: np.ndarray, values: np.ndarray):
    """``values`` sorted by ``keys``, with the distinct keys and each one's [start, end)."""
    order = np.argsort(keys, kind="stable")
    roots, starts = np.unique(keys[order], return_index=True)
    return values[order], roots, starts, np.r_[starts[1:], len(order)].astype(np.int64)
