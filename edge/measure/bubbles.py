"""Air bubbles among the measured objects: round, a thick dark ring, a bright centre.

A gas bubble in the liquid is a strongly diverging lens. Light that meets it farther than
about ``n_gas / n_liquid`` (0.75 in water) of its radius from the axis is totally
reflected, so in transmitted light a bubble is a thick dark ring, from ~0.75 R to its
edge, around a centre that focuses light and is as bright as the background or brighter.
A crystal is denser than the liquid: its outline is a thin dark rim (edges and inclined
facets) and its centre transmits less than the background around it. The network, which
sees only a dark round outline, sometimes calls a large bubble a crystal; this test reads
the frame's brightness along the radius of each round object to tell the two apart.

With ``g`` the grey frame, ``R = sqrt(A / pi)`` the object's area-equivalent radius and
``b`` the median of ``g`` over the light background ``1.3 R <= r <= 1.8 R`` from its
centroid, the object is a bubble when

.. math::

    \\mathrm{circularity} \\ge c_{min}, \\quad
    \\frac{\\mathrm{median}_{r \\le 0.3 R}\\, g}{b} \\ge k_{core}, \\quad
    \\frac{\\mathrm{median}_{0.8 R \\le r \\le 0.95 R}\\, g}{b} \\le k_{ring}

(``[measure] bubble_circularity_min``, ``bubble_core_min``, ``bubble_ring_max``).
"""

from __future__ import annotations

import math

import numpy as np

#: Radii (in units of R) of the three zones of the test: centre, ring, background.
CORE_R = 0.3
RING_R = (0.8, 0.95)
BACKGROUND_R = (1.3, 1.8)
#: Fewest background pixels a ratio is computed from; fewer: the object is not judged.
MIN_BACKGROUND_PX = 10


def radial_contrast(grey: np.ndarray, background: np.ndarray, centroid: tuple[float, float],
                    radius_px: float) -> tuple[float, float] | None:
    """Brightness of an object's centre and of its outer ring relative to the background.

    Parameters
    ----------
    grey : ndarray, shape (H, W), uint8
        The frame's grey values at the scale of the mask the object was measured on.
    background : ndarray, shape (H, W), bool
        Light background (inside the field, not crystal).
    centroid : (x, y)
        The object's centroid (px).
    radius_px : float
        Its area-equivalent radius ``R`` (px).

    Returns
    -------
    (core, ring) or None
        ``median(g, r <= 0.3 R) / b`` and ``median(g, 0.8 R <= r <= 0.95 R) / b``, with
        ``b`` the median background grey value over ``1.3 R <= r <= 1.8 R``; None when
        that annulus holds fewer than :data:`MIN_BACKGROUND_PX` background pixels or ``b``
        is 0 (a black frame).
    """
    if grey.shape != background.shape:
        raise ValueError(f"grey frame of shape {grey.shape} does not match the background "
                         f"mask {background.shape}")
    h, w = grey.shape
    cx, cy = float(centroid[0]), float(centroid[1])
    reach = BACKGROUND_R[1] * radius_px
    x0, x1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, w)
    y0, y1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, h)
    if x1 <= x0 or y1 <= y0 or radius_px <= 0:
        return None
    yy, xx = np.ogrid[y0:y1, x0:x1]
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (radius_px * radius_px)
    g = grey[y0:y1, x0:x1]
    ring_bg = (r2 >= BACKGROUND_R[0] ** 2) & (r2 <= BACKGROUND_R[1] ** 2) \
        & background[y0:y1, x0:x1]
    if np.count_nonzero(ring_bg) < MIN_BACKGROUND_PX:
        return None
    b = float(np.median(g[ring_bg]))
    if b <= 0:
        return None
    core = g[r2 <= CORE_R ** 2]
    ring = g[(r2 >= RING_R[0] ** 2) & (r2 <= RING_R[1] ** 2)]
    if core.size == 0 or ring.size == 0:
        return None
    return float(np.median(core)) / b, float(np.median(ring)) / b


def air_bubbles(grey: np.ndarray, background: np.ndarray, centroids: np.ndarray,
                area_px: np.ndarray, circularity: np.ndarray, *, circularity_min: float,
                core_min: float, ring_max: float) -> np.ndarray:
    """Which objects are air bubbles (bool, shape (n,)); see the module's test.

    ``centroids`` (n, 2) x, y px, ``area_px`` and ``circularity`` (n,) are the measured
    columns of :class:`edge.measure.Crystals`; ``grey`` and ``background`` are at the
    same scale as the mask they were measured on. Only objects with circularity at least
    ``circularity_min`` are examined (the rest cost nothing).
    """
    n = len(area_px)
    out = np.zeros(n, bool)
    for i in np.flatnonzero(np.asarray(circularity) >= circularity_min):
        radius = math.sqrt(float(area_px[i]) / math.pi)
        ratios = radial_contrast(grey, background, (centroids[i][0], centroids[i][1]), radius)
        if ratios is not None:
            out[i] = ratios[0] >= core_min and ratios[1] <= ring_max
    return out
