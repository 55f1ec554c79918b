"""Separation of touching crystals (watershed on the distance map)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.measure import MeasureConfig, measure_crystals, split_touching
from edge.measure.split import _checker
from tests.edge.measure.shapes import (
    add_disc,
    add_ellipse,
    add_polygon,
    blank,
    notched_hexagon,
    regular_polygon,
    rhomb,
)


def _areas(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel())[1:]


def _check_partition(mask: np.ndarray, labels: np.ndarray) -> None:
    """Labels cover exactly the mask (no pixel lost on watershed lines)."""
    assert np.array_equal(labels > 0, mask > 0)


def test_checkerboard_encoding_gives_max_of_neighbours() -> None:
    """cv2.watershed floods by the max channel difference of 4-neighbours; the encoding
    turns that into max(q(p), q(n)), a flood by intensity."""
    q = np.random.default_rng(3).integers(0, 256, (9, 11)).astype(np.uint8)
    img = _checker(q).astype(np.int32)
    dh = np.abs(img[:, 1:] - img[:, :-1]).max(axis=2)
    dv = np.abs(img[1:] - img[:-1]).max(axis=2)
    assert np.array_equal(dh, np.maximum(q[:, 1:], q[:, :-1]))
    assert np.array_equal(dv, np.maximum(q[1:], q[:-1]))


@pytest.mark.parametrize("d_over_r", [1.2, 1.4, 1.7, 2.0])
@pytest.mark.parametrize("r", [12, 25, 45])
def test_two_overlapping_discs_split_into_equal_halves(d_over_r: float, r: int) -> None:
    h, w = 2 * r + 10, int((2 + d_over_r) * r) + 10
    mask = blank(h, w)
    x1, x2 = r + 5.2, r + 5.2 + d_over_r * r
    add_disc(mask, x1, h / 2 - 0.3, r)
    add_disc(mask, x2, h / 2 - 0.3, r)
    labels = split_touching(mask)
    _check_partition(mask, labels)
    a = _areas(labels)
    assert a.size == 2
    # ideal cut: the perpendicular bisector (the discs' sub-pixel phases differ, so the
    # two digital halves differ by a few px at r = 12)
    left = int((mask[:, : math.ceil((x1 + x2) / 2)]).sum())
    ideal = np.array([left, int(mask.sum()) - left])
    assert np.all(np.abs(a / ideal - 1) < 0.04), (a, ideal)
    if r >= 20:
        assert abs(int(a[0]) - int(a[1])) / a.mean() < 0.05


def test_two_discs_at_an_angle_and_unequal() -> None:
    mask = blank(160, 160)
    add_disc(mask, 60, 60, 28)
    # small disc overlapping the big one by 0.25 of its radius
    dist = 28 + 16 - 4
    add_disc(mask, 60 + dist * math.cos(0.6), 60 + dist * math.sin(0.6), 16)
    labels = split_touching(mask)
    _check_partition(mask, labels)
    a = np.sort(_areas(labels))
    assert a.size == 2
    # the small disc keeps most of its own area, the cut runs near the neck
    assert 0.85 * math.pi * 16 ** 2 < a[0] < 1.02 * math.pi * 16 ** 2
    # h is relative to the object's largest inscribed radius (h-maxima): a small crystal
    # sunk deep into a big one (overlap 0.75 r) stays merged
    deep = blank(160, 160)
    add_disc(deep, 60, 60, 28)
    add_disc(deep, 60 + 32 * math.cos(0.6), 60 + 32 * math.sin(0.6), 16)
    assert split_touching(deep).max() == 1


def test_three_discs_in_a_row() -> None:
    r = 20
    mask = blank(60, 200)
    for x in (40.3, 40.3 + 1.5 * r, 40.3 + 3.0 * r):
        add_disc(mask, x, 30.2, r)
    labels = split_touching(mask)
    _check_partition(mask, labels)
    a = _areas(labels)
    assert a.size == 3
    # the outer two are mirror images; the middle one lost two caps
    assert abs(int(a[0]) - int(a[2])) / a[0] < 0.05
    cap = r * r * math.acos(0.75) - 0.75 * r * math.sqrt(r * r - (0.75 * r) ** 2)
    expected_mid = math.pi * r * r - 2 * cap
    assert a[1] == pytest.approx(expected_mid, rel=0.05)


@pytest.mark.parametrize("angle", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("r", [12, 30, 60])
def test_single_hexagon_is_one_crystal(angle: float, r: int) -> None:
    n = 2 * r + 10
    mask = add_polygon(blank(n, n), regular_polygon(n / 2, n / 2, r, 6, angle))
    assert split_touching(mask).max() == 1


@pytest.mark.parametrize("angle", [0.0, 0.4, 1.1])
@pytest.mark.parametrize("b", [8, 20, 45])
def test_ellipse_aspect_14_is_one_crystal(angle: float, b: int) -> None:
    n = int(3.2 * b) + 10
    mask = add_ellipse(blank(n, n), n / 2 + 0.3, n / 2 - 0.2, 1.4 * b, b, angle=angle)
    assert split_touching(mask).max() == 1


@pytest.mark.parametrize("depth", [0.25, 0.4, 0.55])
@pytest.mark.parametrize("angle", [0.0, 0.3])
def test_notched_crystal_is_one_crystal(depth: float, angle: float) -> None:
    mask = notched_hexagon(size=120, r=40, depth=depth, angle=angle)
    full = add_polygon(blank(120, 120), regular_polygon(60, 60, 40, 6, angle))
    assert full.sum() - mask.sum() > 30  # the notch is really there
    assert split_touching(mask).max() == 1


def test_elongated_hexagon_and_rhomb_are_one_crystal() -> None:
    for pts in (regular_polygon(100, 100, 40, 6, 0.3, stretch=1.6), rhomb(100, 100, 40, 1.4, 0.3)):
        mask = add_polygon(blank(200, 200), pts)
        assert split_touching(mask).max() == 1


def test_split_can_be_switched_off() -> None:
    mask = blank(60, 120)
    add_disc(mask, 40, 30, 20)
    add_disc(mask, 72, 30, 20)
    assert len(measure_crystals(mask, px_size_um=1.0)) == 2
    assert len(measure_crystals(mask, px_size_um=1.0,
                                config=MeasureConfig(split_touching=False))) == 1


def test_marker_suppression_parameter() -> None:
    """Heavily overlapping discs (centre distance 1.1 r) split only with a small h_rel."""
    r = 30
    mask = blank(80, 160)
    add_disc(mask, 50, 40, r)
    add_disc(mask, 50 + 1.1 * r, 40, r)
    assert split_touching(mask, h_rel=0.12).max() == 2
    assert split_touching(mask, h_rel=0.25).max() == 1


def test_split_touching_rejects_3d() -> None:
    with pytest.raises(ValueError, match=r"shape \(5, 5, 3\)"):
        split_touching(np.zeros((5, 5, 3), np.uint8))


def test_many_objects_labels_are_unique_and_cover_mask() -> None:
    mask = blank(300, 300)
    rng = np.random.default_rng(5)
    for _ in range(20):
        cv2.circle(mask, (int(rng.integers(20, 280)), int(rng.integers(20, 280))),
                   int(rng.integers(5, 15)), 1, -1)
    labels = split_touching(mask)
    _check_partition(mask, labels)
    assert np.array_equal(np.unique(labels)[1:], np.arange(1, labels.max() + 1))


def test_iter_objects_finds_objects_in_holes_and_honours_connectivity() -> None:
    from edge.measure.split import iter_objects
    m = add_disc(blank(80, 80), 40, 40, 30)
    m[add_disc(blank(80, 80), 40, 40, 20) > 0] = 0
    add_disc(m, 40, 40, 8)  # an island inside the ring's hole
    crops = list(iter_objects(m))
    assert len(crops) == 2
    assert sorted(int(c.sum()) for _x, _y, c in crops) == sorted(
        [int(add_disc(blank(80, 80), 40, 40, 8).sum()), int(m.sum())
         - int(add_disc(blank(80, 80), 40, 40, 8).sum())])
    c = measure_crystals(m, px_size_um=1.0, config=MeasureConfig(fill_holes=False))
    assert len(c) == 2
    # two squares touching at a corner: one object (8) or two (4)
    sq = blank(30, 30)
    sq[5:12, 5:12] = 1
    sq[12:19, 12:19] = 1
    assert len(list(iter_objects(sq, connectivity=8))) == 1
    four = list(iter_objects(sq, connectivity=4))
    assert len(four) == 2 and all(int(c.sum()) == 49 for _x, _y, c in four)
    assert (four[1][0], four[1][1]) == (12 - 2, 12 - 2)
