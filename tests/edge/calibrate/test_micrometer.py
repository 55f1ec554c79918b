"""The stage-micrometer calibration recovers a generated frame's pixel size within 0.5 %
across blur, noise, rotation, uneven light, index lines and pixel sizes, and says in one
line when a frame shows no line pattern."""

from __future__ import annotations

import numpy as np
import pytest

from edge.calibrate import CalibrationError, measure_micrometer
from edge.calibrate.synthetic import bead_frame, micrometer_frame

SHAPE = (360, 480)

# (px_size_um, spacing_um, angle_deg, blur_px, noise, uneven, dark_lines, bits)
CASES = [
    (0.5, 10.0, 0.0, 0.7, 0.02, 0.0, True, 8),
    (0.5, 10.0, 45.0, 2.0, 0.05, 0.5, True, 8),
    (1.0, 10.0, 90.0, 1.0, 0.02, 0.3, True, 8),
    (1.0, 10.0, 17.0, 1.5, 0.08, 0.6, False, 8),
    (1.45, 10.0, 133.0, 1.0, 0.03, 0.4, True, 16),
    (2.0, 10.0, 44.0, 0.7, 0.02, 0.5, True, 8),
    (2.0, 10.0, 91.0, 1.5, 0.04, 0.2, False, 8),
    (3.3, 100.0, 178.0, 2.5, 0.05, 0.5, True, 16),
    (5.0, 100.0, 60.0, 1.0, 0.02, 0.3, True, 8),
]


@pytest.mark.parametrize("case", CASES, ids=[f"px{c[0]}-angle{c[2]:g}" for c in CASES])
def test_recovers_pixel_size(case):
    px, spacing, angle, blur, noise, uneven, dark, bits = case
    img = micrometer_frame(SHAPE, spacing_um=spacing, px_size_um=px, angle_deg=angle,
                           blur_px=blur, noise=noise, uneven=uneven, dark_lines=dark,
                           bits=bits, seed=int(angle) + bits)
    cal = measure_micrometer(img, spacing_um=spacing)
    err_pct = 100.0 * (cal.px_size_um / px - 1.0)
    assert abs(err_pct) < 0.5, (err_pct, cal.found)
    # the stated uncertainty covers the error (3 sigma, and a floor for tiny sigmas)
    assert abs(err_pct) <= max(3 * cal.uncertainty_pct, 0.05), (err_pct, cal.uncertainty_pct)
    assert abs((cal.found["angle_deg"] - angle + 90) % 180 - 90) < 0.5
    assert cal.found["lines_polarity"] == ("dark" if dark else "bright")


def test_index_lines_do_not_pass_for_the_division():
    """Blur that leaves the every-5th/10th index lines the strongest pattern still gives
    the division's period, not five or ten of them."""
    img = micrometer_frame(SHAPE, spacing_um=10, px_size_um=2.0, angle_deg=0, blur_px=2.0,
                           noise=0.02, seed=3)
    cal = measure_micrometer(img, spacing_um=10)
    assert cal.found["period_px"] == pytest.approx(5.0, rel=0.005)


def test_blank_frame_fails_in_one_line():
    with pytest.raises(CalibrationError, match=r"^blank frame"):
        measure_micrometer(np.full(SHAPE, 120, np.uint8), spacing_um=10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_frame_has_no_pattern(seed):
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(128, 25, SHAPE), 0, 255).astype(np.uint8)
    with pytest.raises(CalibrationError,
                       match=r"^no periodic line pattern found \(peak contrast [\d.]+, "
                             r"need >= 8\)$"):
        measure_micrometer(img, spacing_um=10)


def test_beads_are_not_a_micrometer():
    with pytest.raises(CalibrationError):
        measure_micrometer(bead_frame(SHAPE, seed=1), spacing_um=10)


@pytest.mark.parametrize("width_frac", [3.0, 5.0, 6.0])
def test_sharp_lines_are_not_taken_for_a_finer_division(width_frac):
    """A sharp line's own harmonics (and their side lobes, with a zero of the envelope
    beside them) on a low-noise frame never pass for divisions 2, 5 or 10 times finer."""
    img = micrometer_frame(SHAPE, spacing_um=10, px_size_um=0.4, angle_deg=7,
                           line_width_um=10 / width_frac, blur_px=0.5, noise=0.003, seed=1)
    cal = measure_micrometer(img, spacing_um=10)
    assert cal.px_size_um == pytest.approx(0.4, rel=0.001)
