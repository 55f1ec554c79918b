"""Out-of-domain signal: does a frame look like the flow-cell frames the model was trained on?

A model segments whatever it is given: a photo of coins or a page of text gives a class
map, crystals and a size distribution like any frame. :func:`assess_domain` scores each
frame from what the analysis already has (no second inference) and
:class:`edge.vision.analyzer.FrameAnalyzer` rejects a frame whose score is below
``[domain] threshold`` with the reason ``out_of_domain`` (``reject = false``: scored only).

Components (each a raw value ``x`` and a score in [0, 1], see :func:`ramp`):

``uncertain_fraction``  fraction of the model's field (pixels not confidently black
                        background) where the top two logits differ by less than
                        ``margin_logit`` (softmax ``p1 < e^margin p2``), pixels within
                        ``boundary_px`` of a class change left out: on frames like its
                        training frames the model is sure everywhere except on class
                        boundaries; on other images it hesitates over whole regions.
``field_iou``           intersection over union of the illuminated field found in the
                        image (:func:`edge.vision.roi.detect_roi`, photometric) and the
                        model's not-black-background region, a band of ``boundary_px``
                        plus the ROI margin along the field's outline left out: on a
                        flow-cell frame both see the same field stop.
``surround``            median grey of the model's black-background pixels over the
                        median grey of its field (0 when it sees no black background):
                        outside a back-lit field the camera sees its black level.
``chroma``              median chroma ``(max - min) / max`` of the RGB channels over the
                        lit field: a lamp-lit flow cell is grey or slightly tinted, a
                        colour photo is not (grey frames score 0).
``crystal_fraction``    fraction of the model's field it calls crystal.

Each raw value maps to a component score with :func:`ramp` between an ``ok`` limit
(score 1) and a ``bad`` limit (score 0); the frame's score is the smallest component
score (the weakest evidence decides, and names itself in the reject detail):

.. math:: s = \\min_i \\operatorname{clip}\\left(\\frac{bad_i - x_i}{bad_i - ok_i}, 0, 1\\right)

A component that cannot be measured (``uncertain_fraction`` for a class map that did not
come from :meth:`FrameAnalyzer.segment`) is left out. The limits are calibrated on
generated frames (``scripts/calibrate_ood.py``; the numbers are in ``docs/domain.md``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.vision.preprocess import grey_u8, to_rgb_float
from edge.vision.roi import Roi, RoiConfig, detect_roi

REASON = "out_of_domain"
#: the image statistics (surround, chroma) are taken on a copy at most this wide
WORK_WIDTH = 256
Limits = tuple[float, float]
#: component name -> DomainConfig field holding its (ok, bad) limits
COMPONENTS = ("uncertain_fraction", "field_iou", "surround", "chroma", "crystal_fraction")


class DomainConfig(BaseModel):
    """``[domain]``: the out-of-domain score and the ``out_of_domain`` rejection."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="compute each frame's domain score (the frame's domain_score and "
                          "the batch's confidence); false = no score, no rejection")
    reject: bool = Field(
        True, description="reject frames scoring below threshold as 'out_of_domain'; "
                          "false = score them only")
    threshold: float = Field(
        0.5, ge=0, le=1, description="frames scoring below this are out of domain (0-1)")
    margin_logit: float = Field(
        1.1, gt=0, description="a pixel is uncertain when its top two logits differ by "
                               "less than this (1.1: the top class is under 3x as likely)")
    boundary_px: int = Field(
        2, ge=0, le=10, description="uncertain pixels within this many pixels (at inference "
                                    "resolution) of a class boundary do not count")
    uncertain_fraction: Limits = Field(
        (0.01, 0.02), description="(ok, bad) limits of the fraction of uncertain pixels in "
                                  "the model's field")
    field_iou: Limits = Field(
        (0.9, 0.7), description="(ok, bad) limits of the overlap of the illuminated field "
                                "in the image and the model's field")
    surround: Limits = Field(
        (0.25, 0.45), description="(ok, bad) limits of the black background's median grey "
                                  "over the field's")
    chroma: Limits = Field(
        (0.2, 0.35), description="(ok, bad) limits of the field's median colour "
                                 "saturation (max - min) / max")
    crystal_fraction: Limits = Field(
        (0.4, 0.65), description="(ok, bad) limits of the fraction of the model's field "
                                 "called crystal")

    @field_validator(*COMPONENTS)
    @classmethod
    def _limits(cls, value: Limits) -> Limits:
        if value[0] == value[1]:
            raise ValueError(f"the ok and bad limits must differ, got {value[0]} twice")
        return value


@dataclass
class DomainResult:
    """A frame's domain score (1 = like the training frames), its components and verdict."""

    score: float
    values: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    reject: bool = False
    detail: str = ""

    def metrics(self) -> dict[str, float]:
        """``domain_score`` and ``domain_<component>`` raw values for the frame's metrics."""
        out = {"domain_score": self.score}
        out.update({f"domain_{k}": v for k, v in self.values.items()})
        return out


def ramp(x: float, limits: Limits) -> float:
    """Component score: 1 at or beyond ``ok``, 0 at or beyond ``bad``, linear between.

    .. math:: s = \\operatorname{clip}((bad - x) / (bad - ok), 0, 1)

    works both ways: ``ok < bad`` (lower is better) and ``ok > bad`` (higher is better).
    """
    ok, bad = limits
    return float(np.clip((bad - x) / (bad - ok), 0.0, 1.0))


def uncertain_fraction(logits: np.ndarray, *, black_class: int, margin_logit: float,
                       boundary_px: int = 0) -> float:
    """Fraction of the model's field whose top-two logit gap is below ``margin_logit``.

    ``logits`` is ``(C, H, W)``; the field is every pixel that is not confidently black
    background (arg-max not ``black_class``, or uncertain). Pixels within ``boundary_px``
    of a change of the arg-max class count as certain: every class boundary (a crystal's
    blurred edge, the soft field stop) is uncertain for a pixel or two, and their share
    of the field grows as frames get smaller. 0 when there is no field.
    """
    top = logits.max(axis=0)
    if logits.shape[0] == 3:  # the second largest of three without a sort
        second = logits.sum(axis=0) - top - logits.min(axis=0)
    else:
        second = np.partition(logits, -2, axis=0)[-2]
    unsure = (top - second) < margin_logit
    in_field = unsure | (logits[black_class] < top)
    n = int(np.count_nonzero(in_field))
    if boundary_px > 0 and n:
        cm = logits.argmax(axis=0).astype(np.uint8)
        k = np.ones((2 * boundary_px + 1,) * 2, np.uint8)
        unsure &= cv2.dilate(cm, k) == cv2.erode(cm, k)
    return float(np.count_nonzero(unsure)) / n if n else 0.0


class UncertaintyLedger:
    """Each class map's uncertain fraction from :meth:`record` until :meth:`take`.

    Segmentation (the inference thread) and post-processing (the post threads) run
    apart and pass only the class map; the ledger keys the value by the map object
    (a weak reference: an entry leaves with its map, so dropped frames leave nothing).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref, float]] = {}

    def record(self, class_map: np.ndarray, value: float) -> None:
        key = id(class_map)
        ref = weakref.ref(class_map, lambda _r, k=key: self._by_id.pop(k, None))
        self._by_id[key] = (ref, value)

    def take(self, class_map: np.ndarray) -> float | None:
        """The recorded value of this very map (None: not recorded)."""
        entry = self._by_id.pop(id(class_map), None)
        return entry[1] if entry is not None and entry[0]() is class_map else None


def assess_domain(image: np.ndarray, class_map: np.ndarray, roi: Roi | None, *,
                  config: DomainConfig, black_class: int, crystal_class: int,
                  uncertain: float | None = None, roi_config: RoiConfig | None = None,
                  bit_depth: int | None = None) -> DomainResult:
    """The frame's :class:`DomainResult` (see the module docstring for the components).

    Parameters
    ----------
    image : np.ndarray
        The decoded frame (any size, channels and depth :mod:`edge.vision.preprocess` takes).
    class_map : np.ndarray
        uint8 ``(h, w)`` class map at inference resolution.
    roi : Roi or None
        The analyzer's ROI at the class map's scale (None: no field found).
    uncertain : float, optional
        :func:`uncertain_fraction` of the frame's logits (None: left out).
    roi_config : RoiConfig, optional
        The analyzer's ``[roi]``: unless its mode is 'auto' the field is detected here
        photometrically; its margin widens the band left out of ``field_iou``.
    """
    hw = class_map.shape[:2]
    model_field = class_map != black_class
    # the image statistics on a small copy: medians need no more pixels (speed)
    f = min(1.0, WORK_WIDTH / hw[1])
    small = (max(1, round(hw[1] * f)), max(1, round(hw[0] * f)))
    rgb = to_rgb_float(cv2.resize(np.asarray(image), small, interpolation=cv2.INTER_AREA),
                       bit_depth=bit_depth)
    field_small = cv2.resize(model_field.view(np.uint8), small,
                             interpolation=cv2.INTER_NEAREST) > 0
    values = _image_values(rgb, field_small)
    roi_config = roi_config or RoiConfig()
    tolerance = config.boundary_px + (roi_config.margin_px if roi_config.mode == "auto" else 0)
    values["field_iou"] = _field_iou(image, roi, model_field, detect=roi_config.mode != "auto",
                                     tolerance_px=tolerance, bit_depth=bit_depth)
    n_field = int(np.count_nonzero(model_field))
    values["crystal_fraction"] = (float(np.count_nonzero(class_map == crystal_class)) / n_field
                                  if n_field else 0.0)
    if uncertain is not None:
        values["uncertain_fraction"] = uncertain
    return score_values(values, config)


def score_values(values: dict[str, float], config: DomainConfig) -> DomainResult:
    """Component scores, the frame's score (their minimum) and the verdict of ``values``."""
    scores = {k: ramp(v, getattr(config, k)) for k, v in values.items()}
    score = min(scores.values(), default=1.0)
    reject = config.reject and score < config.threshold
    detail = ""
    if reject:
        worst = sorted((s, k) for k, s in scores.items() if s < 1.0)[:2]
        parts = [f"{k} {values[k]:.3g} (ok {_side(config, k)} {getattr(config, k)[0]:g})"
                 for _s, k in worst]
        detail = f"domain score {score:.2f} < {config.threshold:g}: " + ", ".join(parts)
    return DomainResult(score=round(score, 4), values={k: round(v, 4) for k, v in values.items()},
                        scores=scores, reject=reject, detail=detail)


def _side(config: DomainConfig, name: str) -> str:
    ok, bad = getattr(config, name)
    return "<=" if ok < bad else ">="


def _image_values(rgb: np.ndarray, model_field: np.ndarray) -> dict[str, float]:
    """``surround`` and ``chroma`` of a float RGB frame (the model's field at its size)."""
    out: dict[str, float] = {}
    # float HSV: S = (max - min) / max of the channels, V = max
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    field_med = float(np.median(grey[model_field])) if model_field.any() else 0.0
    outside = ~model_field
    if not model_field.any():
        out["surround"] = 1.0
    elif not outside.any():
        out["surround"] = 0.0
    else:
        out["surround"] = float(np.median(grey[outside])) / max(field_med, 1e-3)
    lit = model_field & (hsv[:, :, 2] > 0.15)
    out["chroma"] = float(np.median(hsv[:, :, 1][lit])) if lit.any() else 0.0
    return out


def _field_iou(image: np.ndarray, roi: Roi | None, model_field: np.ndarray, *,
               detect: bool, tolerance_px: int = 0, bit_depth: int | None = None) -> float:
    """IoU of the photometric field and the model's: the analyzer's ``roi``, or, with
    ``detect`` (a fixed, full or model ROI), the field detected here. Pixels within
    ``tolerance_px`` of the field's outline are left out (the ROI's margin and the soft
    field stop are a constant band whose share grows as frames get smaller)."""
    if detect:
        grey = grey_u8(image, bit_depth=bit_depth)
        grey = cv2.resize(grey, model_field.shape[::-1], interpolation=cv2.INTER_AREA)
        roi = detect_roi(grey, RoiConfig(margin_px=0))
    if roi is None or roi.mask.shape != model_field.shape:
        return 0.0
    inside, outside = roi.mask, ~roi.mask
    if tolerance_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance_px + 1,) * 2)
        grown = cv2.dilate(roi.mask.view(np.uint8), k, borderType=cv2.BORDER_REPLICATE) > 0
        inside = cv2.erode(roi.mask.view(np.uint8), k, borderType=cv2.BORDER_REPLICATE) > 0
        outside = ~grown
    union = int(np.count_nonzero(inside | (model_field & outside)))
    hits = int(np.count_nonzero(inside & model_field))
    return hits / union if union else 0.0


class DomainCheck:
    """The analyzer's side of the score: records each class map's uncertainty at
    segmentation time and assesses the frame at post-processing time."""

    def __init__(self, config: DomainConfig | None, *, black_class: int, crystal_class: int,
                 roi_config: RoiConfig | None = None, bit_depth: int | None = None) -> None:
        self.config = config or DomainConfig()
        self.black_class, self.crystal_class = black_class, crystal_class
        self.roi_config, self.bit_depth = roi_config, bit_depth
        self.ledger = UncertaintyLedger()

    def record(self, class_maps: list[np.ndarray], logits: np.ndarray) -> None:
        """Record :func:`uncertain_fraction` of each map's logits (``logits[i]`` cropped
        to ``class_maps[i]``)."""
        if not self.config.enabled:
            return
        for i, cm in enumerate(class_maps):
            h, w = cm.shape[:2]
            self.ledger.record(cm, uncertain_fraction(
                logits[i, :, :h, :w], black_class=self.black_class,
                margin_logit=self.config.margin_logit, boundary_px=self.config.boundary_px))

    def transfer(self, old: np.ndarray, new: np.ndarray) -> None:
        """Move ``old``'s record to ``new``: a frame segmented again at a finer scale is
        scored with its first pass's uncertainty, the one the limits are calibrated on."""
        value = self.ledger.take(old)
        if value is not None:
            self.ledger.record(new, value)

    def assess(self, image: np.ndarray, class_map: np.ndarray,
               roi: Roi | None) -> DomainResult | None:
        """:func:`assess_domain` of a segmented frame (None when ``enabled`` is false)."""
        uncertain = self.ledger.take(class_map)
        if not self.config.enabled:
            return None
        return assess_domain(image, class_map, roi, config=self.config,
                             black_class=self.black_class, crystal_class=self.crystal_class,
                             uncertain=uncertain, roi_config=self.roi_config,
                             bit_depth=self.bit_depth)
