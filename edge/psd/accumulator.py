"""One size distribution from many frames: which crystals count, their weights, the counts.

Every door that turns measured frames into a PSD (the batch of ``crystal-edge run``, the
report of ``crystal-edge analyze``, the model card of ``crystal-train evaluate``) goes
through :class:`PsdAccumulator`, so the same frames give the same numbers everywhere.

Per frame (:meth:`PsdAccumulator.add_frame` of a frame's result, :class:`MeasuredFrame`;
:meth:`PsdAccumulator.contribution` of its crystals):

* the kept crystals are the rows with ``reason == ""``; their area-equivalent diameters
  ``x_i`` enter the distribution;
* with edge correction on (``PsdConfig.edge_correction`` and border clearing on in the
  measurement: without ``clear_border`` no crystal was dropped for touching the border,
  so there is nothing to correct) each kept crystal gets the Miles-Lantuejoul number
  weight ``w_i = min(1 / P_i, w_max)``, ``P_i`` the probability that a crystal of its
  bounding-box extents ``(w, h)`` lies entirely inside the frame's ROI (or the
  rectangular frame), see :mod:`edge.psd.edge_correction`; ``w_max`` is
  ``PsdConfig.edge_weight_max``;
* rejected rows (and objects dropped while cleaning) are counted by reason; the
  diameters of rows rejected for a reason of :data:`edge.psd.AGGLOMERATE_REASONS` and
  the kept rows' shape columns are kept for the process values
  (:mod:`edge.psd.process`), as is each frame's ``domain_score`` when it has one.

Over all frames (:meth:`PsdAccumulator.result`) the diameters and weights are
concatenated and :func:`edge.psd.compute_psd` runs once: the volume fractions are
``q3_k = sum_{i in k} w_i x_i^3 / sum_i w_i x_i^3``; :func:`edge.psd.process_values`
computes the process values from the same crystals and weights.

The ROI's distance transform (:class:`~edge.psd.RoiSurvival`) is computed once per
distinct ROI mask (cached on the mask's content), since the illuminated field rarely
moves. This module reads frames and crystals through protocols (:class:`MeasuredFrame`,
:class:`CrystalTable`) and depends on nothing above :mod:`edge.psd`.
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.measure.crystals import AGGLOMERATE_REASONS
from edge.psd.config import PsdConfig
from edge.psd.edge_correction import RoiSurvival, edge_correction_weights
from edge.psd.process import SHAPE_COLUMNS, ProcessValues, process_values
from edge.psd.stats import PSDResult, compute_psd

#: Distinct ROI masks whose distance transforms are kept (oldest dropped first).
ROI_CACHE_SIZE = 8


class CrystalTable(Protocol):
    """What the accumulator reads of one frame's crystals (``edge.measure.Crystals``).

    The shape columns of :data:`edge.psd.process.SHAPE_COLUMNS` (``feret_max_um`` ...)
    are read when present (a table without them gives None for those process values).
    """

    diameter_um: np.ndarray
    bbox: np.ndarray
    reason: np.ndarray
    frame_shape: tuple[int, ...]

    def rejected_counts(self) -> Mapping[str, int]:
        """``{reason: n}`` of rejected rows and objects dropped while cleaning."""
        ...


class MeasuredFrame(Protocol):
    """What the accumulator reads of one frame's result (``edge.vision.result.FrameResult``).

    A frame with a ``reject_reason`` (or without crystals) is counted as rejected; a
    measured one adds its crystals, measured inside ``roi_mask`` (None = the whole frame).
    """

    @property
    def crystals(self) -> CrystalTable | None: ...

    @property
    def roi_mask(self) -> np.ndarray | None: ...

    @property
    def reject_reason(self) -> str | None: ...

    @property
    def domain_score(self) -> float | None: ...


@dataclass(frozen=True)
class FrameContribution:
    """What one frame adds to a distribution.

    Attributes
    ----------
    diameters_um : ndarray, shape (n_kept,)
        Area-equivalent diameters of the kept crystals.
    weights : ndarray, shape (n_kept,) or None
        Edge-correction weights; None when the correction does not apply.
    rejected_by_reason : dict
        ``{reason: n}`` of the frame's rejected crystals (reasons with ``n > 0`` only).
    shape : dict
        ``{column: (n_kept,)}`` of the kept crystals' shape columns (process values).
    agglomerate_diameters_um : ndarray, shape (n_agglomerates,)
        Diameters of the rows rejected as agglomerates.
    domain_score : float or None
        The frame's domain score (1 = looks like the training domain), when known.
    """

    diameters_um: np.ndarray
    weights: np.ndarray | None
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    shape: dict[str, np.ndarray] = field(default_factory=dict)
    agglomerate_diameters_um: np.ndarray = field(default_factory=lambda: np.zeros(0))
    domain_score: float | None = None


@dataclass(frozen=True)
class PsdSummary:
    """The distribution of everything added to a :class:`PsdAccumulator`, with counts.

    Attributes
    ----------
    psd : PSDResult
        :func:`edge.psd.compute_psd` of all kept crystals (weighted when corrected).
    diameters_um, weights : ndarray, shape (n_crystals,)
        The concatenated kept diameters and their number weights (ones when uncorrected).
    edge_correction : bool
        Whether the Miles-Lantuejoul weights were applied.
    frames_used : int
        Frames whose crystals were added.
    frames_rejected_by_reason : dict
        ``{reason: n}`` of frames rejected before measuring (quality gate, crowding, ...).
    crystals_rejected_by_reason : dict
        ``{reason: n}`` of rejected crystals over all used frames.
    process : ProcessValues
        Process values (:func:`edge.psd.process_values`) of the same crystals and frames.
    """

    psd: PSDResult
    diameters_um: np.ndarray
    weights: np.ndarray
    edge_correction: bool
    frames_used: int
    frames_rejected_by_reason: dict[str, int]
    crystals_rejected_by_reason: dict[str, int]
    process: ProcessValues = field(default_factory=ProcessValues)

    @property
    def n_crystals(self) -> int:
        """Kept crystals (rows of ``diameters_um``)."""
        return int(self.diameters_um.size)

    @property
    def frames_rejected(self) -> int:
        return int(sum(self.frames_rejected_by_reason.values()))


def kept_mask(crystals: CrystalTable) -> np.ndarray:
    """Boolean ``(n,)``: the rows that count in the distribution (``reason == ""``)."""
    return np.asarray(crystals.reason) == ""


def kept_edge_weights(crystals: CrystalTable, *, roi: np.ndarray | RoiSurvival | None = None,
                      max_weight: float = 20.0,
                      frame_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Miles-Lantuejoul weights of the kept crystals of one frame (bounding-box extents).

    Parameters
    ----------
    crystals : CrystalTable
        One frame's crystals: ``bbox`` ``(n, 4)`` as ``x, y, w, h`` px, ``reason`` ``(n,)``.
    roi : ndarray (H, W) or RoiSurvival, optional
        The ROI the crystals were measured in; None = the rectangular frame.
    max_weight : float
        Cap ``w_max`` (``PsdConfig.edge_weight_max``).
    frame_hw : (H, W), optional
        Frame size for the rectangle formula; default ``crystals.frame_shape[:2]``.

    Returns
    -------
    ndarray, shape (n_kept,)
        ``min(1 / P(w, h), w_max)`` per kept crystal.
    """
    kept = kept_mask(crystals)
    bbox = np.asarray(crystals.bbox, dtype=np.float64).reshape(-1, 4)
    if bbox.shape[0] != kept.shape[0]:
        raise ValueError(f"bbox of shape {np.shape(crystals.bbox)} does not match reason of "
                         f"shape {kept.shape}")
    hw = tuple(frame_hw) if frame_hw is not None else tuple(crystals.frame_shape[:2])
    bbox = bbox[kept]
    return edge_correction_weights(bbox[:, 2], bbox[:, 3], field_shape=hw, roi=roi,
                                   max_weight=max_weight)


class PsdAccumulator:
    """Collects frames into one size distribution (see the module docstring).

    Parameters
    ----------
    config : PsdConfig, optional
        Size classes, edge correction and its cap, bootstrap, fit.
    clear_border : bool
        Whether the measurement dropped border crystals (``MeasureConfig.clear_border``);
        the edge correction applies only then.

    Notes
    -----
    A door adds each frame's result with :meth:`add_frame`; the service computes
    :meth:`frame_contribution` in its post-processing threads and adds it in the
    aggregator's with :meth:`add_contribution`. :meth:`contribution` and
    :meth:`frame_contribution` touch only the ROI cache (guarded by a lock), so several
    threads may call them on one accumulator; the ``add*`` methods, :meth:`reset` and
    :meth:`result` belong to one thread.
    """

    def __init__(self, config: PsdConfig | None = None, *, clear_border: bool = True) -> None:
        self.config = config or PsdConfig()
        self.edge_correction = bool(self.config.edge_correction and clear_border)
        self._rois: dict[tuple[Any, ...], RoiSurvival] = {}
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every frame added (the ROI cache stays)."""
        self._diam: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._used = 0
        self._frames_rejected: Counter[str] = Counter()
        self._crystals_rejected: Counter[str] = Counter()
        self._shape: dict[str, list[np.ndarray]] = {k: [] for k in SHAPE_COLUMNS}
        self._agglomerates: list[np.ndarray] = []
        self._scores: list[float] = []

    # -- per frame --------------------------------------------------------------------
    def survival(self, roi: np.ndarray | RoiSurvival) -> RoiSurvival:
        """The :class:`RoiSurvival` of ``roi``, computed once per distinct mask content."""
        if isinstance(roi, RoiSurvival):
            return roi
        inside = np.ascontiguousarray(np.asarray(roi) != 0)
        key = (inside.shape, zlib.crc32(inside.view(np.uint8).data))
        with self._lock:
            surv = self._rois.get(key)
        if surv is None:
            surv = RoiSurvival(inside)
            with self._lock:
                if len(self._rois) >= ROI_CACHE_SIZE:
                    self._rois.pop(next(iter(self._rois)))
                self._rois[key] = surv
        return surv

    def weights(self, crystals: CrystalTable, *, roi: np.ndarray | RoiSurvival | None = None,
                frame_hw: tuple[int, int] | None = None) -> np.ndarray | None:
        """Edge-correction weights ``(n_kept,)`` of one frame, None when they do not apply."""
        if not self.edge_correction:
            return None
        surv = None if roi is None else self.survival(roi)
        return kept_edge_weights(crystals, roi=surv, max_weight=self.config.edge_weight_max,
                                 frame_hw=frame_hw)

    def contribution(self, crystals: CrystalTable, *,
                     roi: np.ndarray | RoiSurvival | None = None,
                     frame_hw: tuple[int, int] | None = None,
                     domain_score: float | None = None) -> FrameContribution:
        """What one measured frame adds (nothing is added yet; see :meth:`add`).

        Parameters
        ----------
        crystals : CrystalTable
            The frame's crystals (``edge.measure.Crystals``).
        roi : ndarray (H, W) or RoiSurvival, optional
            The region the crystals were measured in; None = the whole frame.
        frame_hw : (H, W), optional
            Frame size; default ``crystals.frame_shape[:2]``.
        domain_score : float, optional
            The frame's domain score, for the batch's ``confidence``.
        """
        kept = kept_mask(crystals)
        d = np.asarray(crystals.diameter_um, dtype=np.float64).reshape(-1)
        if d.shape != kept.shape:
            raise ValueError(f"diameter_um of shape {d.shape} does not match reason of "
                             f"shape {kept.shape}")
        rejected = {str(k): int(v) for k, v in crystals.rejected_counts().items() if int(v)}
        agglomerate = np.isin(np.asarray(crystals.reason), AGGLOMERATE_REASONS)
        return FrameContribution(diameters_um=d[kept],
                                 weights=self.weights(crystals, roi=roi, frame_hw=frame_hw),
                                 rejected_by_reason=rejected,
                                 shape=_shape_columns(crystals, kept),
                                 agglomerate_diameters_um=d[agglomerate],
                                 domain_score=domain_score)

    def frame_contribution(self, frame: MeasuredFrame) -> FrameContribution | None:
        """What one frame's result adds (:meth:`contribution` of its crystals in its ROI);
        None for a rejected frame. Nothing is added yet (see :meth:`add_frame`)."""
        if frame.reject_reason is not None or frame.crystals is None:
            return None
        return self.contribution(frame.crystals, roi=frame.roi_mask,
                                 domain_score=getattr(frame, "domain_score", None))

    # -- collecting -------------------------------------------------------------------
    def add_frame(self, frame: MeasuredFrame) -> FrameContribution | None:
        """Add one frame's result: its crystals, or a rejection by its reason.

        Returns the frame's :class:`FrameContribution` (None when it was rejected).
        """
        contrib = self.frame_contribution(frame)
        if contrib is None:
            self.add_rejection(frame.reject_reason or "no_result",
                               domain_score=getattr(frame, "domain_score", None))
        else:
            self.add_contribution(contrib)
        return contrib

    def add(self, crystals: CrystalTable, *, roi: np.ndarray | RoiSurvival | None = None,
            frame_hw: tuple[int, int] | None = None) -> FrameContribution:
        """Add one measured frame; returns its :class:`FrameContribution`."""
        contrib = self.contribution(crystals, roi=roi, frame_hw=frame_hw)
        self.add_contribution(contrib)
        return contrib

    def add_contribution(self, contrib: FrameContribution) -> None:
        """Add a frame whose contribution was computed elsewhere (another thread)."""
        d = np.asarray(contrib.diameters_um, dtype=np.float64).reshape(-1)
        if contrib.weights is None:
            w = np.ones_like(d)
        else:
            w = np.asarray(contrib.weights, dtype=np.float64).reshape(-1)
            if w.shape != d.shape:
                raise ValueError(f"weights of shape {w.shape} do not match diameters_um of "
                                 f"shape {d.shape}")
        self._used += 1
        self._diam.append(d)
        self._weights.append(w)
        self._crystals_rejected.update(contrib.rejected_by_reason)
        n = d.size
        for name, parts in self._shape.items():
            col = contrib.shape.get(name)
            parts.append(np.full(n, np.nan) if col is None else
                         np.asarray(col, dtype=np.float64).reshape(-1))
        self._agglomerates.append(np.asarray(contrib.agglomerate_diameters_um,
                                             dtype=np.float64).reshape(-1))
        self._score(contrib.domain_score)

    def add_rejection(self, reason: str, *, domain_score: float | None = None) -> None:
        """Count a frame rejected before measuring (its crystals do not count); a frame
        that was scored before its rejection adds its ``domain_score`` to the confidence."""
        self._frames_rejected[str(reason)] += 1
        self._score(domain_score)

    def _score(self, domain_score: float | None) -> None:
        if domain_score is not None:
            self._scores.append(float(domain_score))

    @property
    def frames_used(self) -> int:
        return self._used

    @property
    def n_frames(self) -> int:
        """Frames added, used and rejected."""
        return self._used + int(sum(self._frames_rejected.values()))

    # -- result -----------------------------------------------------------------------
    def result(self) -> PsdSummary:
        """:func:`edge.psd.compute_psd` of every kept crystal added, with the counts."""
        d = _concat(self._diam)
        w = _concat(self._weights)
        psd = compute_psd(d, weights=w if self.edge_correction else None, config=self.config)
        process = process_values(
            d, w, shape={k: _concat(v) for k, v in self._shape.items()},
            agglomerate_diameters_um=_concat(self._agglomerates), frames_used=self._used,
            frames_rejected_by_reason=self._frames_rejected, domain_scores=self._scores,
            fines_below_um=self.config.fines_below_um)
        return PsdSummary(psd=psd, diameters_um=d, weights=w,
                          edge_correction=self.edge_correction, frames_used=self._used,
                          frames_rejected_by_reason=dict(sorted(self._frames_rejected.items())),
                          crystals_rejected_by_reason=dict(
                              sorted(self._crystals_rejected.items())),
                          process=process)


def _shape_columns(crystals: CrystalTable, kept: np.ndarray) -> dict[str, np.ndarray]:
    """The kept rows of each shape column the table has."""
    out = {}
    for name in SHAPE_COLUMNS:
        col = getattr(crystals, name, None)
        if col is not None:
            col = np.asarray(col, dtype=np.float64).reshape(-1)
            if col.shape == kept.shape:
                out[name] = col[kept]
    return out


def _concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return np.concatenate(parts) if parts else np.zeros(0)
