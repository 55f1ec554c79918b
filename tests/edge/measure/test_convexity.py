"""Solidity by Pick's theorem and concavity depths (edge.measure.convexity)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.measure import concavity_depths, convexity, hull_area
from edge.measure.convexity import _depths, _hull_indices
from edge.measure.shape import outer_contours
from tests.edge.measure.shapes import add_disc, add_polygon, blank, regular_polygon


def _chain(m: np.ndarray) -> np.ndarray:
    return max(outer_contours(m), key=len).reshape(-1, 2)


@pytest.mark.parametrize("r", [2.5, 4, 9, 30, 80])
def test_a_digitised_disc_has_solidity_one(r: float) -> None:
    n = int(2 * r) + 10
    m = add_disc(blank(n, n), n / 2 + 0.31, n / 2 - 0.17, r)
    assert hull_area(_chain(m)) == m.sum()
    s, rel = convexity(_chain(m), int(m.sum()))
    assert s == 1.0 and (rel.size == 0 or rel.max() * 2 * math.sqrt(m.sum() / math.pi) < 1.0)


@pytest.mark.parametrize("angle", [0.0, 0.13, 0.5, 0.785, 1.2])
def test_a_thin_rotated_needle_has_solidity_one(angle: float) -> None:
    c, s = math.cos(angle), math.sin(angle)
    yy, xx = np.mgrid[0:80, 0:80]
    u = (xx - 40.2) * c + (yy - 39.7) * s
    v = -(xx - 40.2) * s + (yy - 39.7) * c
    m = ((np.abs(u) <= 30) & (np.abs(v) <= 2)).astype(np.uint8)  # 60 x 4, centres inside
    assert hull_area(_chain(m)) == m.sum()


def test_the_notch_of_an_l_shape_is_its_depth() -> None:
    m = blank(60, 60)
    m[10:50, 10:20] = 1
    m[40:50, 10:50] = 1  # an L: arms 10 px thick, 40 px long
    depths = concavity_depths(_chain(m))
    # the hull edge from (19, 10) to (49, 40) passes the inner corner (19, 39) at
    # 29 / sqrt(2) px
    assert depths[0] == pytest.approx(29 / math.sqrt(2), abs=0.01)
    assert depths[1:].max(initial=0) < 1.0
    s, _ = convexity(_chain(m), int(m.sum()))
    assert s == pytest.approx(m.sum() / hull_area(_chain(m)))
    assert s < 0.7


def test_the_opencv_and_numpy_depths_agree() -> None:
    m = blank(200, 200)
    for cx, cy in ((70.3, 80.1), (115.2, 95.4)):
        add_polygon(m, regular_polygon(cx, cy, 35, 6, 0.3))
    add_disc(m, 150.0, 150.0, 22)  # joined to the pair or not: both chains are checked
    for chain in outer_contours(m):
        c = np.ascontiguousarray(chain.reshape(-1, 2), dtype=np.int32)
        idx = _hull_indices(c)
        np.testing.assert_allclose(concavity_depths(c), _depths(c, idx), atol=0.01)
