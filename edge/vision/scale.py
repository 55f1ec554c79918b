"""Pixel size and inference scale of a :class:`~edge.vision.analyzer.FrameAnalyzer`.

With ``inference_scale`` s the network sees frames resized by s, and the class map is
measured *at inference resolution* with the pixel size ``px_size_um / s`` (never resized
back for measuring). ``inference_scale="auto"`` picks s = ``px_size_um / model
px_size_um`` so the network sees the pixel size it was trained at, but never resizes
frames further than the training frames were (:func:`~edge.vision.preprocess.
auto_inference_scale`: frames of 0.5 um/px for a model trained at 2.9 um/px from
1.45 um/px frames are halved, not shrunk to a sixth; frames coarser than the model's
pixel size are enlarged halfway, geometrically: 5 um/px by 1.31, not 1.72); an explicit s that
gives a pixel size more than 10 % off the model's logs a warning once (the measurement
stays right, the segmentation may suffer). A pixel size the model cannot segment at all
(an inference scale outside 0.05..4, or a network pixel size more than
:data:`MAX_PX_SIZE_RATIO` times off the model's) is a one-line UserError before any
work, naming the pixel size, the model's and both places it is set. Without a pixel size
the frames are assumed to have the pixel size of the frames the model was trained on
(with a warning).

Reports give positions in frame pixels: :func:`to_frame_xy` and :func:`to_frame_bbox`
map the measured (inference-resolution) coordinates back with 1 / s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from edge.errors import UserError
from edge.modelmeta import ModelMeta
from edge.vision.preprocess import auto_inference_scale, inference_px_size

log = logging.getLogger(__name__)

#: Relative difference of the network's pixel size from the model's that is warned about.
PX_SIZE_TOLERANCE = 0.10
#: Factor by which the network's pixel size may differ from the model's before it is an error.
MAX_PX_SIZE_RATIO = 4.0
#: Inference scales that are analysed at all.
SCALE_RANGE = (0.05, 4.0)
#: Where the frames' pixel size is set (the analyze option and the service's key).
PX_SIZE_KEYS = "--px-size-um / [optics] px_size_um"


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
    auto = inference_scale == "auto"
    _check_sense(frame_px, scale, px, meta, model_name, auto=auto)
    off = abs(px / meta.px_size_um - 1.0)
    if off > PX_SIZE_TOLERANCE and auto and px > meta.px_size_um:
        log.info("inference_scale auto: frames of %.4g um/px are enlarged by %.3f to %.3f "
                 "um/px, halfway to the model's %.3f um/px: %s outlines the edges of fully "
                 "enlarged frames less well (docs/analyze.md)", frame_px, scale, px,
                 meta.px_size_um, model_name)
    elif off > PX_SIZE_TOLERANCE and auto:
        log.info("inference_scale auto: frames of %.4g um/px are segmented at %.3f um/px, "
                 "not at the model's %.3f um/px: %s was trained on frames resized by %.3g, "
                 "and resizing further loses the crystal rims", frame_px, px,
                 meta.px_size_um, model_name, trained_scale(meta))
    elif off > PX_SIZE_TOLERANCE:
        log.warning("pixel size at the network input %.3f um differs by %.0f %% from the "
                    "model's trained %.3f um (%s); right when it brings small crystals to "
                    "the 30-60 px the model was trained on (models/README.md, per domain), "
                    "otherwise set inference_scale = 'auto'",
                    px, 100 * off, meta.px_size_um, model_name)
    return Scale(frame_px_size_um=frame_px, inference_scale=scale, px_size_um=px)


def _frame_px_size(px_size_um: float | None, meta: ModelMeta, model_name: str) -> float:
    if px_size_um is None:
        px_size_um = meta.training_frame_px_size_um
        log.warning("frame pixel size not given: assuming %.4g um/px, the pixel size of "
                    "the frames %s was trained on (set it from a stage micrometer)",
                    px_size_um, model_name)
    px = float(px_size_um)
    if not math.isfinite(px) or px <= 0:
        raise UserError(f"px_size_um ({PX_SIZE_KEYS}): must be a positive number, got {px}")
    return px


def _check_sense(frame_px: float, scale: float, px: float, meta: ModelMeta,
                 model_name: str, *, auto: bool = False) -> None:
    """UserError when the model cannot segment frames of ``frame_px`` at ``scale``.

    Auto scales outside :data:`SCALE_RANGE` and network pixel sizes more than
    :data:`MAX_PX_SIZE_RATIO` times off the model's come from a wrong pixel size (or
    unit) far more often than from a real set-up, so nothing is analysed with them. Auto
    enlarges coarse frames only halfway, so for them the range applies to the full
    enlargement the pixel size implies: a unit slip is refused however little of it auto
    would enlarge.
    """
    ratio = px / meta.px_size_um
    lo, hi = SCALE_RANGE
    implied = max(scale, frame_px / meta.px_size_um) if auto else scale
    if lo <= implied <= hi and 1 / MAX_PX_SIZE_RATIO <= ratio <= MAX_PX_SIZE_RATIO:
        return
    raise UserError(
        f"px_size_um ({PX_SIZE_KEYS}): {frame_px:.4g} um/px at inference scale {scale:.4g} "
        f"gives {px:.4g} um/px at the network, but {model_name} was trained at "
        f"{meta.px_size_um:.4g} um/px (frames of {meta.training_frame_px_size_um:.4g} um/px); "
        f"check the pixel size (um, from a stage micrometer) or the inference scale")


def trained_scale(meta: ModelMeta) -> float | None:
    """The resize factor from the training frames to the network input; None when the
    model does not record the training frames' pixel size (nothing to bound auto by)."""
    recorded = bool(meta.frame_px_size_um) or (
        isinstance(meta.training, dict) and bool(meta.training.get("input_scale")))
    return meta.training_frame_px_size_um / meta.px_size_um if recorded else None


def _inference_scale(value: float | str, frame_px_size_um: float, meta: ModelMeta) -> float:
    if isinstance(value, str):
        if value != "auto":
            raise UserError(f"inference_scale: expected a number or 'auto', got {value!r}")
        scale = auto_inference_scale(frame_px_size_um, meta.px_size_um,
                                     trained_scale=trained_scale(meta))
    else:
        scale = float(value)
    if not isinstance(value, str) and not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise UserError(f"inference_scale: {scale:.4g} outside "
                        f"{SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}")
    return scale


def to_frame_xy(xy: np.ndarray, inference_scale: float) -> np.ndarray:
    """Pixel-centre coordinates at inference resolution -> frame pixels (float)."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / inference_scale - 0.5


def to_frame_bbox(bbox: np.ndarray, inference_scale: float) -> np.ndarray:
    """``x, y, w, h`` boxes (pixel edges) at inference resolution -> frame pixels (int)."""
    b = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    lo = np.round(b[:, :2] / inference_scale)
    hi = np.round((b[:, :2] + b[:, 2:]) / inference_scale)
    return np.concatenate([lo, hi - lo], axis=1).astype(np.int64).reshape(np.shape(bbox))
