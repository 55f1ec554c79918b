"""The per-frame analysis of the pipeline: :class:`edge.frames.FrameAnalyzer` plus the
edge-correction weights of each frame's kept crystals.

The weights are :func:`edge.report.kept_edge_weights`, as in ``crystal-edge analyze``, so a batch of
frames streamed through ``run`` and the same frames analysed as files give the same PSD:
Miles-Lantuejoul weights from each kept crystal's bounding box, inside the frame's ROI
(or the rectangular frame), capped at ``[psd] edge_weight_max``, applied only when
``[psd] edge_correction`` and ``[measure] clear_border`` are both on.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from edge.frames import FrameAnalyzer
from edge.pipeline.stages import Measured
from edge.psd import PsdConfig, RoiSurvival
from edge.report import kept_edge_weights
from edge.sources.base import Frame


class AnalyzerProcessor:
    """:class:`~edge.pipeline.stages.FrameProcessor` on top of a :class:`FrameAnalyzer`.

    Parameters
    ----------
    analyzer : FrameAnalyzer
        Loaded analyzer (model, backend, quality gate, ROI, measurement settings).
    psd_config : PsdConfig, optional
        Edge-correction settings.
    """

    def __init__(self, analyzer: FrameAnalyzer, *, psd_config: PsdConfig | None = None) -> None:
        self.analyzer = analyzer
        self.psd_config = psd_config or PsdConfig()
        self.edge_correction = bool(self.psd_config.edge_correction
                                    and analyzer.measure_config.clear_border)
        self._roi_key: tuple[Any, ...] | None = None
        self._roi_surv: RoiSurvival | None = None

    # The pipeline calls quality and segment from the inference thread and measure from
    # the post-processing thread(s); FrameAnalyzer keeps no per-frame state between them.
    def quality(self, image: np.ndarray) -> str | None:
        return self.analyzer.check_quality(image)

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return self.analyzer.segment(images)

    def busy(self) -> tuple[str, float] | None:
        """(what, since monotonic) while the backend is being loaded or built, else None."""
        return self.analyzer.loading

    def measure(self, frame: Frame, class_map: np.ndarray) -> Measured:
        assert frame.image is not None
        res = self.analyzer.postprocess(frame.name, frame.image, class_map)
        if not res.ok or res.crystals is None:
            return Measured(diameters_um=np.zeros(0), reject=res.reject_reason or "rejected",
                            extra={"detail": res.reject_detail})
        c = res.crystals
        kept = np.asarray(c.reason) == ""
        d = np.asarray(c.diameter_um, dtype=np.float64)[kept]
        weights = None
        if self.edge_correction:
            roi = self._survival(res.roi.mask) if res.roi is not None else None
            weights = kept_edge_weights(c, roi=roi, max_weight=self.psd_config.edge_weight_max)
        rejected = {k: int(v) for k, v in c.rejected_counts().items() if int(v)}
        return Measured(diameters_um=d, weights=weights, crystals_rejected_by_reason=rejected,
                        extra={"timings_ms": dict(res.timings_ms)})

    def _survival(self, mask: np.ndarray) -> RoiSurvival:
        """RoiSurvival of ``mask``, reused while the ROI stays the same (usual case)."""
        m = np.ascontiguousarray(mask, dtype=np.uint8)
        key = (m.shape, zlib.crc32(m.data))
        if key != self._roi_key or self._roi_surv is None:
            self._roi_surv = RoiSurvival(m)
            self._roi_key = key
        return self._roi_surv

    def info(self) -> dict[str, Any]:
        return self.analyzer.model_info
