"""From a decoded frame to measured crystals: everything that looks at pixels.

Owns the frame decoder with its size limits (:mod:`~edge.vision.decode`), pre-processing
for the network (:mod:`~edge.vision.preprocess`: channels, bit depth, scale, padding),
the quality gate (:mod:`~edge.vision.quality`), the illuminated field
(:mod:`~edge.vision.roi`), :class:`~edge.vision.analyzer.FrameAnalyzer` (quality gate ->
segmentation -> ROI -> measurement, one :class:`~edge.vision.result.FrameResult` per
frame; its segmentation stage :mod:`~edge.vision.segmenter` with one backend per input
size, :mod:`~edge.vision.backendslot`, and a finer second pass for thin crystals,
:mod:`~edge.vision.finescale`; pixel size and inference scale in
:mod:`~edge.vision.scale`, the service's frame-size lock in :mod:`~edge.vision.framesize`)
and overlays
(:mod:`~edge.vision.overlay`). Every door (``analyze``, ``run``, ``crystal-train
evaluate``) goes through it. Nothing is imported here.
"""
