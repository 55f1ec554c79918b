"""Thin crystals segmented finer: a second pass for frames whose crystals are a few
network pixels wide.

The network places a crystal's outline to a fraction of a pixel, and that error is a
share of the crystal's area that grows as the crystal gets thinner: an outline off by
:math:`e` pixels on both sides of a crystal :math:`w` pixels wide changes its area by
about :math:`2e / w`. Compact crystals are 25-45 pixels wide at the default model's
2.9 um/px; needles of 6-40 um are 2-14. Segmenting every frame finer does not help:
crystals larger at the network than the model was trained on are split and outlined
worse (generated frames at 1.5 times the auto scale: twins x50,3 -3.0 -> -6.4 %, dim
light crystal IoU 0.953 -> 0.920). So the analyzer segments each frame at its scale,
measures how wide the crystals it found are (:func:`crystal_width_px`) and segments the
frames whose crystals are thin once more at :func:`fine_scale`. On 36 generated needle
frames (aspect 3-10) crystal IoU goes 0.903 -> 0.923 and x50,3 -1.3 -> -1.5 % (second
set: 0.902 -> 0.922, -3.1 -> -1.7 %); no frame of the other domains is thin
(``models/README.md``).

``[model] thin_width_px`` (0: off) and ``thin_scale_factor`` configure it; it applies
with ``inference_scale = "auto"`` only, since an explicit scale is the user's choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the constants are read by the config, which loads without OpenCV
    import numpy as np

#: Area-weighted median crystal width (network px) under which a frame is segmented again.
THIN_WIDTH_PX = 12.0
#: The second pass's scale over the first's.
THIN_SCALE_FACTOR = 1.5
#: Crystal regions smaller than this (network px) are left out of the width.
MIN_REGION_PX = 20


def crystal_width_px(class_map: np.ndarray, *, crystal_class: int,
                     min_region_px: int = MIN_REGION_PX) -> float:
    r"""Area-weighted median width of the crystal regions of a class map, in its pixels.

    The width of a connected (8-neighbour) crystal region :math:`R` is twice its
    largest inscribed radius,

    .. math:: w_R = 2 \max_{p \in R} d(p),

    with :math:`d` the Euclidean distance of a crystal pixel to the nearest pixel that is
    not crystal (:func:`cv2.distanceTransform`; a region one pixel wide has
    :math:`w_R = 2`). The frame's width is the median of :math:`w_R` over the regions of
    at least ``min_region_px`` pixels, each weighted by its area: the width most crystal
    pixels lie in, so that a few small fragments beside large crystals do not decide.

    Parameters
    ----------
    class_map : np.ndarray
        ``(H, W)`` integer class map.
    crystal_class : int
        Class id of the crystals.
    min_region_px : int
        Smallest region counted.

    Returns
    -------
    float
        The width in pixels; ``inf`` when no region is large enough.
    """
    import cv2
    import numpy as np

    cm = np.asarray(class_map)
    if cm.ndim != 2:
        raise ValueError(f"expected an (H, W) class map, got shape {cm.shape}")
    crystal = (cm == crystal_class).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(crystal, connectivity=8)
    if n < 2:
        return float("inf")
    dist = cv2.distanceTransform(crystal, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, labels.ravel(), dist.ravel())
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    width = 2.0 * peak[1:].astype(np.float64)
    keep = area >= min_region_px
    if not keep.any():
        return float("inf")
    width, area = width[keep], area[keep]
    order = np.argsort(width, kind="stable")
    cum = np.cumsum(area[order])
    return float(width[order][np.searchsorted(cum, 0.5 * cum[-1])])


def fine_scale(scale: float, factor: float = THIN_SCALE_FACTOR) -> float | None:
    r"""Scale of the second pass for frames segmented at ``scale``, or None when there is
    none.

    .. math:: s_f = \min\left(f\,s,\; \max(s, 1)\right)

    The second pass never enlarges a frame more than the first did (enlarging
    interpolates, it adds no detail): frames already at or above their own resolution
    (:math:`s \ge 1`) have no finer pass, and :math:`s_f` is None when it is not finer
    than :math:`s` by at least 1 %.
    """
    if scale <= 0 or factor <= 0:
        raise ValueError(f"scale ({scale}) and factor ({factor}) must be > 0")
    fine = min(factor * scale, max(scale, 1.0))
    return fine if fine > 1.01 * scale else None
