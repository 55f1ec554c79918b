"""Crystal habits beyond the compact default: prisms, needles, plates, rhombs, twins, rounded.

Every outline is centred on its centroid and scaled so that its area is exactly
``pi (d_px / 2)^2`` (``d_px`` stays the true area-equivalent diameter). Single habits are
convex polygons; a twin is the union of two convex parts (returned as ``parts``) whose
outline is the union's boundary. The aspect ratio is that of the minimum-area rectangle
(length / width), drawn uniformly from the habit's range.

=========  ==========================================================  ==============
habit      outline                                                     aspect default
=========  ==========================================================  ==============
compact    :func:`trainer.synth.geometry.make_outline` (the default)   1 - aspect_max
prism      rectangle with pyramidal (pointed) or flat, bevelled ends   1.5 - 4
needle     the prism outline, long and thin                            3 - 10
plate      hexagonal or rectangular plate with truncated corners       1 - 1.6
rhomb      rhomb with slightly truncated acute corners                 1.3 - 2.5
twin       two prisms crossing (penetration twin) or meeting at one     2 - 5 (each)
           end (contact twin), 30-90 deg apart
rounded    a compact outline whose corners are worn to circular arcs   1 - aspect_max
=========  ==========================================================  ==============
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from trainer.synth.geometry import (
    inradius,
    make_outline,
    min_rect_aspect,
    polygon_area,
    polygon_centroid,
)

HABITS = ("compact", "prism", "needle", "plate", "rhomb", "twin", "rounded")
#: Aspect ratio range of each habit when ``SynthConfig.habit_aspect`` is not set.
HABIT_ASPECT: dict[str, tuple[float, float]] = {
    "prism": (1.5, 4.0), "needle": (3.0, 10.0), "plate": (1.0, 1.6),
    "rhomb": (1.3, 2.5), "twin": (2.0, 5.0),
}


def _rotate(pts: np.ndarray, th: float) -> np.ndarray:
    c, s = math.cos(th), math.sin(th)
    return pts @ np.array([[c, s], [-s, c]])


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _prism(rng: np.random.Generator, aspect: float) -> np.ndarray:
    """A prism's projection of width 2 and length ``2 * aspect`` along x (unit scale).

    Each end is pointed (a pyramid tip 0.4-1.2 half-widths long) or flat with bevelled
    corners, chosen independently.
    """
    a = aspect
    pts: list[tuple[float, float]] = []
    for sign in (1.0, -1.0):
        if rng.random() < 0.6:
            t = min(float(rng.uniform(0.4, 1.2)), 0.35 * a)
            end = [(sign * (a - t), sign * 1.0), (sign * a, 0.0), (sign * (a - t), -sign * 1.0)]
        else:
            b = float(rng.uniform(0.05, 0.3))
            end = [(sign * (a - b), sign * 1.0), (sign * a, sign * (1 - b)),
                   (sign * a, -sign * (1 - b)), (sign * (a - b), -sign * 1.0)]
        pts.extend(end)
    return _stretch_to(np.array(pts, np.float64), aspect)


def _plate(rng: np.random.Generator, aspect: float) -> np.ndarray:
    if rng.random() < 0.6:  # hexagonal plate
        ang = np.arange(6) * math.pi / 3 + rng.uniform(-0.05, 0.05, 6)
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * (1 + rng.normal(0, 0.03, (6, 1)))
    else:  # rectangular plate with truncated corners
        f = float(rng.uniform(0.05, 0.25))
        pts = np.array([[1, 1 - f], [1 - f, 1], [-1 + f, 1], [-1, 1 - f],
                        [-1, -1 + f], [-1 + f, -1], [1 - f, -1], [1, -1 + f]], np.float64)
    return _stretch_to(pts, aspect)


def _rhomb(rng: np.random.Generator, aspect: float) -> np.ndarray:
    f = float(rng.uniform(0.0, 0.12))  # truncated acute corners
    pts = np.array([[1 - f, f], [0, 1], [-1 + f, f], [-1 + f, -f], [0, -1], [1 - f, -f]])
    return _stretch_to(pts, aspect)


def _stretch_to(pts: np.ndarray, aspect: float) -> np.ndarray:
    """Stretch ``pts`` along its long axis until its minimum-rectangle aspect is ``aspect``
    (area-preserving; a few iterations, since the rectangle may turn while stretching)."""
    for _ in range(8):
        (_, _), (rw, rh), ang = cv2.minAreaRect(pts.astype(np.float32))
        cur = max(rw, rh) / max(min(rw, rh), 1e-9)
        if abs(cur / aspect - 1) < 1e-3:
            break
        th = math.radians(ang) + (0.0 if rw >= rh else math.pi / 2)
        u = np.array([math.cos(th), math.sin(th)])
        v = np.array([-u[1], u[0]])
        k = math.sqrt(aspect / cur)
        pts = np.outer(pts @ u * k, u) + np.outer(pts @ v / k, v)
    return pts


def _rounded(rng: np.random.Generator, aspect_max: float) -> np.ndarray:
    """A compact outline with its corners worn to arcs of 15-45 % of the inradius."""
    base, _shape, _aspect = make_outline(rng, 2.0, aspect_max=aspect_max)
    c = polygon_centroid(base)
    r_in = inradius(base, c)
    rho = float(rng.uniform(0.15, 0.45)) * r_in
    inner = c + (base - c) * (1 - rho / r_in)
    t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    circle = rho * np.stack([np.cos(t), np.sin(t)], 1)
    return _hull((inner[:, None, :] + circle[None]).reshape(-1, 2))


def union_outline(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boundary of the union of two overlapping convex polygons, counter-clockwise.

    The union is star-shaped about any point of the intersection, so its vertices (each
    polygon's vertices outside the other, and the crossings of their edges) are ordered
    by angle about the intersection's centroid.
    """
    area, inter = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    if inter is None or area <= 0:
        raise ValueError("union_outline: the parts do not overlap")
    o = polygon_centroid(inter.reshape(-1, 2).astype(np.float64))
    pts = [p for p in a if not _inside(b, p)] + [p for p in b if not _inside(a, p)]
    for p, q in zip(a, np.roll(a, -1, 0), strict=True):
        for r, s in zip(b, np.roll(b, -1, 0), strict=True):
            x = _cross_point(p, q, r, s)
            if x is not None:
                pts.append(x)
    v = np.array(pts, np.float64)
    order = np.argsort(np.arctan2(v[:, 1] - o[1], v[:, 0] - o[0]), kind="stable")
    return v[order]


def _inside(poly: np.ndarray, p: np.ndarray) -> bool:
    return cv2.pointPolygonTest(poly.astype(np.float32), (float(p[0]), float(p[1])), False) > 0


def _cross_point(p, q, r, s) -> np.ndarray | None:
    d1, d2 = q - p, s - r
    den = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(den) < 1e-12:
        return None
    w = r - p
    t = (w[0] * d2[1] - w[1] * d2[0]) / den
    u = (w[0] * d1[1] - w[1] * d1[0]) / den
    if 0 <= t <= 1 and 0 <= u <= 1:
        return p + t * d1
    return None


def _twin(rng: np.random.Generator, aspect: float) -> list[np.ndarray]:
    """Two prisms: crossing at their centres, or meeting at one end (contact twin)."""
    a = _prism(rng, aspect)
    b = _rotate(_prism(rng, aspect * float(rng.uniform(0.7, 1.0))),
                float(rng.uniform(math.pi / 6, math.pi / 2)) * rng.choice([-1.0, 1.0]))
    if rng.random() < 0.5:  # contact twin: b's end overlaps a's end by one half-width
        u_a = np.array([1.0, 0.0])
        tip_b = b[np.argmax(b @ np.array([-1.0, 0.0]))]
        b = b + (aspect - 0.5) * u_a - tip_b - 0.5 * u_a
    return [a, b]


def habit_outline(rng: np.random.Generator, d_px: float, habit: str, *,
                  aspect: tuple[float, float] | None = None, aspect_max: float = 1.6
                  ) -> tuple[np.ndarray, list[np.ndarray] | None, str, float]:
    """Outline of one crystal of ``habit``, area ``pi (d_px / 2)^2``, centred and rotated.

    Parameters
    ----------
    rng : numpy.random.Generator
    d_px : float
        Area-equivalent diameter (px).
    habit : str
        One of :data:`HABITS` (``compact`` is :func:`make_outline`).
    aspect : (float, float), optional
        Aspect-ratio range (default :data:`HABIT_ASPECT`).
    aspect_max : float
        Largest aspect of ``compact`` and ``rounded`` outlines.

    Returns
    -------
    (outline (N, 2), parts or None, shape name, aspect ratio of the minimum rectangle)
        ``parts`` holds the convex parts of a twin (same frame as ``outline``).
    """
    if habit == "compact":
        poly, shape, asp = make_outline(rng, d_px, aspect_max=aspect_max)
        return poly, None, shape, asp
    lo, hi = aspect or HABIT_ASPECT.get(habit, (1.0, aspect_max))
    k = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    parts: list[np.ndarray] | None = None
    if habit in ("prism", "needle"):
        poly = _prism(rng, k)
    elif habit == "plate":
        poly = _plate(rng, k)
    elif habit == "rhomb":
        poly = _rhomb(rng, k)
    elif habit == "twin":
        parts = _twin(rng, k)
        poly = union_outline(*parts)
    elif habit == "rounded":
        poly = _rounded(rng, aspect_max)
    else:
        raise ValueError(f"unknown habit {habit!r}; choose from {HABITS}")
    th = float(rng.uniform(0, 2 * math.pi))
    poly = _rotate(poly, th)
    parts = None if parts is None else [_rotate(p, th) for p in parts]
    c = polygon_centroid(poly)
    scale = math.sqrt(math.pi * (d_px / 2) ** 2 / polygon_area(poly))
    poly = (poly - c) * scale
    parts = None if parts is None else [(p - c) * scale for p in parts]
    return poly, parts, habit, min_rect_aspect(poly)
