"""Rectangle arithmetic of the mask diff, checked against KLayout on random layouts."""

import klayout.db as kdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taalasc.diff.core import parse_max_changed
from taalasc.diff.geom import common_rows, contact_pairs, unique_rows, xor_polygons
from taalasc.errors import MaskError


def _region(rects) -> kdb.Region:
    region = kdb.Region()
    for x0, y0, x1, y1 in np.asarray(rects).tolist():
        region.insert(kdb.Box(x0, y0, x1, y1))
    return region


def _ours(a: np.ndarray, b: np.ndarray):
    ua, ub = unique_rows(a), unique_rows(b)
    in_b, in_a = common_rows(ua, ub)
    removed, added = ua[~in_b], ub[~in_a]
    return xor_polygons(removed, added, ua, ub)


rect = st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 12), st.integers(1, 12))


def _arr(items):
    return np.array([(x, y, x + w, y + h) for x, y, w, h in items], np.int64).reshape(-1, 4)


@settings(max_examples=80, deadline=None)
@given(common=st.lists(rect, max_size=25), only_a=st.lists(rect, max_size=6),
       only_b=st.lists(rect, max_size=6))
def test_xor_count_and_region_equal_klayout(common, only_a, only_b):
    a, b = _arr(common + only_a), _arr(common + only_b)
    count, rects = _ours(a, b)
    xor = _region(a) ^ _region(b)
    assert count == xor.merged().count()
    assert (xor ^ _region(rects)).is_empty()


def test_isolated_vias_count_added_plus_removed():
    vias = np.array([[x, 0, x + 800, 800] for x in range(0, 16000, 1600)], np.int64)
    a = vias.copy()
    b = vias.copy()
    b[3] += [0, 3200, 0, 3200]  # one bit flipped: low slot -> high slot
    count, rects = _ours(a, b)
    assert count == 2 and len(rects) == 2


def test_corner_touch_is_one_polygon_edge_split_is_two():
    # Two squares kissing at a corner are one KLayout polygon (min_coherence false).
    a = np.array([[0, 0, 10, 10], [10, 10, 20, 20]], np.int64)
    assert _ours(a, np.zeros((0, 4), np.int64))[0] == 1
    # A bar with its middle covered on the other side splits into two.
    assert _ours(np.array([[0, 0, 30, 10]]), np.array([[10, 0, 20, 10]]))[0] == 2


def test_contact_pairs_finds_long_and_touching_rectangles():
    p = np.array([[0, 0, 1_000_000, 10], [5, 5, 6, 6]], np.int64)     # a long route, a dot
    q = np.array([[999_990, 10, 1_000_100, 20], [6, 6, 7, 7], [50, 50, 60, 60]], np.int64)
    i, j = contact_pairs(p, q)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 0), (0, 1), (1, 1)]
    i, j = contact_pairs(p, q, strict=True)   # touching is not overlapping; the dot is inside
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1)]


def _brute_pairs(p, q, strict):
    i, j = np.meshgrid(np.arange(len(p)), np.arange(len(q)), indexing="ij")
    i, j = i.ravel(), j.ravel()
    a, b = p[i], q[j]
    if strict:
        hit = (a[:, 0] < b[:, 2]) & (b[:, 0] < a[:, 2]) & (a[:, 1] < b[:, 3]) & (b[:, 1] < a[:, 3])
    else:
        hit = (a[:, 0] <= b[:, 2]) & (b[:, 0] <= a[:, 2]) & (a[:, 1] <= b[:, 3]) & (b[:, 1] <= a[:, 3])
    return sorted(zip(i[hit].tolist(), j[hit].tolist()))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), span=st.sampled_from([60, 5_000, 3_000_000]),
       few=st.integers(1, 12), strict=st.booleans())
def test_contact_pairs_few_against_many_equals_brute_force(seed, span, few, strict):
    # One side > 8x the other: its far boxes are dropped by a coarse grid before the join
    # (the diff's context search). Boxes on grid lines, touching edges and corners included.
    rng = np.random.default_rng(seed)

    def boxes(n, size):
        lo = rng.integers(0, span, (n, 2))
        return np.concatenate([lo, lo + rng.integers(0, size, (n, 2))], axis=1).astype(np.int64)

    small, large = boxes(few, max(2, span // 20)), boxes(200, max(2, span // 8))
    large[:few] = small[:, [2, 3, 2, 3]] + [0, 0, 5, 5]   # corner contacts
    for p, q in ((small, large), (large, small)):
        i, j = contact_pairs(p, q, strict)
        assert sorted(zip(i.tolist(), j.tolist())) == _brute_pairs(p, q, strict)


@pytest.mark.parametrize("text, want", [("0", ("count", 0)), ("120", ("count", 120)),
                                        ("0.5%", ("fraction", 0.005)), ("100%", ("fraction", 1.0))])
def test_parse_max_changed(text, want):
    assert parse_max_changed(text) == want


@pytest.mark.parametrize("text", ["-1", "abc", "1.5", "150%", ""])
def test_parse_max_changed_rejects(text):
    with pytest.raises(MaskError, match=r"^--max-changed must be a shape count"):
        parse_max_changed(text)
