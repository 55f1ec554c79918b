"""How a transparent crystal is drawn: a dark rim along every edge around a bright core."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trainer.synth.crystals import _inset, crystal_patch
from trainer.synth.geometry import inradius
from trainer.synth.placement import Placed


def _patch(poly: np.ndarray, seed: int, *, centre: np.ndarray | None = None,
           shape: tuple[int, int] = (70, 170)) -> np.ndarray:
    """Transmission of a transparent crystal with outline ``poly`` (px, on the patch)."""
    centre = poly.mean(axis=0) if centre is None else centre
    p = Placed(poly, centre, 100.0, "test", 1.0,
               float(np.linalg.norm(poly - centre, axis=1).max()), inradius(poly, centre))
    alpha = np.zeros(shape, np.float32)  # full coverage inside (the outline's own shading
    cv2.fillPoly(alpha, [np.round(poly).astype(np.int32)], 1.0)  # is not under test)
    return crystal_patch(np.random.default_rng(seed), p, kind="transparent", alpha=alpha,
                         org=(0, 0))


@pytest.mark.parametrize("clockwise", [False, True])
def test_inset_moves_every_edge_in_by_its_own_width(clockwise: bool) -> None:
    rect = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 10.0], [0.0, 10.0]])
    width = np.array([1.0, 2.0, 3.0, 4.0])  # bottom, right, top, left
    if clockwise:
        rect, width = rect[::-1].copy(), np.roll(width[::-1], -1)
    got = _inset(rect, width)
    want = np.array([[4.0, 1.0], [98.0, 1.0], [98.0, 7.0], [4.0, 7.0]])
    if clockwise:
        want = want[::-1]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_inset_keeps_a_repeated_vertex_on_its_neighbours_line() -> None:
    square = np.array([[0.0, 0.0], [20.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]])
    got = _inset(square, np.full(5, 2.0))
    assert np.all((got > 1.999) & (got < 18.001))


@pytest.mark.parametrize("seed", range(12))
def test_a_transparent_needle_is_dark_along_both_long_sides(seed: int) -> None:
    """A needle 130 x 12 px: scaling its vertices towards the centre left its long sides
    about a quarter pixel of rim, which no network sees; each side has at least 1.6 px."""
    needle = np.array([[20.0, 24.0], [150.0, 24.0], [156.0, 30.0], [150.0, 36.0],
                       [20.0, 36.0], [14.0, 30.0]])
    t = _patch(needle, seed)
    column = t[:, 60:110]
    core = np.median(column[28:33])
    for rows in (column[24:26], column[35:37]):  # the two pixel rows at each side
        assert np.median(rows.min(axis=0)) < core - 0.25, (seed, core, rows.min(axis=0))


@pytest.mark.parametrize("seed", range(6))
def test_a_twins_rim_does_not_vanish_when_its_centroid_is_near_an_inner_corner(
        seed: int) -> None:
    """An L-shaped intergrowth whose centroid lies 0.3 px from an edge: the rim's width
    comes from its arms (area / perimeter), not from that distance."""
    ell = np.array([[20.0, 10.0], [120.0, 10.0], [120.0, 26.0], [36.0, 26.0],
                    [36.0, 65.0], [20.0, 65.0]])
    x, y = ell[:, 0], ell[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    centroid = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()
                         ]) / (3 * cross.sum())
    assert inradius(ell, centroid) < 0.5
    t = _patch(ell, seed, centre=centroid)
    core = np.median(t[16:21, 50:110])
    for rows in (t[10:12, 50:110], t[25:27, 50:110]):  # the long arm's two sides
        assert np.median(rows.min(axis=0)) < core - 0.25, (seed, core)
