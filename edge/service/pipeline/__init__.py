"""The streaming pipeline of ``crystal-edge run``.

Owns the threads and queues from a frame source to the sinks and everything a batch
needs on the way: :mod:`~edge.service.pipeline.app` (the ``Service``: configuration,
sources, sinks, reload, signals), :mod:`~edge.service.pipeline.runtime` (``Pipeline``:
capture -> inference -> post-processing -> aggregation -> sinks, bounded queues),
:mod:`~edge.service.pipeline.frame_stages` and
:mod:`~edge.service.pipeline.batch_stages` (the stage loops),
:mod:`~edge.service.pipeline.analysis` (the per-frame analysis on top of
:class:`edge.vision.analyzer.FrameAnalyzer`), :mod:`~edge.service.pipeline.batch` (batch
ids, the open batch, the closed :class:`BatchReport`),
:mod:`~edge.service.pipeline.delivery` (close and delivery retries) and
:mod:`~edge.service.pipeline.health` (progress, problems, the status snapshot).
"""
