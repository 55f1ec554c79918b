"""Overlays for people: each crystal's outline, coloured by kept / rejection reason, with
its diameter; the ROI outline; a header line with the frame's counts and pixel size.

What a process engineer looks at to decide whether to trust the numbers. Pure OpenCV
drawing on a copy of the frame (8-bit BGR out, whatever came in).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.frames import FrameResult
from edge.preprocess import to_rgb_float

#: BGR colours per crystal status (kept, then the rejection reasons of edge.measure).
COLOURS: dict[str, tuple[int, int, int]] = {
    "kept": (60, 200, 60),
    "border": (0, 165, 255),
    "agglomerate": (60, 60, 230),
    "too_small": (160, 160, 160),
}
ROI_COLOUR = (230, 200, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_bgr_u8(image: np.ndarray) -> np.ndarray:
    """Displayable 8-bit BGR copy of a decoded frame (grey, BGR, BGRA, 16-bit)."""
    rgb = to_rgb_float(image)
    return np.ascontiguousarray((rgb[:, :, ::-1] * 255.0 + 0.5).astype(np.uint8))


def render_overlay(image: np.ndarray, result: FrameResult, *, label_diameters: bool = True
                   ) -> np.ndarray:
    """Draw ``result`` on ``image`` (frame resolution); return BGR uint8.

    Outlines are measured at inference resolution and mapped back with
    1 / ``result.inference_scale``.
    """
    canvas = to_bgr_u8(image)
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 500))
    fscale = max(0.35, min(h, w) / 1600)
    inv = 1.0 / result.inference_scale
    if result.roi is not None:
        roi8 = result.roi.mask.astype(np.uint8)
        if roi8.shape != (h, w):
            roi8 = cv2.resize(roi8, (w, h), interpolation=cv2.INTER_NEAREST)
        cnts, _ = cv2.findContours(roi8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, cnts, -1, ROI_COLOUR, thick, cv2.LINE_8)
    c = result.crystals
    if c is not None:
        for i, cnt in enumerate(c.contours):
            status = "kept" if bool(c.kept[i]) else str(c.reason[i])
            colour = COLOURS.get(status, (255, 0, 255))
            pts = np.round((cnt.reshape(-1, 1, 2).astype(np.float64) + 0.5) * inv - 0.5)
            cv2.polylines(canvas, [pts.astype(np.int32)], True, colour, thick, cv2.LINE_8)
            if label_diameters and bool(c.kept[i]):
                x, y, bw, _bh = (float(v) * inv for v in c.bbox[i])
                org = (int(x + bw + 2), int(max(10.0, y + 10)))
                _text(canvas, f"{c.diameter_um[i]:.0f}", org, fscale, colour)
    _header(canvas, result, fscale)
    return canvas


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float,
          colour: tuple[int, int, int]) -> None:
    cv2.putText(canvas, text, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def _header(canvas: np.ndarray, result: FrameResult, scale: float) -> None:
    if not result.ok:
        line = f"{result.name}: REJECTED {result.reject_reason} {result.reject_detail}"
        _text(canvas, line, (8, int(24 * scale / 0.5)), scale, (60, 60, 230))
        return
    c = result.crystals
    rej = c.rejected_counts() if c is not None else {}
    parts = [f"{result.name}", f"kept {c.n_kept if c is not None else 0}"]
    parts += [f"{k} {v}" for k, v in rej.items() if v]
    parts.append(f"{result.px_size_um:.3g} um/px (d in um)")
    _text(canvas, "  ".join(parts), (8, int(24 * scale / 0.5)), scale, (255, 255, 255))
    y = int(48 * scale / 0.5)
    for name, colour in COLOURS.items():
        _text(canvas, name, (8, y), scale * 0.9, colour)
        y += int(20 * scale / 0.5)
