"""Frame quality gate: reject frames that would give wrong numbers, with a reason.

Pre-inference checks (:func:`check_frame`, on the 8-bit grey frame, in this order):

``blank``         grey standard deviation < ``blank_std`` (lens cap, dead camera).
``no_field``      the bright (illuminated) part < ``min_field_fraction`` of the frame.
``underexposed``  the 95th percentile of the field < ``min_brightness``.
``overexposed``   more than ``max_saturated_fraction`` of the field is saturated
                  (>= ``saturation_level``).
``defocused``     focus < ``min_focus``; focus = variance of the Laplacian of the frame
                  (grey 0-255, Gaussian-smoothed with sigma 1 to suppress pixel noise),
                  on the field pixels within 3 px of dark content (crystal edges), so the
                  field edge and the empty background do not dilute it. Checked only
                  when the field has content (``min_content``): an empty field is sharp or
                  not, nobody can tell. It depends on the optics and the crystal load:
                  calibrate it on the plant's frames (the value is in the per-frame
                  ``quality`` metrics).

Post-segmentation (:func:`check_crowding`): ``crowded`` when crystals cover more than
``max_crystal_fraction`` of the ROI (overlaps make sizes meaningless). Unreadable files
are rejected as ``unreadable`` by whoever decodes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.vision.roi import largest_filled_component

REASONS = ("unreadable", "blank", "no_field", "underexposed", "overexposed", "defocused",
           "crowded", "bad_shape")


class QualityConfig(BaseModel):
    """``[quality]``: thresholds of the frame quality gate (grey values on 0-1)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False = accept every decodable frame")
    blank_std: float = Field(
        0.01, ge=0, description="frames whose grey standard deviation is below this are 'blank'")
    field_level: float = Field(
        0.5, gt=0, lt=1,
        description="a pixel counts as illuminated above this fraction of the frame's 99th "
                    "grey percentile (and above 0.05), so a dim frame is 'underexposed', "
                    "not 'no_field'")
    min_content: float = Field(
        0.002, ge=0, le=1,
        description="the focus check needs at least this fraction of field pixels darker "
                    "than the field's median by 0.15 (crystals or their blur); an empty "
                    "field has nothing to focus on and is not called defocused")
    min_field_fraction: float = Field(
        0.05, ge=0, le=1,
        description="'no_field' when fewer pixels than this fraction are illuminated")
    min_brightness: float = Field(
        0.35, ge=0, le=1,
        description="'underexposed' when the 95th grey percentile of the field is below this")
    saturation_level: float = Field(
        0.98, gt=0, le=1, description="grey level counted as saturated")
    max_saturated_fraction: float = Field(
        0.25, ge=0, le=1,
        description="'overexposed' when more than this fraction of the field is saturated")
    min_focus: float = Field(
        15.0, ge=0,
        description="'defocused' when the variance of the Laplacian (grey 0-255, sigma-1 "
                    "smoothed, near crystal edges) is below this; 0 = off. Camera-specific: "
                    "sharp synthetic frames ~170, Gaussian blur sigma 2 ~30, sigma 4 ~6")
    max_crystal_fraction: float = Field(
        0.35, gt=0, le=1,
        description="'crowded' when the crystal class covers more than this fraction of "
                    "the ROI")
    work_width: int = Field(
        512, ge=64,
        description="frames wider than this are shrunk to this width for the checks (speed)")


@dataclass
class QualityResult:
    """Outcome of the gate: ``reason`` None = accepted; ``metrics`` for reports."""

    reason: str | None
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_payload(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, "detail": self.detail,
                "metrics": {k: round(float(v), 4) for k, v in self.metrics.items()}}


def focus_measure(grey: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of a uint8 grey image (sigma-1 smoothed), inside ``mask``.

    :func:`check_frame` passes the pixels near dark content (crystals), so the value does
    not fall with the number of crystals in the frame, only with their sharpness.
    """
    g = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
    vals = lap[mask] if mask is not None else lap.ravel()
    return float(vals.var()) if vals.size else 0.0


def _percentile_u8(hist: np.ndarray, q: float) -> float:
    """``q``-th percentile (lower value) of uint8 data given as a 256-bin histogram."""
    cum = np.cumsum(hist)
    if cum[-1] == 0:
        return 0.0
    return float(np.searchsorted(cum, q / 100.0 * cum[-1]))


def check_frame(grey: np.ndarray, config: QualityConfig | None = None) -> QualityResult:
    """Pre-inference quality checks of one uint8 grey frame (see the module docstring)."""
    cfg = config or QualityConfig()
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) grey frame, got {grey.dtype} {grey.shape}")
    if not cfg.enabled:
        return QualityResult(None)
    if grey.shape[1] > cfg.work_width:
        s = cfg.work_width / grey.shape[1]
        grey = cv2.resize(grey, (cfg.work_width, max(1, round(grey.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    _mean, std = cv2.meanStdDev(grey)
    m: dict[str, float] = {"std": float(std[0, 0]) / 255.0}
    if m["std"] < cfg.blank_std:
        return QualityResult("blank", f"grey std {m['std']:.4f} < {cfg.blank_std}", m)
    m["p99"] = _percentile_u8(np.bincount(grey.ravel(), minlength=256), 99) / 255.0
    lit = grey > 255.0 * max(0.05, cfg.field_level * m["p99"])
    m["field_fraction"] = float(np.count_nonzero(lit)) / lit.size
    if m["field_fraction"] < cfg.min_field_fraction:
        return QualityResult("no_field", f"illuminated fraction {m['field_fraction']:.3f} < "
                                         f"{cfg.min_field_fraction}", m)
    # the field: the largest lit component with its holes (dark crystals) filled, eroded
    comp = largest_filled_component(lit.astype(np.uint8))
    field_mask = lit if comp is None else cv2.erode(
        comp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    if not field_mask.any():
        field_mask = lit
    hist = np.bincount(grey[field_mask], minlength=256)
    n_field = float(hist.sum())
    m["p95"] = _percentile_u8(hist, 95) / 255.0
    if m["p95"] < cfg.min_brightness:
        return QualityResult("underexposed", f"field 95th percentile {m['p95']:.3f} < "
                                             f"{cfg.min_brightness}", m)
    m["saturated_fraction"] = float(hist[math.ceil(cfg.saturation_level * 255 - 1e-9):].sum()) \
        / n_field
    if m["saturated_fraction"] > cfg.max_saturated_fraction:
        return QualityResult("overexposed", f"saturated fraction {m['saturated_fraction']:.3f} "
                                            f"> {cfg.max_saturated_fraction}", m)
    content = field_mask & (grey < _percentile_u8(hist, 50) - 0.15 * 255.0)
    m["content_fraction"] = float(np.count_nonzero(content)) / n_field
    near = cv2.dilate(content.astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    m["focus"] = focus_measure(grey, near & field_mask)
    if (cfg.min_focus > 0 and m["content_fraction"] >= cfg.min_content
            and m["focus"] < cfg.min_focus):
        return QualityResult("defocused", f"focus {m['focus']:.2f} < {cfg.min_focus}", m)
    return QualityResult(None, "", m)


def check_crowding(class_map: np.ndarray, roi_mask: np.ndarray, *, crystal_class: int,
                   config: QualityConfig | None = None) -> QualityResult:
    """Post-segmentation check: crystal area fraction inside the ROI."""
    cfg = config or QualityConfig()
    if class_map.shape != roi_mask.shape:
        raise ValueError(f"class map {class_map.shape} and ROI {roi_mask.shape} differ in shape")
    n = int(np.count_nonzero(roi_mask))
    frac = float(np.count_nonzero((class_map == crystal_class) & roi_mask)) / n if n else 0.0
    m = {"crystal_fraction": frac}
    if cfg.enabled and frac > cfg.max_crystal_fraction:
        return QualityResult("crowded", f"crystal fraction {frac:.3f} > "
                                        f"{cfg.max_crystal_fraction}", m)
    return QualityResult(None, "", m)
