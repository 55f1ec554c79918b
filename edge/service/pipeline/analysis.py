"""The per-frame analysis of the pipeline: :class:`edge.vision.analyzer.FrameAnalyzer` plus what
each frame adds to a batch's size distribution.

The kept diameters, edge-correction weights and rejection counts of a frame come from
:meth:`edge.psd.PsdAccumulator.frame_contribution` of its
:class:`~edge.vision.result.FrameResult`, the code ``crystal-edge analyze`` and the
model card use too, so a batch of frames streamed through ``run`` and the same frames
analysed as files give the same PSD (Miles-Lantuejoul weights inside the frame's ROI,
capped at ``[psd] edge_weight_max``, applied only when ``[psd] edge_correction`` and
``[measure] clear_border`` are both on).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.psd import FrameContribution, PsdAccumulator, PsdConfig
from edge.sources.base import Frame
from edge.vision.analyzer import FrameAnalyzer
from edge.vision.result import FrameResult


class AnalyzerProcessor:
    """:class:`~edge.service.pipeline.stages.FrameProcessor` on top of a :class:`FrameAnalyzer`.

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
        # used only for its per-frame contribution (ROI cache shared by the post threads)
        self.accumulator = PsdAccumulator(self.psd_config,
                                          clear_border=analyzer.measure_config.clear_border)

    # The pipeline calls quality and segment from the inference thread and measure from
    # the post-processing thread(s); FrameAnalyzer keeps no per-frame state between them.
    def quality(self, image: np.ndarray) -> str | None:
        return self.analyzer.check_quality(image)

    def quality_detail(self, image: np.ndarray) -> tuple[str | None, str]:
        """``(reason, detail)`` of the quality gate (reason None: the frame is usable)."""
        q = self.analyzer.check_quality_full(image)
        return q.reason, q.detail

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return self.analyzer.segment(images)

    def busy(self) -> tuple[str, float] | None:
        """(what, since monotonic) while the backend is being loaded or built, else None."""
        return self.analyzer.loading

    def loaded_at(self) -> float | None:
        """Monotonic end of the last backend load (None: not loaded yet)."""
        return self.analyzer.loaded_at

    def measure(self, frame: Frame, class_map: np.ndarray
                ) -> tuple[FrameResult, FrameContribution | None]:
        """The frame's :class:`~edge.vision.result.FrameResult` and its contribution to
        the batch (:meth:`edge.psd.PsdAccumulator.frame_contribution`; None: rejected)."""
        assert frame.image is not None
        result = self.analyzer.postprocess(frame.name, frame.image, class_map)
        return result, self.accumulator.frame_contribution(result)

    def info(self) -> dict[str, Any]:
        return self.analyzer.model_info
