"""Convexity of one digital crystal: solidity and the depths of its concavities.

A single crystal of any habit (needle, plate, prism, rhomb, compact) projects to a convex
outline; two or three crystals stuck together do not: their outline has concavities
where the parts meet. Both descriptors below are independent of the habit and of the
size:

* **Solidity** ``S = A / A_hull``: ``A`` the pixel count, ``A_hull`` the number of
  pixel centres inside or on the convex hull ``K`` of the object's pixel centres (Pick's
  theorem, :func:`hull_area`). The pixels of a digitised convex shape are exactly the
  pixel centres in ``K``, so ``S = 1`` for every single convex crystal whatever its
  size, habit or orientation (a needle 3 px wide included); a segmentation's ragged edge
  lowers it a little. An X of two crossing needles scores about 0.5, two discs
  overlapping by a fifth of their diameter about 0.93.
* **Concavity depths** ``d_k``: for each edge of the hull of the boundary chain, the
  largest distance of the chain between the edge's two vertices from the edge's line
  (OpenCV's convexity defects, computed here in numpy so that any chain works). On a
  convex digital shape every ``d_k`` is below about 1 px (the staircase); where two
  crystals meet, the two concavities on either side of the neck are a sizeable fraction
  of the object's area-equivalent diameter ``D = 2 sqrt(A / pi)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _pick_count(k: np.ndarray) -> float:
    """Lattice points inside or on a convex polygon ``k`` (M, 2) int32 with integer vertices."""
    if k.shape[0] < 2:
        return float(k.shape[0])
    d = np.abs(np.diff(k, axis=0, append=k[:1]))
    return cv2.contourArea(k) + float(np.gcd(d[:, 0], d[:, 1]).sum()) / 2 + 1


def hull_area(points: np.ndarray) -> float:
    """Pixel count of the digital convex hull of a pixel set given by its boundary pixels.

    The hull ``K`` of the pixel centres has integer vertices, so by Pick's theorem the
    number of pixel centres inside or on it is ``area(K) + B / 2 + 1``, with ``B`` the
    lattice points on its outline (``sum gcd(|dx|, |dy|)`` over its edges). Exact, and
    equal to the pixel count of every digitised convex shape.
    """
    p = np.asarray(points, np.int32).reshape(-1, 1, 2)
    if p.shape[0] == 0:
        return 0.0
    return _pick_count(cv2.convexHull(p).reshape(-1, 2))


def _hull_indices(c: np.ndarray) -> np.ndarray:
    """Chain indices of the convex hull's vertices, ascending."""
    return np.sort(cv2.convexHull(c, returnPoints=False).ravel())


def _depths(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per hull edge ``(idx[s], idx[s+1])``, the deepest chain point between (see
    :func:`concavity_depths`); the chain is rotated to start at the first hull vertex so
    that every edge spans one contiguous run."""
    n = c.shape[0]
    if idx.size < 2:
        return np.zeros(0)
    c = np.roll(c, -int(idx[0]), axis=0).astype(np.float64)
    idx = idx - idx[0]
    seg = np.searchsorted(idx, np.arange(n), side="right") - 1
    a = c[idx[seg]]
    b = c[idx[(seg + 1) % idx.size]]
    e = b - a
    d = c - a
    depth = np.abs(e[:, 0] * d[:, 1] - e[:, 1] * d[:, 0]) / np.maximum(np.hypot(e[:, 0], e[:, 1]),
                                                                      1e-12)
    per_edge = np.maximum.reduceat(depth, idx)
    return np.sort(per_edge[per_edge > 0])[::-1]


def concavity_depths(chain: np.ndarray) -> np.ndarray:
    """Depth (px) of the concavity behind each edge of the chain's convex hull, descending.

    Parameters
    ----------
    chain : ndarray, shape (N, 2) or (N, 1, 2)
        Closed chain of boundary pixel centres (x, y) in order, e.g. an outer contour
        from ``cv2.findContours(..., cv2.CHAIN_APPROX_NONE)``.

    Returns
    -------
    ndarray of float64
        One depth per hull edge that spans at least one chain point, largest first; for
        the edge from chain point ``i`` to ``j`` the depth is
        ``max_{i<m<j} |(c_j - c_i) x (c_m - c_i)| / |c_j - c_i|``.
    """
    c = np.ascontiguousarray(np.asarray(chain).reshape(-1, 2), dtype=np.int32)
    if c.shape[0] < 4:
        return np.zeros(0)
    return _defects(c, _hull_indices(c))


def _defects(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """OpenCV's convexity defects (its depth is the same maximum, in 1/256 px; ~20x faster
    than :func:`_depths`), or :func:`_depths` where OpenCV refuses the chain."""
    if idx.size < 3:
        return _depths(c, idx)
    try:
        found = cv2.convexityDefects(c.reshape(-1, 1, 2), idx.reshape(-1, 1).astype(np.int32))
    except cv2.error:  # e.g. "the convex hull indices are not monotonous"
        return _depths(c, idx)
    if found is None:
        return np.zeros(0)
    depth = found.reshape(-1, 4)[:, 3] / 256.0
    return np.sort(depth[depth > 0])[::-1]


def convexity(chain: np.ndarray, area_px: float) -> tuple[float, np.ndarray]:
    """``(solidity, concavity depths / D)`` of one crystal outline (see the module doc).

    ``chain`` holds the boundary pixel centres in order; ``D = 2 sqrt(area_px / pi)`` is
    the area-equivalent diameter in px; the relative depths are sorted descending.
    """
    c = np.ascontiguousarray(np.asarray(chain).reshape(-1, 2), dtype=np.int32)
    if area_px <= 0 or c.shape[0] == 0:
        return 0.0, np.zeros(0)
    idx = _hull_indices(c)
    solidity = min(1.0, float(area_px) / max(_pick_count(c[idx]), 1e-12))
    depths = _defects(c, idx) if c.shape[0] >= 4 else np.zeros(0)
    return solidity, depths / (2.0 * math.sqrt(float(area_px) / math.pi))
