"""Step 1: small-object removal, closing, hole filling, border and ROI handling."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.measure import MeasureConfig, border_zone, clean_mask, disc, measure_crystals
from edge.measure.clean import close_disc
from tests.edge.measure.shapes import add_disc, blank


def test_disc_element_matches_matlab_strel_disk() -> None:
    assert disc(2).tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1],
                                [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    assert disc(0).tolist() == [[1]]


def test_min_area_drops_19_keeps_20() -> None:
    m = blank(40, 40)
    m[5:9, 5:10] = 1  # 20 px
    m[20:24, 20:25] = 1
    m[20, 20] = 0  # 19 px
    c = measure_crystals(m, px_size_um=1.0, config=MeasureConfig(closing_radius_px=0))
    assert len(c) == 1
    assert c.area_px.tolist() == [20]
    assert c.rejected_counts()["too_small"] == 1
    assert c.dropped == {"too_small": 1}
    assert clean_mask(m, config=MeasureConfig(closing_radius_px=0)).sum() == 20


def test_small_objects_are_removed_before_closing() -> None:
    # two 12-px specks 2 px apart would merge into one >20 px object if closed first
    m = blank(30, 40)
    m[10:13, 10:14] = 1
    m[10:13, 16:20] = 1
    assert clean_mask(m).sum() == 0


def test_fill_holes_on_and_off() -> None:
    m = add_disc(blank(60, 60), 30.2, 29.7, 20)
    full = int(m.sum())
    hole = add_disc(blank(60, 60), 30.2, 29.7, 8)
    m[hole > 0] = 0
    assert clean_mask(m).sum() == full
    kept = clean_mask(m, config=MeasureConfig(fill_holes=False, closing_radius_px=0))
    assert kept.sum() == full - hole.sum()


def test_closing_fills_a_thin_crack() -> None:
    m = add_disc(blank(60, 60), 30.2, 29.7, 20)
    full = int(m.sum())
    m[12:30, 30] = 0  # 1-px slit inside the crystal
    no_fill = {"fill_holes": False}
    assert clean_mask(m, config=MeasureConfig(**no_fill)).sum() == full
    off = MeasureConfig(closing_radius_px=0, **no_fill)
    assert clean_mask(m, config=off).sum() == full - 18


def test_closing_does_not_erode_objects_at_the_frame_edge() -> None:
    """The pitfall: closing with a 0 border erodes edge objects so that they no longer
    touch the edge, and border clearing misses them."""
    m = add_disc(blank(80, 80), 3.0, 40.3, 15)  # cut by the left edge
    naive = cv2.morphologyEx(m, cv2.MORPH_CLOSE, disc(2), borderType=cv2.BORDER_CONSTANT,
                             borderValue=0)
    assert naive[:, 0].sum() == 0  # the pitfall is real
    ours = close_disc(m, 2)
    assert np.array_equal(ours[:, 0], m[:, 0])
    assert np.array_equal(ours, m)  # a convex disc is closed already
    c = measure_crystals(m, px_size_um=1.0)
    assert c.reason.tolist() == ["border"]
    assert c.touches_border.tolist() == [True]
    assert clean_mask(m).sum() == 0


def test_border_crystals_kept_but_flagged_when_clear_border_off() -> None:
    m = blank(100, 100)
    add_disc(m, 50.2, 50.3, 12)
    add_disc(m, 95.0, 20.0, 10)  # touches the right edge
    c = measure_crystals(m, px_size_um=1.0, config=MeasureConfig(clear_border=False))
    assert len(c) == 2
    assert sorted(c.touches_border.tolist()) == [False, True]
    assert c.rejected_counts()["border"] == 0
    c2 = measure_crystals(m, px_size_um=1.0)
    assert c2.rejected_counts()["border"] == 1
    assert c2.n_kept == 1


def test_border_decided_per_crystal_after_splitting() -> None:
    m = blank(80, 120)
    add_disc(m, 18.0, 40.0, 20)  # cut by the left edge
    add_disc(m, 50.0, 40.0, 20)  # touches it, inside
    c = measure_crystals(m, px_size_um=1.0)
    assert len(c) == 2
    assert sorted(c.reason.tolist()) == ["", "border"]
    # clean_mask (whole objects) removes both
    assert clean_mask(m).sum() == 0


def _circle_roi(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    return add_disc(blank(*shape), cx, cy, r)


def test_roi_boundary_is_a_border() -> None:
    shape = (240, 240)
    roi = _circle_roi(shape, 120, 120, 100)
    m = blank(*shape)
    add_disc(m, 120.3, 119.6, 15)  # well inside: kept
    add_disc(m, 120.0, 25.0, 12)  # straddles the ROI boundary (top)
    add_disc(m, 120.0 + 100 - 12.5, 120.0, 12)  # inside, tangent to the ROI boundary
    add_disc(m, 7.0, 7.0, 8)  # outside the ROI (ignored), touches the frame corner
    c = measure_crystals(m, px_size_um=1.0, roi=roi)
    assert len(c) == 3
    inside = np.argmin(np.hypot(c.centroid[:, 0] - 120, c.centroid[:, 1] - 120))
    assert c.kept.tolist().count(True) == 1 and c.kept[inside]
    assert c.rejected_counts()["border"] == 2
    top = np.argmin(c.centroid[:, 1])
    assert c.touches_border[top]
    # only the part inside the ROI is measured
    assert c.area_px[top] < 0.9 * math.pi * 12 ** 2
    assert c.roi_area_px == int(roi.sum())
    # without the ROI nothing touches the frame edge except the corner disc
    c2 = measure_crystals(m, px_size_um=1.0)
    assert c2.n_kept == 3 and c2.rejected_counts()["border"] == 1


def test_border_zone() -> None:
    z = border_zone((5, 6))
    assert z.sum() == 2 * 6 + 2 * 3
    roi = blank(9, 9)
    roi[2:7, 2:7] = 1
    z = border_zone((9, 9), roi)
    assert z.sum() == 16 and z[4, 4] == 0 and z[2, 4] == 1


def test_clean_mask_class_map_and_roi_validation() -> None:
    cm = np.zeros((30, 30), np.int64)
    cm[5:15, 5:15] = 2
    cm[20:25, 20:25] = 1
    out = clean_mask(cm, crystal_class=2)
    assert out.dtype == np.uint8 and out.sum() == 100
    with pytest.raises(ValueError, match=r"roi shape \(10, 10\) differs from mask shape"):
        clean_mask(cm, crystal_class=2, roi=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match=r"roi of shape \(30, 30\) is empty"):
        clean_mask(cm, crystal_class=2, roi=np.zeros((30, 30), bool))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_remove_small_matches_a_full_frame_count(connectivity: int) -> None:
    """The contour-candidate shortcut equals counting every component (random noise)."""
    from edge.measure.clean import remove_small
    rng = np.random.default_rng(connectivity)
    for _ in range(20):
        m = (rng.random((60, 60)) < 0.3).astype(np.uint8)
        n, lab = cv2.connectedComponents(m, connectivity=connectivity)
        small = np.bincount(lab.ravel(), minlength=n) < 5
        small[0] = False
        out, k = remove_small(m, 5, connectivity=connectivity)
        assert np.array_equal(out, np.where(small[lab], 0, m))
        assert k == int(small.sum())
    # speckle noise (thousands of candidates: the full-frame count path)
    m = (rng.random((300, 300)) < 0.06).astype(np.uint8)
    m[100:140, 100:140] = 1
    n, lab = cv2.connectedComponents(m, connectivity=connectivity)
    small = np.bincount(lab.ravel(), minlength=n) < 5
    small[0] = False
    assert small.sum() > 500
    out, k = remove_small(m, 5, connectivity=connectivity)
    assert np.array_equal(out, np.where(small[lab], 0, m)) and k == int(small.sum())


def test_full_frame_roi_equals_no_roi() -> None:
    """The bounding-box shortcut for the frame edge agrees with the pixel test."""
    from tests.edge.measure.shapes import random_scene
    m = random_scene(256, 256, 25, seed=4)
    a = measure_crystals(m, px_size_um=1.0)
    b = measure_crystals(m, px_size_um=1.0, roi=np.ones(m.shape, bool))
    assert a.touches_border.sum() >= 2
    for name in ("area_px", "bbox", "centroid", "touches_border", "reason", "circularity"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for ca, cb in zip(a.contours, b.contours, strict=True):
        assert np.array_equal(ca, cb)
