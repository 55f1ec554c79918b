"""Grey float image and flat-field correction shared by both calibration methods."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from edge.calibrate.result import CalibrationError
from edge.vision.preprocess import to_rgb_float

#: the background is estimated on a copy this many pixels on its long side
_SMALL_SIDE = 192


def grey_float(image: np.ndarray) -> np.ndarray:
    """A decoded frame (grey, BGR(A), 8 or 16 bit) as float32 grey in [0, 1]."""
    return to_rgb_float(image).mean(axis=2, dtype=np.float32)


def flat_field(grey: np.ndarray) -> np.ndarray:
    """Divide out uneven illumination: ``grey / background``, so the background is 1.

    The background is the median over a window of 1/6 of the frame, taken on a copy
    shrunk by area averaging to :data:`_SMALL_SIDE` pixels, smoothed and enlarged back.
    The median ignores lines or beads as long as they cover less than half of any
    window; whatever scale or polarity they have, the correction stays a smooth
    multiplicative field.

    Raises
    ------
    CalibrationError
        The frame is blank (no contrast at all) or black.
    """
    h, w = grey.shape
    if float(grey.max()) <= 0.0:
        raise CalibrationError("blank frame (all black)")
    if float(grey.std()) < 1e-4 * float(grey.max()):
        raise CalibrationError(f"blank frame (no contrast: std {float(grey.std()):.2g})")
    f = min(1.0, _SMALL_SIDE / max(h, w))
    small = cv2.resize(grey, (max(8, round(w * f)), max(8, round(h * f))),
                       interpolation=cv2.INTER_AREA)
    size = max(3, min(small.shape) // 6) | 1
    bg = ndimage.median_filter(small, size=size, mode="reflect")
    bg = cv2.GaussianBlur(bg, (0, 0), size / 3.0)
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    floor = 1e-3 * float(np.median(bg))
    if floor <= 0.0:
        raise CalibrationError("blank frame (background is black)")
    return grey / np.maximum(bg, floor)
