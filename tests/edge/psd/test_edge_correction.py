"""Miles-Lantuejoul edge correction: formula, ROI variant, and unbiasedness by simulation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.psd import (
    PsdConfig,
    RoiSurvival,
    compute_psd,
    edge_correction_weights,
    survival_probability,
)

NO_BOOT = PsdConfig(bootstrap_n=0, lognormal_fit=False)


def test_rectangle_formula():
    p = survival_probability([0, 50, 100, 250], [0, 20, 100, 10], field_shape=(100, 200))
    assert p == pytest.approx([1.0, 150 * 80 / 20000, 0.0, 0.0])
    w = edge_correction_weights([50, 100], [20, 100], field_shape=(100, 200), max_weight=20)
    assert w == pytest.approx([20000 / 12000, 20.0])


def test_full_frame_roi_matches_rectangle():
    shape = (300, 400)
    surv = RoiSurvival(np.ones(shape, np.uint8))
    sizes = np.array([1.0, 10, 40, 120, 250])
    rect = survival_probability(sizes, sizes, field_shape=shape)
    roi = surv.probability(sizes, sizes)
    assert roi == pytest.approx(rect, abs=0.01)


def test_circular_roi_matches_disc_formula():
    big_r = 200
    roi = np.zeros((420, 420), np.uint8)
    cv2.circle(roi, (210, 210), big_r, 1, -1)
    d = np.array([10.0, 50.0, 100.0, 200.0])
    p = survival_probability(d, d, roi=roi)
    analytic = (big_r - d / 2) ** 2 / big_r**2
    assert p == pytest.approx(analytic, abs=0.015)
    # reuse of a precomputed ROI gives the same numbers
    assert RoiSurvival(roi).probability(d, d) == pytest.approx(p)


def test_bad_inputs():
    with pytest.raises(ValueError, match="field_shape"):
        survival_probability([1.0], [1.0])
    with pytest.raises(ValueError, match=r"\(2,\).*\(1,\)"):
        survival_probability([1.0, 2.0], [1.0], field_shape=(10, 10))
    with pytest.raises(ValueError, match="empty"):
        RoiSurvival(np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        RoiSurvival(np.ones(5))


def _population(rng, n, s=0.4, x50_0=45.0):
    return rng.lognormal(np.log(x50_0), s, n)


def test_rectangular_field_correction_is_unbiased():
    rng = np.random.default_rng(7)
    big_h, big_w = 300, 400
    d = _population(rng, 600_000)
    pad = d.max()
    cx = rng.uniform(-pad, big_w + pad, d.size)
    cy = rng.uniform(-pad, big_h + pad, d.size)
    r = d / 2
    kept = (cx - r > 0) & (cx + r < big_w) & (cy - r > 0) & (cy + r < big_h)
    true = compute_psd(d, config=NO_BOOT).x50_3_um
    raw = compute_psd(d[kept], config=NO_BOOT).x50_3_um
    w = edge_correction_weights(d[kept], d[kept], field_shape=(big_h, big_w))
    corr = compute_psd(d[kept], weights=w, config=NO_BOOT).x50_3_um
    assert raw < 0.95 * true  # clearing the border biases x50,3 low (~8 %)
    assert corr == pytest.approx(true, rel=0.025)  # seeds 0-5: within 1.1 %


def test_circular_roi_correction_is_unbiased():
    rng = np.random.default_rng(8)
    big_r, size = 150, 320
    roi = np.zeros((size, size), np.uint8)
    cv2.circle(roi, (size // 2, size // 2), big_r, 1, -1)
    d = _population(rng, 600_000)
    # centre distance from the field centre, uniform over a disc larger than the field
    rad = (big_r + d.max()) * np.sqrt(rng.uniform(0, 1, d.size))
    kept = rad + d / 2 < big_r
    true = compute_psd(d, config=NO_BOOT).x50_3_um
    raw = compute_psd(d[kept], config=NO_BOOT).x50_3_um
    w = edge_correction_weights(d[kept], d[kept], roi=RoiSurvival(roi))
    corr = compute_psd(d[kept], weights=w, config=NO_BOOT).x50_3_um
    assert raw < 0.95 * true  # ~9 % low
    assert corr == pytest.approx(true, rel=0.025)  # seeds 0-5: within 1.1 %
