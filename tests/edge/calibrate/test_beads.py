"""The bead calibration recovers a generated frame's pixel size within 0.5 % across blur,
noise, uneven light, polarity and pixel sizes, drops touching and border beads, and says
in one line when there are too few beads."""

from __future__ import annotations

import numpy as np
import pytest

from edge.calibrate import CalibrationError, measure_beads
from edge.calibrate.synthetic import bead_frame, micrometer_frame

SHAPE = (400, 520)

# (px_size_um, diameter_um, blur_px, noise, uneven, dark_beads, bits)
CASES = [
    (0.5, 10.0, 0.7, 0.01, 0.0, True, 8),
    (0.5, 15.0, 2.0, 0.03, 0.5, True, 8),
    (1.0, 25.0, 1.0, 0.02, 0.3, False, 8),
    (1.45, 40.0, 1.5, 0.03, 0.5, True, 16),
    (2.0, 50.0, 2.0, 0.02, 0.4, False, 8),
    (5.0, 100.0, 1.0, 0.03, 0.6, True, 16),
]


@pytest.mark.parametrize("case", CASES, ids=[f"px{c[0]}-d{c[1]:g}" for c in CASES])
def test_recovers_pixel_size(case):
    px, diameter, blur, noise, uneven, dark, bits = case
    img = bead_frame(SHAPE, diameter_um=diameter, px_size_um=px, n_beads=25, n_touching=2,
                     blur_px=blur, noise=noise, uneven=uneven, dark_beads=dark, bits=bits,
                     seed=int(10 * px) + bits)
    cal = measure_beads(img, diameter_um=diameter)
    err_pct = 100.0 * (cal.px_size_um / px - 1.0)
    assert abs(err_pct) < 0.5, (err_pct, cal.found)
    assert abs(err_pct) <= max(3 * cal.uncertainty_pct, 0.05), (err_pct, cal.uncertainty_pct)
    assert cal.found["beads"] >= 15
    assert cal.found["dropped"].get("merged", 0) >= 1  # the touching pairs
    assert cal.found["beads_polarity"] == ("dark" if dark else "bright")


def test_touching_beads_and_border_beads_are_not_measured():
    img = bead_frame(SHAPE, diameter_um=30, px_size_um=1.0, n_beads=12, n_touching=3,
                     seed=5)
    cal = measure_beads(img, diameter_um=30)
    kept = [b for b in cal.drawing["beads"] if b["reason"] is None]
    h, w = SHAPE
    for b in kept:
        x, y, bw, bh = b["bbox"]
        assert x > 0 and y > 0 and x + bw < w and y + bh < h
    assert cal.found["dropped"].get("merged", 0) == 3
    assert all(abs(d - 30) < 0.6 for d in cal.found["diameters_px"])


def test_too_few_beads_fails_in_one_line():
    img = bead_frame(SHAPE, diameter_um=30, px_size_um=1.0, n_beads=3, n_touching=0,
                     seed=2)
    with pytest.raises(CalibrationError, match=r"^found [0-3] beads, need >= 5"):
        measure_beads(img, diameter_um=30)


def test_few_beads_give_a_note():
    img = bead_frame(SHAPE, diameter_um=30, px_size_um=1.0, n_beads=7, n_touching=0,
                     seed=4)
    cal = measure_beads(img, diameter_um=30)
    assert cal.found["beads"] < 10
    assert any("beads measured" in n for n in cal.notes)


def test_blank_and_noise_frames_fail_in_one_line():
    with pytest.raises(CalibrationError, match=r"^blank frame"):
        measure_beads(np.zeros(SHAPE, np.uint16), diameter_um=30)
    rng = np.random.default_rng(0)
    noise = np.clip(rng.normal(128, 25, SHAPE), 0, 255).astype(np.uint8)
    with pytest.raises(CalibrationError, match=r"^found \d beads, need >= 5"):
        measure_beads(noise, diameter_um=30)


def test_a_micrometer_is_not_beads():
    with pytest.raises(CalibrationError, match=r"^found \d beads"):
        measure_beads(micrometer_frame(SHAPE, seed=1), diameter_um=30)
