"""The streaming pipeline of the appliance (``crystal-edge run``).

:class:`~edge.pipeline.runtime.Pipeline` runs capture -> inference -> post-processing ->
aggregation -> sinks in threads joined by bounded queues;
:class:`~edge.pipeline.stages.FrameProcessor` is the per-frame analysis it drives
(:class:`~edge.pipeline.analysis.AnalyzerProcessor` adapts :class:`edge.frames.FrameAnalyzer`).
"""

from edge.pipeline.runtime import Pipeline, PipelineOptions
from edge.pipeline.stages import FrameProcessor, Measured

__all__ = ["FrameProcessor", "Measured", "Pipeline", "PipelineOptions"]
