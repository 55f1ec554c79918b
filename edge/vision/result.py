"""What one frame (or mask file) gave: :class:`FrameResult`, the one per-frame result type.

Every door produces it: :class:`edge.vision.analyzer.FrameAnalyzer` for frames (service,
``analyze``, ``crystal-train evaluate``), the masks mode of ``analyze`` for mask files, and
the decoding step for files that cannot be read. :class:`edge.psd.PsdAccumulator` reads it
(``crystals``, ``roi_mask``, ``reject_reason``) to build the size distribution, the
analyze report writes :meth:`FrameResult.to_payload` per input, overlays draw it.

A result is either measured (``reject_reason`` None, ``crystals`` set:
:meth:`FrameResult.from_mask`) or rejected (``reject_reason`` one of
:data:`FRAME_REJECT_REASONS`, the closed list every payload counts frames by: the
quality-gate reasons of :data:`edge.vision.quality.REASONS`, ``unreadable`` for a file or
frame that cannot be decoded, ``out_of_domain``, ...: :meth:`FrameResult.from_error`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.measure import Crystals
from edge.psd.process import FRAME_REJECT_REASONS
from edge.vision.roi import Roi
from edge.vision.scale import to_frame_bbox, to_frame_xy

__all__ = ["FRAME_REJECT_REASONS", "FrameResult"]


@dataclass
class FrameResult:
    """Everything known about one frame after analysis.

    Attributes
    ----------
    name : str
        The frame or file as the user or the source named it.
    crystals : edge.measure.Crystals or None
        The measured crystals (at ``px_size_um``); None for a rejected frame.
    roi : edge.vision.roi.Roi or None
        The region measured in (border = ROI boundary); None = the whole frame. A frame
        rejected after segmentation (``crowded``) keeps the ROI it was checked in.
    reject_reason : str or None
        Why the frame was not measured; None = measured.
    reject_detail : str
        One line for people (the decoder's message, the quality metric and its limit).
    px_size_um : float
        Pixel size the crystals were measured at (the frame's over ``inference_scale``).
    inference_scale : float
        Resize factor frame -> network; ROI and outlines are at the network's scale.
    frame_hw : (H, W)
        Size of the frame as decoded; (0, 0) when unknown.
    quality, timings_ms : dict
        Quality-gate and crowding metrics; stage timings (ms).
    class_map : ndarray or None
        The predicted class map (network scale) when the analyzer keeps them.
    info : dict
        Extra plain-JSON fields for the report entry.
    domain_score : float or None
        How much the frame looks like the model's training domain (1 = like it, 0 = not);
        None when no detector scored it. A batch's ``confidence`` is the mean over its
        analysed frames.
    """

    name: str
    crystals: Crystals | None = None
    roi: Roi | None = None
    reject_reason: str | None = None
    reject_detail: str = ""
    px_size_um: float = 0.0
    inference_scale: float = 1.0
    frame_hw: tuple[int, int] = (0, 0)
    quality: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    class_map: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    domain_score: float | None = None

    @classmethod
    def from_error(cls, name: str, reason: str | None, detail: str = "",
                   **kw: Any) -> FrameResult:
        """A frame that was not measured (``reason`` None is recorded as ``rejected``).

        ``**kw`` sets any other field (``roi``, ``quality``, ``timings_ms``, ...).
        """
        return cls(name=name, reject_reason=reason or "rejected", reject_detail=detail, **kw)

    @classmethod
    def from_mask(cls, name: str, crystals: Crystals, *, roi: Roi | None = None,
                  **kw: Any) -> FrameResult:
        """A measured frame: ``crystals`` measured inside ``roi`` (None = whole frame).

        ``px_size_um`` and ``frame_hw`` default to the crystals' own.
        """
        kw.setdefault("px_size_um", float(crystals.px_size_um))
        kw.setdefault("frame_hw", tuple(int(v) for v in crystals.frame_shape[:2]))
        return cls(name=name, crystals=crystals, roi=roi, **kw)

    @property
    def ok(self) -> bool:
        """Measured (its crystals count), not rejected."""
        return self.reject_reason is None and self.crystals is not None

    @property
    def frame_px_size_um(self) -> float:
        """Pixel size of the frame as decoded (``px_size_um`` times ``inference_scale``)."""
        return self.px_size_um * self.inference_scale

    def crystal_rows(self) -> list[dict[str, Any]]:
        """:meth:`Crystals.to_rows` with positions in frame pixels.

        ``bbox_*`` and ``centroid_*`` become ``bbox_x_frame_px`` ... ``centroid_y_frame_px``
        (mapped back from inference resolution with 1 / ``inference_scale``); sizes and
        ``area_px`` / ``perimeter_px`` stay as measured (at ``px_size_um``).
        """
        c = self.crystals
        if c is None:
            return []
        bbox = to_frame_bbox(c.bbox, self.inference_scale)
        cxy = to_frame_xy(c.centroid, self.inference_scale)
        rows = []
        for i, row in enumerate(c.to_rows()):
            for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h", "centroid_x", "centroid_y"):
                del row[k]
            out = {k: v for k, v in row.items() if k != "touches_border"}
            out.update({f"bbox_{k}_frame_px": int(v) for k, v in zip("xywh", bbox[i], strict=True)})
            out["centroid_x_frame_px"] = round(float(cxy[i, 0]), 2)
            out["centroid_y_frame_px"] = round(float(cxy[i, 1]), 2)
            out["touches_border"] = row["touches_border"]
            rows.append(out)
        return rows + self._small_rows()

    def _small_rows(self) -> list[dict[str, Any]]:
        """Rows of the objects dropped as too small: only what the cleaning step knows
        (frame, area, the area-equivalent diameter, bounding box and its centre)."""
        c = self.crystals
        if c is None or not len(c.small):
            return []
        bbox = to_frame_bbox(c.small[:, 1:5], self.inference_scale)
        centre = c.small[:, 1:3] + c.small[:, 3:5] / 2.0
        cxy = to_frame_xy(centre, self.inference_scale)
        rows = []
        for i, (frame, *_box, area) in enumerate(c.small.tolist()):
            row: dict[str, Any] = {
                "frame": int(frame), "area_px": int(area),
                "diameter_um": round(float(np.sqrt(4.0 * area / np.pi)) * c.px_size_um, 3),
                "kept": False, "reason": "too_small"}
            row.update({f"bbox_{k}_frame_px": int(v)
                        for k, v in zip("xywh", bbox[i], strict=True)})
            row["centroid_x_frame_px"] = round(float(cxy[i, 0]), 2)
            row["centroid_y_frame_px"] = round(float(cxy[i, 1]), 2)
            rows.append(row)
        return rows

    @property
    def roi_mask(self) -> np.ndarray | None:
        """The ROI as a bool mask at the crystals' scale (None = the whole frame)."""
        return None if self.roi is None else self.roi.mask

    @property
    def error(self) -> str | None:
        """One line on why the frame was skipped (None when it was measured)."""
        if self.ok:
            return None
        detail = f" ({self.reject_detail})" if self.reject_detail else ""
        return f"rejected: {self.reject_reason}{detail}"

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON entry of the analyze report's ``images`` (no per-crystal data).

        Measured: ``status`` ``ok``, ``frame_shape`` (of the measured map), ``n_kept``,
        ``n_rejected`` by reason; rejected: ``status`` ``error``, ``error`` (see
        :attr:`error`) and ``reject_reason``. Then, where known, ``timings_ms``,
        ``quality``, ``roi`` (frame pixels), ``domain_score`` and :attr:`info`.
        """
        entry: dict[str, Any] = {"file": self.name}
        c = self.crystals
        if self.ok and c is not None:
            entry.update(status="ok", frame_shape=[int(v) for v in c.frame_shape[:2]],
                         n_kept=int(c.n_kept), n_rejected=c.rejected_counts())
        else:
            entry.update(status="error", error=self.error, reject_reason=self.reject_reason)
        if self.timings_ms:
            entry["timings_ms"] = {k: round(float(v), 3) for k, v in self.timings_ms.items()}
        if self.quality:
            entry["quality"] = {k: round(float(v), 4) for k, v in self.quality.items()}
        if self.roi is not None:
            entry["roi"] = self.roi.to_payload(scale=self.inference_scale)
        if self.domain_score is not None:
            entry["domain_score"] = round(float(self.domain_score), 4)
        entry.update(self.info)
        return entry
