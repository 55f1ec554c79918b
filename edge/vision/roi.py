"""Region of interest: the illuminated field of the flow cell.

Outside the back-lit circle the frame is black; crystals are measured only inside the
field, and the field boundary counts as a border (crystals cut by it are rejected like
those cut by the frame edge: the mask goes to ``measure_crystals(..., roi=mask)``).

Modes (:class:`RoiConfig`):

* ``auto``: threshold the grey frame (:func:`field_threshold`, or ``threshold``), keep
  the largest bright component, fill its holes (crystals inside the field are dark),
  then fit a circle to the component's outline where it does not run along the frame
  edge (algebraic least squares, refitted without the outline points that lie well
  inside the circle: bays cut by dark crystals on the field edge). The circle (clipped
  to the frame) is used when it agrees with the component (IoU >= ``min_circle_iou``),
  else the component itself; a field that fills the whole frame gives the full frame.
  ``shape = "component"`` skips the circle.
* ``model``: the same on the network's class map (field = not black background).
* ``fixed``: a circle ``fixed_circle = [cx, cy, r]`` or rectangle ``fixed_rect = [x, y,
  w, h]`` in frame pixels.
* ``full``: the whole frame.

The ROI is shrunk by ``margin_px`` so that a crystal cut by the field edge touches the ROI
boundary. Coordinates are at the resolution the ROI is computed at (the inference
resolution in :class:`edge.vision.analyzer.FrameAnalyzer`); fixed shapes are given in frame
pixels and scaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.vision.preprocess import map_grey

#: auto/model detection runs on a copy at most this wide (speed); the shape found is
#: drawn at full resolution (circle: sub-pixel centre and radius scaled back)
WORK_WIDTH = 512


class RoiConfig(BaseModel):
    """``[roi]``: where crystals are measured."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "model", "fixed", "full"] = Field(
        "auto",
        description="'auto' = detect the illuminated field in the frame, 'model' = from the "
                    "class map (not black background), 'fixed' = fixed_circle/fixed_rect, "
                    "'full' = whole frame")
    shape: Literal["circle", "component"] = Field(
        "circle",
        description="auto/model: fit a circle to the field outline ('circle', falls back "
                    "to the component when the fit disagrees) or use the component as is")
    threshold: float | None = Field(
        None, gt=0, lt=1,
        description="auto: grey threshold (0-1) of the illuminated field; None = from the "
                    "frame (Otsu, then edge_level between dark and bright)")
    edge_level: float = Field(
        0.25, gt=0, lt=1,
        description="auto: the field edge lies this fraction of the way from the dark "
                    "surround's level to the field's bright level (vignetting darkens the "
                    "rim, so well below the middle)")
    min_level: float = Field(
        0.08, ge=0, lt=1,
        description="auto: field pixels must be brighter than this (0-1) whatever Otsu says, "
                    "so a dark or blank frame has no field")
    margin_px: int = Field(
        2, ge=0, le=200,
        description="shrink the ROI by this many pixels (at inference resolution) so crystals "
                    "cut by the field edge are rejected as border crystals")
    min_field_fraction: float = Field(
        0.05, ge=0, le=1,
        description="a field smaller than this fraction of the frame counts as 'no field'")
    min_circle_iou: float = Field(
        0.9, ge=0, le=1,
        description="circle fit accepted when its IoU with the detected component is at "
                    "least this")
    fixed_circle: tuple[float, float, float] | None = Field(
        None, description="fixed: [cx, cy, r] in frame pixels")
    fixed_rect: tuple[int, int, int, int] | None = Field(
        None, description="fixed: [x, y, w, h] in frame pixels")

    @model_validator(mode="after")
    def _check_fixed(self) -> RoiConfig:
        if self.mode == "fixed" and (self.fixed_circle is None) == (self.fixed_rect is None):
            raise ValueError("mode 'fixed' needs exactly one of fixed_circle, fixed_rect")
        return self


@dataclass
class Roi:
    """A region of interest at one resolution.

    Attributes
    ----------
    mask : np.ndarray
        bool ``(H, W)``, True inside.
    kind : str
        'circle', 'component', 'full', 'fixed_circle' or 'fixed_rect'.
    circle : tuple or None
        ``(cx, cy, r)`` in pixels of ``mask`` (before the margin) for circular ROIs.
    """

    mask: np.ndarray
    kind: str
    circle: tuple[float, float, float] | None = None

    @property
    def area_px(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def fraction(self) -> float:
        return self.area_px / float(self.mask.size) if self.mask.size else 0.0

    def bbox(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the mask (zeros when empty)."""
        pts = cv2.findNonZero(self.mask.astype(np.uint8))
        return (0, 0, 0, 0) if pts is None else tuple(int(v) for v in cv2.boundingRect(pts))

    def to_payload(self, *, scale: float = 1.0) -> dict[str, Any]:
        """Plain-JSON summary; ``scale`` converts pixel values to frame pixels (1/s)."""
        f = 1.0 / scale
        out: dict[str, Any] = {
            "kind": self.kind,
            "shape_hw": [int(self.mask.shape[0]), int(self.mask.shape[1])],
            "area_px": self.area_px,
            "fraction": round(self.fraction, 4),
            "bbox_frame_px": [round(v * f) for v in self.bbox()],
        }
        if self.circle is not None:
            out["circle_frame_px"] = [round(v * f, 1) for v in self.circle]
        return out


def full_roi(hw: tuple[int, int]) -> Roi:
    return Roi(np.ones(hw, dtype=bool), "full")


def detect_roi(grey: np.ndarray, config: RoiConfig | None = None, *,
               class_map: np.ndarray | None = None, black_class: int = 0,
               scale: float = 1.0) -> Roi | None:
    """Region of interest for one frame; None when no illuminated field is found.

    Parameters
    ----------
    grey : np.ndarray
        uint8 grey frame ``(H, W)`` at the working resolution (used by mode 'auto').
    config : RoiConfig, optional
    class_map : np.ndarray, optional
        uint8 class map ``(H, W)`` (mode 'model').
    black_class : int
        Class id of the black (outside-field) background.
    scale : float
        Working resolution / frame resolution, to scale fixed shapes.
    """
    cfg = config or RoiConfig()
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) grey image, got {grey.dtype} {grey.shape}")
    hw = grey.shape
    if cfg.mode == "full":
        return full_roi(hw)
    if cfg.mode == "fixed":
        roi = _fixed(hw, cfg, scale)
    else:
        # the field is found on a copy at most WORK_WIDTH wide, then drawn at full size
        f = min(1.0, WORK_WIDTH / hw[1])
        small = (max(1, round(hw[0] * f)), max(1, round(hw[1] * f)))
        if cfg.mode == "model":
            if class_map is None or class_map.shape != hw:
                raise ValueError(f"mode 'model' needs a class map of shape {hw}, got "
                                 f"{None if class_map is None else class_map.shape}")
            bright = (class_map != black_class).astype(np.uint8)
            if f < 1.0:
                bright = cv2.resize(bright, small[::-1], interpolation=cv2.INTER_NEAREST)
        else:
            g = grey if f == 1.0 else cv2.resize(grey, small[::-1], interpolation=cv2.INTER_AREA)
            t = field_threshold(g, cfg)
            bright = (g > t).astype(np.uint8)
        component = largest_filled_component(bright)
        if component is None or component.mean() < cfg.min_field_fraction:
            return None
        roi = _upscale(_shape_from_component(component, cfg), hw)
    if cfg.margin_px > 0 and roi.kind != "full":
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cfg.margin_px + 1,) * 2)
        roi.mask = cv2.erode(roi.mask.astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE) > 0
    return roi


class FieldTracker:
    """The illuminated field frame after frame, at the class map's scale.

    The field is fixed by the optics: while it has not moved (circle within 1 px, or a
    component differing in at most 0.2 % of its pixels) the previous frame's :class:`Roi`
    object is returned, so that the measuring region (and the edge-correction weights
    derived from it) stays the same from frame to frame instead of jittering with noise.
    """

    def __init__(self, config: RoiConfig, *, black_class: int, scale: float) -> None:
        self.config, self.black_class, self.scale = config, black_class, scale
        self._last: Roi | None = None

    def field(self, grey: np.ndarray, class_map: np.ndarray) -> Roi | None:
        """The field of a grey uint8 frame (resized to ``class_map``), None when none."""
        roi = detect_roi(map_grey(grey, class_map), self.config, class_map=class_map,
                         black_class=self.black_class, scale=self.scale)
        if roi is None or roi.area_px == 0:
            return None
        return self._stable(roi)

    def _stable(self, roi: Roi) -> Roi:
        last = self._last
        if last is not None and last.kind == roi.kind and last.mask.shape == roi.mask.shape:
            if roi.circle is not None and last.circle is not None:
                if max(abs(a - b) for a, b in zip(roi.circle, last.circle, strict=True)) <= 1.0:
                    return last
            elif roi.circle is None and last.circle is None:
                union = np.count_nonzero(roi.mask | last.mask)
                if union and np.count_nonzero(roi.mask ^ last.mask) <= 0.002 * union:
                    return last
        self._last = roi
        return roi


def field_threshold(grey: np.ndarray, cfg: RoiConfig) -> float:
    """Grey level (0-255) separating the illuminated field from the black surround.

    ``threshold`` when configured; else Otsu splits dark from bright, and the edge is put
    at ``edge_level`` of the way from the dark level (median below Otsu) to the bright
    level (90th percentile above it): vignetting darkens the rim of the field, and Otsu
    alone would cut inside it. Never below ``min_level``.
    """
    if cfg.threshold is not None:
        t = cfg.threshold * 255.0
    else:
        otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
        k = int(otsu)
        dark = _hist_quantile(hist[: k + 1], 0.5, 0)
        bright = _hist_quantile(hist[k + 1:], 0.9, k + 1)
        t = otsu if dark is None or bright is None else dark + cfg.edge_level * (bright - dark)
    return max(float(t), cfg.min_level * 255.0)


def _hist_quantile(hist: np.ndarray, q: float, offset: int) -> float | None:
    total = hist.sum()
    if total <= 0:
        return None
    return float(offset + np.searchsorted(np.cumsum(hist), q * total))


def _upscale(roi: Roi, hw: tuple[int, int]) -> Roi:
    """The ROI found on the reduced copy, at full size ``hw``."""
    sh, sw = roi.mask.shape
    if (sh, sw) == tuple(hw):
        return roi
    if roi.kind == "full":
        return full_roi(hw)
    fx, fy = hw[1] / sw, hw[0] / sh
    if roi.circle is not None:
        cx, cy, r = roi.circle
        circle = ((cx + 0.5) * fx - 0.5, (cy + 0.5) * fy - 0.5, r * 0.5 * (fx + fy))
        canvas = np.zeros(hw, np.uint8)
        _circle(canvas, *circle)
        return Roi(canvas > 0, roi.kind, circle)
    mask = cv2.resize(roi.mask.astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return Roi(mask > 0, roi.kind)


def _fixed(hw: tuple[int, int], cfg: RoiConfig, scale: float) -> Roi:
    canvas = np.zeros(hw, np.uint8)
    if cfg.fixed_circle is not None:
        cx, cy, r = (v * scale for v in cfg.fixed_circle)
        _circle(canvas, cx, cy, r)
        return Roi(canvas > 0, "fixed_circle", (cx, cy, r))
    x, y, w, h = (round(v * scale) for v in cfg.fixed_rect or (0, 0, 0, 0))
    canvas[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = 1
    return Roi(canvas > 0, "fixed_rect")


def _circle(canvas: np.ndarray, cx: float, cy: float, r: float) -> None:
    s = 4
    cv2.circle(canvas, (round(cx * (1 << s)), round(cy * (1 << s))), round(r * (1 << s)),
               1, thickness=-1, lineType=cv2.LINE_8, shift=s)


def largest_filled_component(binary: np.ndarray) -> np.ndarray | None:
    """uint8 mask of the largest 8-connected component of ``binary``, holes filled."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n < 2:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    comp = (labels == biggest).astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(comp)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled


def fit_circle(points: np.ndarray) -> tuple[float, float, float] | None:
    """Algebraic least-squares circle through ``points`` (N, 2) x/y; None if degenerate."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    x, y = pts[:, 0], pts[:, 1]
    a = np.column_stack([x, y, np.ones_like(x)])
    b = -(x * x + y * y)
    (d, e, f), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = -d / 2.0, -e / 2.0
    r2 = cx * cx + cy * cy - f
    if not np.isfinite(r2) or r2 <= 0:
        return None
    return float(cx), float(cy), float(np.sqrt(r2))


def _shape_from_component(component: np.ndarray, cfg: RoiConfig) -> Roi:
    h, w = component.shape
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.vstack([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    inner = pts[(pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)]
    if len(inner) == 0:
        return full_roi((h, w))
    comp_mask = component > 0
    if cfg.shape == "component" or len(inner) < 20:
        return Roi(comp_mask, "component")
    circle = fit_circle(inner)
    pts = inner
    for _ in range(4):  # refit without outline points inside the circle: bays cut by crystals
        if circle is None:
            break
        d = np.hypot(pts[:, 0] - circle[0], pts[:, 1] - circle[1]) - circle[2]
        keep = d > -max(2.0, 3.0 * float(np.median(np.abs(d))))
        if keep.all() or keep.sum() < 20:
            break
        pts = pts[keep]
        circle = fit_circle(pts)
    if circle is None:
        return Roi(comp_mask, "component")
    canvas = np.zeros((h, w), np.uint8)
    _circle(canvas, *circle)
    disc = canvas > 0
    union = np.count_nonzero(disc | comp_mask)
    iou = np.count_nonzero(disc & comp_mask) / union if union else 0.0
    if iou < cfg.min_circle_iou:
        return Roi(comp_mask, "component")
    return Roi(disc, "circle", circle)
