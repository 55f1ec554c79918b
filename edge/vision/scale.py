"""Pixel size and inference scale of a :class:`~edge.vision.analyzer.FrameAnalyzer`.

With ``inference_scale`` s the network sees frames resized by s, and the class map is
measured *at inference resolution* with the pixel size ``px_size_um / s`` (never resized
back for measuring). ``inference_scale="auto"`` picks s = ``px_size_um / model
px_size_um`` so the network sees the pixel size it was trained at; an explicit s that
gives a pixel size more than 10 % off the model's logs a warning once (the measurement
stays right, the segmentation may suffer). Without a pixel size the frames are assumed
to have the pixel size of the frames the model was trained on (with a warning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.errors import UserError
from edge.modelmeta import ModelMeta
from edge.vision.preprocess import auto_inference_scale, inference_px_size

log = logging.getLogger(__name__)

#: Relative difference of the network's pixel size from the model's that is warned about.
PX_SIZE_TOLERANCE = 0.10


@dataclass(frozen=True)
class Scale:
    """The resolved sizes: frames' pixel size, resize factor, measuring pixel size (um)."""

    frame_px_size_um: float
    inference_scale: float
    px_size_um: float


def resolve_scale(px_size_um: float | None, inference_scale: float | str, meta: ModelMeta,
                  *, model_name: str) -> Scale:
    """The :class:`Scale` of frames of ``px_size_um`` (None: the model's training frames')
    analysed with ``inference_scale`` (a number or ``"auto"``); one-line UserErrors."""
    frame_px = _frame_px_size(px_size_um, meta, model_name)
    scale = _inference_scale(inference_scale, frame_px, meta)
    px = inference_px_size(frame_px, scale)
    off = abs(px / meta.px_size_um - 1.0)
    if off > PX_SIZE_TOLERANCE:
        log.warning("pixel size at the network input %.3f um differs by %.0f %% from the "
                    "model's trained %.3f um (%s); set inference_scale = 'auto' to match",
                    px, 100 * off, meta.px_size_um, model_name)
    return Scale(frame_px_size_um=frame_px, inference_scale=scale, px_size_um=px)


def _frame_px_size(px_size_um: float | None, meta: ModelMeta, model_name: str) -> float:
    if px_size_um is None:
        px_size_um = meta.training_frame_px_size_um
        log.warning("frame pixel size not given: assuming %.4g um/px, the pixel size of "
                    "the frames %s was trained on (set it from a stage micrometer)",
                    px_size_um, model_name)
    px = float(px_size_um)
    if px <= 0:
        raise UserError(f"px_size_um: must be > 0, got {px}")
    return px


def _inference_scale(value: float | str, frame_px_size_um: float, meta: ModelMeta) -> float:
    if isinstance(value, str):
        if value != "auto":
            raise UserError(f"inference_scale: expected a number or 'auto', got {value!r}")
        scale = auto_inference_scale(frame_px_size_um, meta.px_size_um)
    else:
        scale = float(value)
    if not 0.05 <= scale <= 4.0:
        raise UserError(f"inference_scale: {scale:.4g} outside 0.05..4")
    return scale
