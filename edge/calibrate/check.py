"""The check image: the frame with what was measured drawn on it, under a text band.

Micrometer: every fitted line centre as a line across the frame (green: used in the fit;
red: dropped as an outlier), half transparent so the ruled line shows beneath. Beads:
each measured bead's outline (green) with its diameter in micrometres, each dropped
component's outline (orange) with the reason. The band gives the result line and what
was found.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.calibrate.result import Calibration
from edge.vision.overlay import to_bgr_u8

GREEN, RED, ORANGE = (60, 200, 60), (60, 60, 230), (0, 165, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def render_check(image: np.ndarray, cal: Calibration) -> np.ndarray:
    """BGR uint8 check image of ``cal`` measured on ``image`` (the decoded frame)."""
    canvas = to_bgr_u8(image)
    h, w = canvas.shape[:2]
    scale = max(0.4, min(h, w) / 1200)
    layer = canvas.copy()
    if cal.method == "micrometer":
        _draw_lines(layer, cal)
    else:
        _draw_beads(layer, cal, scale)
    canvas = cv2.addWeighted(layer, 0.6, canvas, 0.4, 0.0)
    return np.vstack([_band(w, cal, scale), canvas])


def _draw_lines(canvas: np.ndarray, cal: Calibration) -> None:
    h, w = canvas.shape[:2]
    phi = cal.drawing["phi"]
    nx, ny = math.cos(phi), math.sin(phi)
    reach = 2 * math.hypot(h, w)
    thick = max(1, round(min(h, w) / 600))
    for u, ok in zip(cal.drawing["centres"], cal.drawing["keep"], strict=True):
        cx, cy = w / 2 + u * nx, h / 2 + u * ny
        p1 = (round(cx - reach * ny), round(cy + reach * nx))
        p2 = (round(cx + reach * ny), round(cy - reach * nx))
        inside, q1, q2 = cv2.clipLine((0, 0, w, h), p1, p2)
        if inside:
            cv2.line(canvas, q1, q2, GREEN if ok else RED, thick, cv2.LINE_AA)


def _draw_beads(canvas: np.ndarray, cal: Calibration, scale: float) -> None:
    thick = max(1, round(min(canvas.shape[:2]) / 600))
    for b in cal.drawing["beads"]:
        colour = GREEN if b["reason"] is None else ORANGE
        cv2.polylines(canvas, [b["contour"].astype(np.int32)], True, colour, thick,
                      cv2.LINE_AA)
        x, y, bw, _ = b["bbox"]
        label = (f"{b['d_px'] * cal.px_size_um:.1f}" if b["reason"] is None
                 else b["reason"])
        _text(canvas, label, (int(x + bw + 2), int(max(12, y + 10))), 0.8 * scale, colour)


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float,
          colour: tuple[int, int, int]) -> None:
    cv2.putText(canvas, text, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def _band(width: int, cal: Calibration, scale: float) -> np.ndarray:
    """Dark band: the result line, then what was found."""
    f = cal.found
    if cal.method == "micrometer":
        second = (f"{f['lines']} lines ({f['lines_rejected']} dropped), period "
                  f"{f['period_px']:.3f} px, angle {f['angle_deg']:.1f} deg, "
                  f"residual {f['residual_rms_px']:.3f} px rms")
    else:
        dropped = ", ".join(f"{v} {k}" for k, v in f["dropped"].items()) or "none"
        second = (f"{f['beads']} beads, median d {f['median_diameter_px']:.3f} px "
                  f"(MAD {f['mad_diameter_px']:.3f}), dropped: {dropped}; labels in um")
    line_h = int(cv2.getTextSize("Ag", _FONT, scale, 1)[0][1] * 1.9) + 4
    band = np.full((2 * line_h + 6, width, 3), 30, np.uint8)
    cv2.putText(band, cal.summary(), (6, line_h), _FONT, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    cv2.putText(band, second, (6, 2 * line_h), _FONT, scale, (200, 200, 200), 1,
                cv2.LINE_AA)
    return band
