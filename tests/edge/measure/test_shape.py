"""Perimeter / circularity / Feret estimators on digital shapes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.measure import chain_length, circularity, feret, perimeter
from tests.edge.measure.shapes import add_disc, add_polygon, blank, regular_polygon


def _disc(r: float) -> np.ndarray:
    n = int(2 * r + 8)
    return add_disc(blank(n, n), n / 2 - 0.3, n / 2 + 0.17, r)


@pytest.mark.parametrize("r", [5, 7.5, 10, 15, 25, 40, 60, 100, 150, 200])
def test_disc_circularity_is_size_independent(r: float) -> None:
    c = circularity(_disc(r))
    assert 0.95 <= c <= 1.02, (r, c)


def test_disc_circularity_on_grid_centre() -> None:
    # integer centre and radius: the four single-pixel tips are the worst case
    for r in (5, 12, 30, 80):
        img = add_disc(blank(2 * r + 9, 2 * r + 9), r + 4, r + 4, r)
        assert 0.95 <= circularity(img) <= 1.02


def test_raw_arclength_is_biased_but_ours_is_not() -> None:
    """The reason for the estimator: cv2.arcLength of the pixel contour drifts with size."""
    def raw(img: np.ndarray) -> float:
        cs = cv2.findContours(img, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
        p = cv2.arcLength(cs[0], True)
        return 4 * math.pi * img.sum() / p ** 2
    small, big = _disc(5), _disc(200)
    assert raw(small) - raw(big) > 0.15
    assert abs(circularity(small) - circularity(big)) < 0.02


@pytest.mark.parametrize("R", [20, 40, 80, 150])
@pytest.mark.parametrize("angle", [0.1, 0.3, 0.45, 0.8])
def test_regular_hexagon_circularity(R: int, angle: float) -> None:
    n = 2 * R + 10
    img = add_polygon(blank(n, n), regular_polygon(n / 2, n / 2, R, 6, angle))
    assert circularity(img) == pytest.approx(math.pi * math.sqrt(3) / 6, abs=0.02)


def test_axis_aligned_and_small_hexagons() -> None:
    # edges exactly along the pixel axis, and a small hexagon (about 370 px)
    img = add_polygon(blank(180, 180), regular_polygon(90, 90, 80, 6, 0.0))
    assert circularity(img) == pytest.approx(0.907, abs=0.02)
    img = add_polygon(blank(40, 40), regular_polygon(20, 20, 12, 6, 0.1))
    assert 0.907 < circularity(img) < 0.95


def test_octagon_square_and_elongated_shapes() -> None:
    img = add_polygon(blank(120, 120), regular_polygon(60, 60, 50, 8, 0.2))
    assert circularity(img) == pytest.approx(0.948, abs=0.02)
    sq = add_polygon(blank(120, 120), regular_polygon(60, 60, 50, 4, 0.3))
    assert circularity(sq) == pytest.approx(math.pi / 4, abs=0.03)
    stretched = add_polygon(blank(200, 200), regular_polygon(100, 100, 40, 6, 0.0, stretch=1.6))
    assert circularity(stretched) == pytest.approx(0.84, abs=0.02)


def test_perimeter_of_disc_and_square_in_px() -> None:
    r = 30.0
    assert perimeter(_disc(r)) == pytest.approx(2 * math.pi * r, rel=0.01)
    sq = blank(60, 60)
    sq[10:50, 10:50] = 1  # 40 x 40 px square: outline 160 px
    assert perimeter(sq) == pytest.approx(160, rel=0.02)


def test_chain_length_of_straight_runs() -> None:
    diag = np.array([[i, i] for i in range(11)] + [[i, i] for i in range(9, 0, -1)])
    # closed chain along a 45 degree segment and back: 20 odd steps
    assert chain_length(diag) == pytest.approx(20 * 1.406 - 0.091 * 2, rel=1e-9)
    assert chain_length(np.array([[3, 4]])) == 0.0


def test_feret_of_rectangle_and_disc() -> None:
    img = blank(50, 80)
    img[10:20, 10:50] = 1  # 40 x 10 px
    pts = np.argwhere(img)[:, ::-1]
    fmax, fmin = feret(pts)
    assert fmin == pytest.approx(10.0, abs=1e-6)
    assert fmax == pytest.approx(math.hypot(40, 10), abs=1e-6)
    d = _disc(25)
    fmax, fmin = feret(np.argwhere(d)[:, ::-1])
    assert 50 <= fmin <= fmax <= 52.5


def test_shape_helpers_reject_3d() -> None:
    with pytest.raises(ValueError, match=r"shape \(4, 4, 3\)"):
        perimeter(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(4, 4, 3\)"):
        circularity(np.zeros((4, 4, 3), np.uint8))
    assert circularity(np.zeros((4, 4), np.uint8)) == 0.0


def test_contour_length_raw_and_smoothed() -> None:
    from edge.measure import contour_length
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]])
    assert contour_length(square, sigma=0) == pytest.approx(40.0)
    # a 4-point chain is no pixel chain; smoothing over it shrinks it a lot
    assert contour_length(square) < 40.0
    ring = np.array([[x, 0] for x in range(20)] + [[19, y] for y in range(1, 20)]
                    + [[x, 19] for x in range(18, -1, -1)] + [[0, y] for y in range(18, 0, -1)])
    # a 20 x 20 px square outline of pixel centres: 76 unit steps, corners rounded
    assert contour_length(ring, sigma=0) == pytest.approx(76.0)
    assert 74.0 < contour_length(ring) < 76.0
    assert contour_length(np.array([[5, 5]])) == 0.0
