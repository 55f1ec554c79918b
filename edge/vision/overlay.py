"""Overlays for people: each crystal's outline, coloured by kept / rejection reason, with
its diameter; the ROI outline; a header line with the frame's counts and pixel size.

What a process engineer looks at to decide whether to trust the numbers. Pure OpenCV
drawing on a copy of the frame (8-bit BGR out, whatever came in).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.vision.preprocess import to_rgb_float
from edge.vision.result import FrameResult
from edge.vision.scale import to_frame_bbox, to_frame_xy

#: BGR colours per crystal status (kept, then the rejection reasons of edge.measure).
COLOURS: dict[str, tuple[int, int, int]] = {
    "kept": (60, 200, 60),
    "border": (0, 165, 255),
    "agglomerate": (60, 60, 230),
    "bubble": (230, 90, 200),
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

    The frame keeps its pixels and size below a header band of
    :func:`header_height` rows (name, counts, pixel size, colour legend), so no crystal
    is hidden under text. Outlines are measured at inference resolution and mapped back
    with 1 / ``result.inference_scale``; the header gives the frame's pixel size (and the
    measuring one when they differ).
    """
    canvas = to_bgr_u8(image)
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 500))
    fscale = max(0.4, min(h, w) / 1400)  # keep in step with header_height
    s = result.inference_scale
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
            pts = np.round(to_frame_xy(cnt.reshape(-1, 1, 2), s))
            cv2.polylines(canvas, [pts.astype(np.int32)], True, colour, thick, cv2.LINE_8)
            if label_diameters and bool(c.kept[i]):
                x, y, bw, _bh = (float(v) for v in to_frame_bbox(c.bbox[i], s))
                org = (int(x + bw + 2), int(max(10.0, y + 10)))
                _text(canvas, f"{c.diameter_um[i]:.0f}", org, fscale, colour)
    return np.vstack([_header(w, result, fscale), canvas])


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float,
          colour: tuple[int, int, int]) -> None:
    x, y = org
    for dx, dy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):  # thin dark halo, same glyph widths
        cv2.putText(canvas, text, (x + dx, y + dy), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def header_height(width: int, height: int) -> int:
    """Rows of the header band :func:`render_overlay` puts above a ``width x height`` frame."""
    scale = max(0.4, min(height, width) / 1400)
    return 2 * _line_height(scale) + 6


def _line_height(scale: float) -> int:
    return int(cv2.getTextSize("Ag", _FONT, scale, 1)[0][1] * 1.9) + 4


def units_caption(result: FrameResult) -> str:
    """The caption's units: the frame's pixel size, and the measuring one when different."""
    frame_px = f"frame {result.frame_px_size_um:.3g} um/px"
    if abs(result.inference_scale - 1.0) > 1e-9:
        frame_px += f" (measured at {result.px_size_um:.3g} um/px)"
    return frame_px + ", d in um"


def _header(width: int, result: FrameResult, scale: float) -> np.ndarray:
    """Dark band, two lines: frame name and counts, colour legend (or the reject reason)."""
    line_h = _line_height(scale)
    band = np.full((2 * line_h + 6, width, 3), 30, np.uint8)
    y1, y2 = line_h, 2 * line_h
    if not result.ok:
        _text(band, f"{result.name}: REJECTED {result.reject_reason}", (8, y1), scale,
              (60, 60, 230))
        _text(band, result.reject_detail, (8, y2), scale, (60, 60, 230))
        return band
    c = result.crystals
    rej = c.rejected_counts() if c is not None else {}
    parts = [f"{result.name}", f"kept {c.n_kept if c is not None else 0}"]
    parts += [f"{k} {v}" for k, v in rej.items() if v]
    parts.append(units_caption(result))
    _text(band, "  ".join(parts), (8, y1), scale, (255, 255, 255))
    x = 8
    for name, colour in COLOURS.items():
        _text(band, name, (x, y2), scale, colour)
        x += cv2.getTextSize(name, _FONT, scale, 1)[0][0] + 14
    return band
