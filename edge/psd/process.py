"""Process values beside the size distribution: what a crystallisation engineer trends.

:func:`process_values` turns what :class:`edge.psd.PsdAccumulator` collected (kept
crystals with their number weights and shape columns, the agglomerates' diameters, the
frame counts and domain scores) into a :class:`ProcessValues`, the ``process`` object of
the ``psd`` payload and of the analyze report. With kept crystals ``i`` (area-equivalent
diameter ``x_i``, number weight ``w_i``, 1 without edge correction):

* ``crystals_per_frame`` = kept crystals / used frames (a nucleation / concentration
  signal; raw counts, no weights);
* ``agglomerate_fraction_number`` = ``n_a / (n_a + n_k)`` and
  ``agglomerate_fraction_volume`` = ``sum x_a^3 / (sum x_a^3 + sum x_k^3)`` over the
  objects rejected for a reason of :data:`edge.measure.AGGLOMERATE_REASONS` (``a``) and the kept
  crystals (``k``); raw counts, since agglomerates carry no edge weight;
* ``x50_feret_max_um``, ``x50_feret_min_um``, ``median_aspect_ratio``,
  ``median_circularity``: number-weighted medians (weights ``w_i``, the midpoint rule of
  :mod:`edge.psd.quantiles`) of the kept crystals' columns; Feret max / min are length
  and width of elongated habits;
* ``fines_fraction_number`` = ``sum_{x_i < f} w_i / sum w_i`` and
  ``fines_fraction_volume`` = ``sum_{x_i < f} w_i x_i^3 / sum w_i x_i^3`` with
  ``f = PsdConfig.fines_below_um`` (the same weights as Q0 / Q3);
* ``frames_rejected_by_reason``: every key of :data:`FRAME_REJECT_REASONS`, zeros
  included, so the set of DCS tags never changes;
* ``confidence``: the mean ``domain_score`` (1 = looks like the training domain, 0 = does
  not) over the analysed frames that carry one; None when none does.

Every value is None when it has no data (no crystal, no used frame).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.psd.quantiles import weighted_quantile_sorted

#: The closed list of frame rejection reasons: reason -> meaning. Any other reason a
#: stage reports is counted as ``other``, so payloads always carry exactly these keys.
FRAME_REJECT_REASONS: dict[str, str] = {
    "unreadable": "the file or frame could not be read or decoded",
    "blank": "no contrast: the grey standard deviation is below [quality] blank_std",
    "no_field": "no illuminated field found",
    "underexposed": "the illuminated field is too dark",
    "overexposed": "too many saturated pixels",
    "defocused": "the field is out of focus (sharpness below its limit)",
    "crowded": "crystals cover too much of the field to be measured apart",
    "bad_shape": "the frame size differs from the size in use or is too small for the model",
    "out_of_domain": "the frame does not look like the images the model was trained on",
    "bad_mask": "a mask file (analyze --masks) that cannot be measured",
    "quality_error": "the quality gate failed on the frame (an internal error, logged)",
    "inference_error": "segmentation failed on the frame (an internal error, logged)",
    "postprocess_error": "measuring the frame failed (an internal error, logged)",
    "other": "any other reason (logged with the frame)",
}


#: Per-crystal shape columns the medians are taken of (``edge.measure.Crystals`` names).
SHAPE_COLUMNS: tuple[str, ...] = ("feret_max_um", "feret_min_um", "aspect_ratio", "circularity")


def frame_reject_key(reason: str) -> str:
    """``reason`` when it is one of :data:`FRAME_REJECT_REASONS`, else ``"other"``."""
    return reason if reason in FRAME_REJECT_REASONS else "other"


def frames_rejected_closed(by_reason: Mapping[str, int]) -> dict[str, int]:
    """``by_reason`` on the closed list: every key of :data:`FRAME_REJECT_REASONS`."""
    out = dict.fromkeys(FRAME_REJECT_REASONS, 0)
    for reason, n in by_reason.items():
        out[frame_reject_key(str(reason))] += int(n)
    return out


@dataclass(frozen=True)
class ProcessValues:
    """Process values of one batch or report (see the module docstring for the maths)."""

    crystals_per_frame: float | None = None
    agglomerate_fraction_number: float | None = None
    agglomerate_fraction_volume: float | None = None
    x50_feret_max_um: float | None = None
    x50_feret_min_um: float | None = None
    median_aspect_ratio: float | None = None
    median_circularity: float | None = None
    fines_below_um: float = 20.0
    fines_fraction_number: float | None = None
    fines_fraction_volume: float | None = None
    frames_rejected_by_reason: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FRAME_REJECT_REASONS, 0))
    confidence: float | None = None

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict (``confidence`` stays out: it is a top-level field)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__
               if k not in ("frames_rejected_by_reason", "confidence")}
        out["frames_rejected_by_reason"] = dict(self.frames_rejected_by_reason)
        return out


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _median(values: np.ndarray, weights: np.ndarray) -> float | None:
    """Number-weighted median of the finite ``values`` (None without any)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != weights.shape:
        return None
    ok = np.isfinite(v) & (weights > 0)
    if not ok.any():
        return None
    order = np.argsort(v[ok], kind="stable")
    q = float(weighted_quantile_sorted(v[ok][order], weights[ok][order], 0.5))
    return q if math.isfinite(q) else None


def process_values(diameters_um: np.ndarray, weights: np.ndarray, *,
                   shape: Mapping[str, np.ndarray] | None = None,
                   agglomerate_diameters_um: np.ndarray | None = None,
                   frames_used: int = 0,
                   frames_rejected_by_reason: Mapping[str, int] | None = None,
                   domain_scores: Sequence[float] = (),
                   fines_below_um: float = 20.0) -> ProcessValues:
    """The :class:`ProcessValues` of kept crystals and frame counts.

    Parameters
    ----------
    diameters_um, weights : ndarray, shape (N,)
        Kept crystals' area-equivalent diameters and number weights (ones uncorrected).
    shape : mapping, optional
        Columns of :data:`SHAPE_COLUMNS`, each ``(N,)``, of the kept crystals; a missing
        column gives None.
    agglomerate_diameters_um : ndarray, shape (M,), optional
        Diameters of the objects rejected as agglomerates.
    frames_used : int
        Frames whose crystals were counted.
    frames_rejected_by_reason : mapping, optional
        ``{reason: n}`` of rejected frames (mapped onto :data:`FRAME_REJECT_REASONS`).
    domain_scores : sequence of float
        Domain scores of the analysed frames that carry one.
    fines_below_um : float
        Fines limit ``f`` (``PsdConfig.fines_below_um``).
    """
    d = np.asarray(diameters_um, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    agg = np.zeros(0) if agglomerate_diameters_um is None else np.asarray(
        agglomerate_diameters_um, dtype=np.float64).reshape(-1)
    cols = shape or {}
    v3 = w * d ** 3
    fine = d < fines_below_um
    scores = [float(s) for s in domain_scores if s is not None and math.isfinite(float(s))]
    return ProcessValues(
        crystals_per_frame=_ratio(d.size, frames_used),
        agglomerate_fraction_number=_ratio(agg.size, agg.size + d.size),
        agglomerate_fraction_volume=_ratio(float((agg ** 3).sum()),
                                           float((agg ** 3).sum() + (d ** 3).sum())),
        x50_feret_max_um=_median(cols.get("feret_max_um", np.zeros(0)), w),
        x50_feret_min_um=_median(cols.get("feret_min_um", np.zeros(0)), w),
        median_aspect_ratio=_median(cols.get("aspect_ratio", np.zeros(0)), w),
        median_circularity=_median(cols.get("circularity", np.zeros(0)), w),
        fines_below_um=float(fines_below_um),
        fines_fraction_number=_ratio(float(w[fine].sum()), float(w.sum())),
        fines_fraction_volume=_ratio(float(v3[fine].sum()), float(v3.sum())),
        frames_rejected_by_reason=frames_rejected_closed(frames_rejected_by_reason or {}),
        confidence=float(np.mean(scores)) if scores else None,
    )
