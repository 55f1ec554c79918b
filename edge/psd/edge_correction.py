"""Edge (border) correction of a size distribution: Miles-Lantuejoul weights.

Crystals that touch the field border are dropped because they are cut. A large crystal
touches the border more often than a small one, so the kept sample is biased towards
small crystals. A crystal whose reference point is uniformly distributed survives with
probability ``P`` = (area of the positions where it fits entirely inside the field) /
(field area); weighting each kept crystal by ``1 / P`` removes the bias
(Miles 1974, Lantuejoul 1978).

Rectangular frame ``W x H`` and a crystal with extents ``w x h`` (px):
``P = max(W - w, 0) * max(H - h, 0) / (W * H)`` - exact for any convex crystal, since it
fits an axis-aligned rectangle exactly when its bounding box does.

Arbitrary region of interest (e.g. the illuminated circular field): ``P`` = area of the
ROI eroded by the crystal / ROI area. The kept crystals are nearly round (circularity
0.85-0.95), so the crystal is taken as a disc of diameter ``(w + h) / 2``; erosion by a
disc of radius ``r`` is the set of ROI pixels whose Euclidean distance to the outside
exceeds ``r``. One distance transform per ROI (:class:`RoiSurvival`) turns every
later crystal into a binary search - no per-size erosions. (A bounding-box erosion would
over-correct round crystals in a circular field, whose box corners leave the circle
before the crystal does.) The image frame bounds the ROI too.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _extents(w_px: np.ndarray | Sequence[float], h_px: np.ndarray | Sequence[float],
             ) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w_px, dtype=np.float64)
    h = np.asarray(h_px, dtype=np.float64)
    if w.shape != h.shape or w.ndim != 1:
        raise ValueError(f"w_px of shape {w.shape} and h_px of shape {h.shape} must be equal 1-D")
    if w.size and (not np.all(np.isfinite(w)) or not np.all(np.isfinite(h))
                   or w.min() < 0 or h.min() < 0):
        raise ValueError("w_px and h_px must be finite and >= 0")
    return w, h


class RoiSurvival:
    """Survival probability of a disc-like crystal inside an arbitrary ROI mask.

    Parameters
    ----------
    roi : ndarray, shape (H, W)
        Non-zero inside the region where crystals are measured.
    """

    def __init__(self, roi: np.ndarray) -> None:
        roi = np.asarray(roi)
        if roi.ndim != 2 or min(roi.shape) < 1:
            raise ValueError(f"roi must be a 2-D mask, got shape {roi.shape}")
        inside = (roi != 0).astype(np.uint8)
        area = int(inside.sum())
        if area == 0:
            raise ValueError(f"roi of shape {roi.shape} is empty")
        padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        # sqrt(integer) up to 1 ulp that depends on the buffer's alignment: made exact, so
        # the same ROI always gives the same weights
        raw = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
        dist = np.sqrt(np.rint(raw * raw))
        self.shape: tuple[int, int] = (int(roi.shape[0]), int(roi.shape[1]))
        self.area: int = area
        self._dist_sorted = np.sort(dist[1:-1, 1:-1][inside.astype(bool)].astype(np.float64))

    def probability(self, w_px: np.ndarray | Sequence[float],
                    h_px: np.ndarray | Sequence[float]) -> np.ndarray:
        """Probability that a crystal of extents ``w x h`` px lies inside the ROI.

        The crystal is a disc of radius ``r = (w + h) / 4``; its centre pixel must be
        farther than ``r + 0.5`` px from the outside (the half pixel makes a full-frame ROI
        agree with the rectangle formula).
        """
        w, h = _extents(w_px, h_px)
        r = (w + h) / 4.0 + 0.5
        idx = np.searchsorted(self._dist_sorted, r, side="right")
        return (self._dist_sorted.size - idx) / float(self.area)


def survival_probability(w_px: np.ndarray | Sequence[float],
                         h_px: np.ndarray | Sequence[float], *,
                         field_shape: tuple[int, int] | None = None,
                         roi: np.ndarray | RoiSurvival | None = None) -> np.ndarray:
    """Probability that a crystal of extents ``w x h`` px escapes border clearing.

    Parameters
    ----------
    w_px, h_px : array_like, shape (N,)
        Crystal extents (bounding box or Feret extents along x and y) in px.
    field_shape : (H, W), optional
        Rectangular frame; used when ``roi`` is None.
    roi : ndarray (H, W) or RoiSurvival, optional
        Region of interest; pass a :class:`RoiSurvival` to reuse it for many frames.

    Returns
    -------
    ndarray, shape (N,)
        Probabilities in [0, 1].
    """
    if roi is not None:
        surv = roi if isinstance(roi, RoiSurvival) else RoiSurvival(roi)
        return surv.probability(w_px, h_px)
    if field_shape is None or len(field_shape) < 2:
        raise ValueError(f"field_shape (H, W) is required without an roi, got {field_shape}")
    fh, fw = float(field_shape[0]), float(field_shape[1])
    if fh <= 0 or fw <= 0:
        raise ValueError(f"field_shape must be positive, got {tuple(field_shape)}")
    w, h = _extents(w_px, h_px)
    return np.clip(fw - w, 0, None) * np.clip(fh - h, 0, None) / (fw * fh)


def edge_correction_weights(w_px: np.ndarray | Sequence[float],
                            h_px: np.ndarray | Sequence[float], *,
                            field_shape: tuple[int, int] | None = None,
                            roi: np.ndarray | RoiSurvival | None = None,
                            max_weight: float = 20.0) -> np.ndarray:
    """Miles-Lantuejoul number weights ``1 / P`` of kept crystals, capped at ``max_weight``.

    Parameters
    ----------
    w_px, h_px : array_like, shape (N,)
        Crystal extents in px.
    field_shape : (H, W), optional
        Rectangular frame (when ``roi`` is None).
    roi : ndarray (H, W) or RoiSurvival, optional
        Region of interest instead of the full frame.
    max_weight : float
        Cap for crystals that barely fit (``P`` near 0).

    Returns
    -------
    ndarray, shape (N,)
        Weights >= 1 to pass to :func:`edge.psd.compute_psd`.
    """
    if max_weight < 1:
        raise ValueError(f"max_weight must be >= 1, got {max_weight}")
    p = survival_probability(w_px, h_px, field_shape=field_shape, roi=roi)
    return 1.0 / np.maximum(p, 1.0 / max_weight)
